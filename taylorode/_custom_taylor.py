import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp


# Registered Taylor rules, by the unique name of the wrapped primal function. The
# recurrence engine finds a `custom_jvp_call` equation's rule through the name that JAX
# records in the equation's `call_jaxpr.debug_info.func_name`.
CUSTOM_RULES: dict[str, Callable] = {}
_counter = itertools.count()


class custom_taylor:
    """Give a function its own Taylor-mode rule: the counterpart of `jax.custom_jvp`
    for Taylor coefficients.

    Decorate the primal function, then register a rule with `def_taylor`. The rule is
    called once per order `k >= 1` as `rule(k, inputs, output)`, where

    - `inputs` is a tuple with one series per argument: a list of normalised Taylor
        coefficients `[x_0, ..., x_k]` (arguments that do not depend on the expansion
        variables arrive as `[x_0, 0, ..., 0]`);
    - `output` is the series of the result so far, `[y_0, ..., y_{k-1}]`;

    and returns the order-`k` coefficient `y_k`, an array shaped like `y_0`. Helpers for
    the usual recurrences (Cauchy products, quotients, powers, `y' = u x'`) are in
    [`taylorode.series`][].

    The decorated function is a `jax.custom_jvp`: under `jax.jvp`, `jax.grad` and
    `jax.vmap` it uses the JVP defined with `defjvp`, or, if none is given, the Taylor
    rule at order 1 (which *is* the JVP: `y_1 = rule(1, ([x, dx],), [y])`). Inside a
    vector field solved with `method="recurrence"` the Taylor rule is used at every
    order; `method="jvp"` uses the JVP; `method="jet"` cannot expand custom-derivative
    functions.

    !!! Example

        ```python
        @taylorode.custom_taylor
        def cube(x):
            return x * x * x

        @cube.def_taylor
        def _(k, inputs, output):
            (x,) = inputs
            x2 = [taylorode.series.cauchy(x, x, j) for j in range(k + 1)]
            return taylorode.series.cauchy(x2, x, k)
        ```

    Only functions of positional array arguments with a single array output are
    supported.
    """

    def __init__(self, fun: Callable):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.key = f"{getattr(fun, '__name__', 'fun')}_taylorode{next(_counter)}"

        def primal(*args):
            return fun(*args)

        primal.__name__ = primal.__qualname__ = self.key
        self._custom_jvp = jax.custom_jvp(primal)
        self._custom_jvp.defjvp(self._jvp_from_rule)

    def def_taylor(self, rule: Callable) -> Callable:
        """Register the Taylor rule `rule(k, inputs, output) -> y_k`."""
        CUSTOM_RULES[self.key] = rule
        return rule

    def defjvp(self, jvp: Callable) -> Callable:
        """Override the JVP (same signature as `jax.custom_jvp.defjvp`)."""
        self._custom_jvp = jax.custom_jvp(self._custom_jvp.fun)
        self._custom_jvp.defjvp(jvp)
        return jvp

    def _jvp_from_rule(self, primals, tangents):
        rule = CUSTOM_RULES.get(self.key)
        if rule is None:
            raise TypeError(
                f"{self.fun.__name__} is a taylorode.custom_taylor function without a "
                "Taylor rule or JVP: register one with @f.def_taylor (or f.defjvp)."
            )
        out = self._custom_jvp(*primals)
        series = tuple([jnp.asarray(p), jnp.asarray(t)] for p, t in zip(primals, tangents))
        return out, rule(1, series, [out])

    def __call__(self, *args):
        return self._custom_jvp(*args)
