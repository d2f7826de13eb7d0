"""Type aliases for the solver and controller interfaces, as diffrax annotates its own
(jaxtyping)."""

from typing import Any

from jaxtyping import Array, ArrayLike, Bool, PyTree, Real, Shaped


RealScalarLike = bool | int | float | Real[Array, ""]
BoolScalarLike = bool | Bool[Array, ""]
IntScalarLike = int | Array
Y = PyTree[Shaped[ArrayLike, "?*y"], "Y"]
VF = PyTree[Shaped[ArrayLike, "?*vf"], "VF"]
Args = PyTree[Any]
DenseInfo = dict[str, PyTree[Array]]
