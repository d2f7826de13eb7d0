"""Evaluating truncated Taylor series in the normalised step variable s = (t - t0)/h."""

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


def horner(coeffs: list[Array], s) -> Array:
    """`sum_k coeffs[k] * s**k` by Horner's rule, highest order first.

    At `s = 1` this is the sum of the terms from the smallest up, which is also the
    most accurate order of summation for a convergent Taylor series.
    """
    acc = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = acc * s + c
    return acc


def sum_series(coeffs: list[Array]) -> Array:
    """`horner(coeffs, 1)` without the multiplications: the series summed at s = 1,
    smallest terms first."""
    acc = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = acc + c
    return acc


def horner_derivative(coeffs: list[Array], s) -> Array:
    """`sum_k k * coeffs[k] * s**(k-1)`: the derivative of `horner` with respect to s."""
    n = len(coeffs) - 1
    if n == 0:
        return jnp.zeros_like(coeffs[0])
    acc = n * coeffs[n]
    for k in range(n - 1, 0, -1):
        acc = acc * s + k * coeffs[k]
    return acc


def stack(coeffs: list[PyTree]) -> PyTree:
    """List of PyTrees -> one PyTree of arrays with a leading axis of length order+1."""
    return jtu.tree_map(lambda *cs: jnp.stack(cs), *coeffs)


def unstack(stacked: PyTree) -> list[PyTree]:
    """The inverse of `stack`: one PyTree (an array for an array) per entry of the
    leaves' leading axis."""
    leaves, treedef = jtu.tree_flatten(stacked)
    return [jtu.tree_unflatten(treedef, [x[k] for x in leaves]) for k in range(leaves[0].shape[0])]
