import gc

import jax
import pytest


# The suite's processes hold many long-lived objects (traced and compiled programs), and
# Python's default collection thresholds made garbage collection about 7 % of a test
# file's time (measured on test_order_control.py: 4.5 s in 2917 collections, 1.7 s in 26
# with these thresholds). Reference cycles are still collected, less often.
gc.set_threshold(50_000, 20, 20)


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def getkey():
    key = jax.random.PRNGKey(5678)

    def _getkey():
        nonlocal key
        key, subkey = jax.random.split(key)
        return subkey

    return _getkey
