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

    A step of a vector field that switches inside it is made of pieces, each with its
    own polynomial (see [`taylorode.Taylor`][]); the interpolation then evaluates the
    piece that holds $t$.

    **Arguments:**

    - `t0`, `t1`: the ends of the step.
    - `coeffs`: a PyTree shaped like the state whose leaves have a leading axis of
        length $p + 1$: the scaled coefficients $c_0, \ldots, c_p$. For a step in
        pieces, a further leading axis, one entry per piece, each piece's coefficients
        scaled to the rest of the step from its start.
    - `starts`: for a step in pieces, where each piece starts, as a fraction of the
        step ($0$ first, $\infty$ for pieces not used); `None` otherwise.
    """

    t0: Array
    t1: Array
    coeffs: PyTree[Shaped[Array, "?pieces order_plus_one ?*dims"]]
    starts: Array | None = None

    def _local(self, t):
        """The piece holding `t` (`None` without pieces) and the variable of its
        polynomial, with the factor d(variable)/dt relative to 1/(t1 - t0)."""
        s = _rescale(self.t0, t, self.t1)
        if self.starts is None:
            return None, s, jnp.ones_like(s)
        starts = self.starts.astype(s.dtype)
        k = jnp.maximum(jnp.sum(starts <= s) - 1, 0)
        a = starts[k]
        length = jnp.where(a < 1, 1 - a, 1)
        return k, (s - a) / length, 1 / length

    def evaluate(self, t0, t1=None, left: bool = True) -> PyTree[Array]:
        del left
        if t1 is not None:
            return jtu.tree_map(
                lambda a, b: a - b, self.evaluate(t1), self.evaluate(t0)
            )
        k, u, _ = self._local(t0)
        return jtu.tree_map(
            lambda c: horner(unstack(c if k is None else c[k]), u.astype(c.dtype)), self.coeffs
        )

    def derivative(self, t, left: bool = True) -> PyTree[Array]:
        del left
        k, u, rate = self._local(t)
        h = self.t1 - self.t0
        inv_h = jnp.where(h == 0, 0.0, 1 / jnp.where(h == 0, 1.0, h)) * rate
        return jtu.tree_map(
            lambda c: horner_derivative(unstack(c if k is None else c[k]), u.astype(c.dtype))
            * inv_h.astype(c.dtype),
            self.coeffs,
        )
