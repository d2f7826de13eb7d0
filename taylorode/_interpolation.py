import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax import AbstractLocalInterpolation
from jaxtyping import Array, PyTree, Shaped

from ._polynomial import horner, horner_derivative, unstack


def _rescale(t0, t, t1):
    """s = (t - t0) / (t1 - t0), safe (and 0) on a zero-length interval."""
    empty = t1 == t0
    return jnp.where(empty, 0.0, (t - t0) / jnp.where(empty, 1.0, t1 - t0))


class TaylorInterpolation(AbstractLocalInterpolation):
    r"""Dense output of a Taylor step: the step's own Taylor polynomial.

    A Taylor step of order $p$ over $[t_0, t_1]$ computes the coefficients
    $c_k = y^{[k]} h^k$ of $y(t_0 + s h) \approx \sum_{k=0}^{p} c_k s^k$ with
    $h = t_1 - t_0$. Evaluating that polynomial at $s = (t - t_0)/h$ gives output
    of the full order $p$ anywhere in the step, at no extra vector-field
    evaluations. Used automatically by [`taylorode.Taylor`][] for `SaveAt(ts=...)`,
    `SaveAt(dense=True)` and `diffrax.Event`.

    **Arguments:**

    - `t0`, `t1`: the ends of the step.
    - `coeffs`: a PyTree shaped like the state whose leaves have a leading axis of
        length $p + 1$: the scaled coefficients $c_0, \ldots, c_p$.
    """

    t0: Array
    t1: Array
    coeffs: PyTree[Shaped[Array, "order_plus_one ?*dims"]]

    def evaluate(self, t0, t1=None, left: bool = True) -> PyTree[Array]:
        del left
        if t1 is not None:
            return jtu.tree_map(
                lambda a, b: a - b, self.evaluate(t1), self.evaluate(t0)
            )
        s = _rescale(self.t0, t0, self.t1)
        return jtu.tree_map(
            lambda c: horner(unstack(c), s.astype(c.dtype)), self.coeffs
        )

    def derivative(self, t, left: bool = True) -> PyTree[Array]:
        del left
        s = _rescale(self.t0, t, self.t1)
        h = self.t1 - self.t0
        inv_h = jnp.where(h == 0, 0.0, 1 / jnp.where(h == 0, 1.0, h))
        return jtu.tree_map(
            lambda c: horner_derivative(unstack(c), s.astype(c.dtype))
            * inv_h.astype(c.dtype),
            self.coeffs,
        )
