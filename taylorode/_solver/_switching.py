"""Where a Taylor step must end: the first sign change of a switching function.

The engine gives the Taylor series of the vector field's switching functions along the
step (`SwitchSeries`, `taylorode/_coefficients/_switches.py`): polynomials
`q(s) = sum_j q_j s^j` in the normalised time `s in [0, 1]` of the step. The step's
series is valid until the first `s > 0` where one of them changes sign. `first_switch`
finds that point, or certifies that there is none, as follows.

1. **Exclusion over the whole step.** On `[0, 1]`, with `d = q` and `σ` the sign `q`
   starts with, `σ q(s) >= |d_0| + s (σ d_1 - Σ_{j>=2} |d_j|)`, so `q` keeps its sign
   if `|d_0| + min(0, σ d_1 - Σ_{j>=2} |d_j|) > 0` (or if `σ d_1 > Σ_{j>=2} |d_j|`:
   moving away from a zero it starts at). Most steps stop here.
2. **Cells.** Otherwise the window `[0, H]` (first `H = 1`) is cut into `N` cells, each
   polynomial is re-expanded at every cell's start (a Taylor shift) and the same test
   is applied per cell. The earliest cell that some function does not pass is
   examined: if every function that fails there changes sign across it, it holds a
   root; otherwise (a function comes close to zero without a visible sign change, so
   it may touch or cross twice), the step ends at that cell's start, certified free of
   switches, or, where that is the window's first cell, the window shrinks to it and
   the cells are cut again (`ZOOMS` times at most).
3. **Refinement.** A root so bracketed is refined by bisection to the last bit, and the
   step ends just *past* it, where the function has its new sign, so that the next
   expansion is made on the other side of the switch.

The point returned carries the implicit-function derivative of the root,
`ds/dθ = -(∂q/∂θ) / q'(s)`, so gradients see how the switch moves with parameters and
initial conditions.

Switches inside operations whose switching function the engine cannot write down (the
`unseen` ones, such as `jnp.searchsorted`) are found by evaluating those operations at
the cells' ends and bisecting between two evaluations that differ.

References: the exclusion test and the isolation of the first root follow the ideas of
heyoka's event detection (Biscani & Izzo 2022, arXiv:2204.09948), here with a Taylor-model
bound in place of Descartes' rule of signs, so that the work has a fixed size.
"""

import functools
import math

import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


# Cells per window, and how many times the first cell is examined more closely.
CELLS = 8
ZOOMS = 4


def _passes(d: Array) -> Array:
    """Whether each polynomial `d[:, i]` (coefficients on `u in [0, 1]`) keeps its sign
    on `(0, 1]` by the Taylor-model bound (see the module doc). `d`: `(m, n)`."""
    d0 = d[0]
    d1 = d[1] if d.shape[0] > 1 else jnp.zeros_like(d0)
    rest = jnp.sum(jnp.abs(d[2:]), axis=0) if d.shape[0] > 2 else jnp.zeros_like(d0)
    sigma = jnp.where(d0 != 0, jnp.sign(d0), jnp.sign(d1))
    g = sigma * d1 - rest
    all_zero = jnp.all(d == 0, axis=0)
    # With a rounding margin: a root exactly at the interval's end (a cell boundary)
    # would otherwise pass here and, moving away from zero, in the next cell as well.
    margin = 16 * jnp.finfo(d.dtype).eps * jnp.sum(jnp.abs(d), axis=0)
    return (jnp.abs(d0) + jnp.minimum(g, 0) > margin) | (g > 0) | all_zero


def _start_sign(d: Array) -> Array:
    """The sign a polynomial has just after `u = 0` (of its first nonzero coefficient
    among the first three)."""
    s = jnp.sign(d[0])
    for j in range(1, min(3, d.shape[0])):
        s = jnp.where(s == 0, jnp.sign(d[j]), s)
    return s


def _horner(d: Array, u: Array) -> Array:
    acc = d[-1]
    for j in range(d.shape[0] - 2, -1, -1):
        acc = acc * u + d[j]
    return acc


def _shift_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`binom[j, k] = C(k, j)`, `power[j, k] = k - j` and the mask `k >= j`, for the
    Taylor shift `d_j(a) = sum_{k >= j} C(k, j) a^(k - j) q_k`."""
    j = np.arange(m)[:, None]
    k = np.arange(m)[None, :]
    mask = k >= j
    binom = np.where(mask, np.vectorize(lambda a, b: math.comb(int(b), int(a)) if b >= a else 0)(j, k), 0)
    return binom.astype(np.float64), np.where(mask, k - j, 0), mask


@functools.cache
def _cell_shifts(m: int) -> np.ndarray:
    """`M[c, j, k] = C(k, j) c^(k - j) / CELLS^k` (`0^0 = 1`), shape `(CELLS * m, m)`,
    in float64: for cells of width `w` starting at `c w`, the polynomials re-expanded
    on cell `c`, in its own variable, are `M[c] @ ((CELLS w)^k q_k)_k`, since
    `w^j C(k, j) (c w)^(k - j) = M[c, j, k] (CELLS w)^k`. Every entry is at most
    `C(k, j)` in size, as the terms of the shift computed at run time would be."""
    binom, power, mask = _shift_matrices(m)
    c = np.arange(CELLS, dtype=np.float64)[:, None, None] / CELLS
    pw = np.where(mask[None], c ** power[None], 0.0)  # (c / CELLS)^(k - j); 0^0 = 1
    down = float(CELLS) ** -np.arange(m, dtype=np.float64)  # CELLS^-j
    return (binom[None] * pw * down[None, :, None]).reshape(CELLS * m, m)


def _cells(q: Array, width: Array) -> Array:
    """The polynomials re-expanded on each of the `CELLS` cells of `[0, CELLS * width]`,
    in the cell's own variable `u in [0, 1]`: shape `(CELLS, m, n)`. The shift matrices
    are constants (`_cell_shifts`); only the powers of the window's width are computed
    at run time."""
    m = q.shape[0]
    scaled = q * ((CELLS * width) ** jnp.arange(m, dtype=q.dtype))[:, None]
    shifts = jnp.asarray(_cell_shifts(m), q.dtype)
    return (shifts @ scaled).reshape(CELLS, m, q.shape[1])


def _bisect(d: Array, sign0: Array, iterations: int) -> Array:
    """For each polynomial `d[:, i]` with a sign change on `[0, 1]` (starting with sign
    `sign0`), the smallest `u` found whose value no longer has sign `sign0`."""

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        same = sign0 * _horner(d, mid) > 0
        return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

    lo = jnp.zeros_like(sign0)
    hi = jnp.ones_like(sign0)
    _, hi = lax.fori_loop(0, iterations, body, (lo, hi))
    return hi


def _tied(q: Array) -> Array:
    """The switching functions exactly zero where the step starts (a state given on a
    switch, a time switch met exactly), not identically: JAX's tie conventions would
    pick the branch, so the step first moves off them, just far enough to decide."""
    return (q[0] == 0) & ~jnp.all(q == 0, axis=0)


def all_clear(q: Array) -> Array:
    """Whether the whole-step bound (step 1 of the module doc) excludes a sign change of
    every polynomial `q[:, i]` on `(0, 1]`, none starting exactly at zero: then
    `first_switch(q)` would return `(1, False, 0)`."""
    q = lax.stop_gradient(q)
    if q.shape[1] == 0:
        return jnp.array(True)
    return jnp.all(_passes(q) & ~_tied(q))


def _first_switch(q: Array) -> tuple[Array, Array, Array]:
    """Locate the first sign change on `(0, 1]` of the polynomials `q[:, i]` (shape
    `(m, n)`, normalised coefficients in the step variable `s`).

    **Returns:** `(end, crossed, which)`: the step may safely go to `end in (0, 1]`;
    `crossed` says whether `end` lies just past a root (of polynomial `which`) rather
    than at a point certified free of switches (`end = 1`: no switch in the step).
    `end` is not differentiable; see `root_derivative`.
    """
    q = lax.stop_gradient(q)
    dtype = q.dtype
    bits = jnp.finfo(dtype).nmant + 4
    n = q.shape[1]

    def analyse(width):
        d = _cells(q, width)  # (CELLS, m, n)
        ok = jax.vmap(_passes)(d)  # (CELLS, n)
        first_bad = jnp.argmin(ok, axis=0)  # first failing cell per function
        first_bad = jnp.where(jnp.all(ok, axis=0), CELLS, first_bad)
        cell = jnp.min(first_bad)
        at = jnp.minimum(cell, CELLS - 1)
        dc = d[at]  # (m, n)
        sign0 = _start_sign(dc)
        end_value = jnp.sum(dc, axis=0)
        changes = sign0 * end_value <= 0
        candidates = first_bad == cell
        bracketed = jnp.all(jnp.where(candidates, changes, True))
        return cell, at, dc, sign0, candidates, bracketed

    if n == 0:
        return jnp.ones((), dtype), jnp.array(False), jnp.zeros((), jnp.int32)
    tied = _tied(q)
    whole = _passes(q) & ~tied

    def zoom_cond(carry):
        level, done = carry[1], carry[2]
        return ~done & (level <= ZOOMS)

    def zoom_body(carry):
        width = carry[0]
        analysis = analyse(width)
        cell, bracketed = analysis[0], analysis[5]
        stuck = (cell == 0) & ~bracketed
        return jnp.where(stuck, width / CELLS, width), carry[1] + 1, ~stuck, width, analysis

    def locate(_):
        # The window shrinks while its first cell is doubtful (at most ZOOMS times);
        # the loop carries the last analysis and the width it was made with.
        width0 = jnp.asarray(1 / CELLS, dtype)
        blank = jax.eval_shape(analyse, width0)
        blank = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), blank)
        carry = (width0, 0, jnp.array(False), width0, blank)
        _, _, _, width, analysis = lax.while_loop(zoom_cond, zoom_body, carry)
        cell, at, dc, sign0, candidates, bracketed = analysis
        start = at.astype(dtype) * width
        u = _bisect(dc, jnp.where(candidates, sign0, 1), bits)
        u = jnp.where(candidates, u, jnp.inf)
        which = jnp.argmin(u).astype(jnp.int32)
        root_end = _past(q[:, which], start + u[which] * width)
        no_switch = cell >= CELLS
        window_end = CELLS * width
        # Certified free of switches: to the window's end if nothing fails in it, to
        # the start of the first doubtful cell, or (doubtful from the start, after
        # every zoom) to the end of the first cell.
        safe_end = jnp.where(no_switch, window_end, jnp.where(at > 0, start, width))
        crossed = ~no_switch & bracketed
        end = jnp.where(crossed, root_end, jnp.minimum(safe_end, 1))
        off = jax.vmap(_past, in_axes=(1, None))(q, jnp.zeros((), dtype))
        off = jnp.where(tied, off, jnp.inf)
        tie = jnp.argmin(off).astype(jnp.int32)
        first_off = off[tie] < end
        return (
            jnp.where(first_off, off[tie], end),
            crossed | first_off,
            jnp.where(first_off, tie, which),
        )

    def clear(_):
        return jnp.ones((), dtype), jnp.array(False), jnp.zeros((), jnp.int32)

    end, crossed, which = lax.cond(jnp.all(whole), clear, locate, None)
    # A switch within rounding of the step's end: the step ends there anyway.
    end = jnp.where(end >= 1 - 64 * jnp.finfo(dtype).eps, jnp.ones_like(end), end)
    return end, crossed, which


# Traced once per shape and dtype, not once per trace of a solver's step (diffrax
# traces its loop body more than once): it takes arrays only.
first_switch = jax.jit(_first_switch)


def tail(q: Array) -> tuple[Array, Array, Array]:
    """`(tail, size, lower)` of the series `q[:, i]` (rows: orders `0 .. m-1` in the
    step variable `s`) over the whole step: the last two terms,
    `|q_{m-2}| + |q_{m-1}|`, what the truncated series may be off by at its end;
    `sum_j |q_j|`, its size; and a lower bound of `|q(s)|` on `[0, 1]` (the bound of
    `_passes`, 0 where it shows none).

    A switching function can vary faster than the state (`sin(20 t) > 0.99` in a field
    whose other terms are constant), and a step sized by the state's series alone
    would take its truncated series for the function: a switch may then be missed or
    misplaced. Solvers count `tail_ratio` in their error estimate, so that the series
    of a switching function that may come near zero is accurate to the tolerance as
    well."""
    q = lax.stop_gradient(q)
    m = q.shape[0]
    last = jnp.abs(q[m - 1])
    prev = jnp.abs(q[m - 2]) if m >= 2 else jnp.zeros_like(last)
    d0 = q[0]
    d1 = q[1] if m > 1 else jnp.zeros_like(d0)
    rest = jnp.sum(jnp.abs(q[2:]), axis=0) if m > 2 else jnp.zeros_like(d0)
    lower = jnp.maximum(jnp.abs(d0) + jnp.minimum(jnp.sign(d0) * d1 - rest, 0), 0)
    return prev + last, jnp.sum(jnp.abs(q), axis=0), lower


def tail_ratio(tails: tuple[Array, Array, Array], rtol, atol) -> Array:
    """The largest `tail / max(atol + rtol size, lower / 2)` over the switching
    functions (0 with none): above 1, the series of one of them is not accurate to the
    tolerance over the step, while it may come near zero there (a function kept away
    from zero by more than twice its truncation cannot switch, however inaccurate)."""
    tail_, size, lower = tails
    if tail_.shape[-1] == 0:
        return jnp.zeros((), tail_.dtype)
    with jax.numpy_dtype_promotion("standard"):
        ratio = tail_ / jnp.maximum(atol + rtol * size, lower / 2)
    return jnp.max(ratio).astype(tail_.dtype)


def _shift(q: Array, a: Array, width: Array) -> Array:
    """The polynomials `q[:, i]` re-expanded on `[a, a + width]`, in that interval's own
    variable `u in [0, 1]` (`s = a + width u`)."""
    m = q.shape[0]
    binom, power, mask = _shift_matrices(m)
    a_pow = a ** jnp.arange(m, dtype=q.dtype)
    shift = jnp.where(mask, binom.astype(q.dtype) * a_pow[power], 0)
    return (shift @ q) * (width ** jnp.arange(m, dtype=q.dtype))[:, None]


def crossings(q: Array) -> tuple[Array, Array, Array, Array]:
    """How often the polynomials `q[:, i]` (as for `first_switch`) change sign on
    `(0, 1]`, all together, for a step that cannot end at a switch and may cross one
    at most.

    **Returns:** `(one, more, which, end)`: whether there is a first sign change (of
    polynomial `which`, just before `end`); and whether there may be another one after it, of the same
    polynomial or of another, or a point where one comes close to zero without a
    visible sign change (it may touch zero or cross twice there). Two changes within
    the margin by which `first_switch` steps past a root count as one.
    """
    q = lax.stop_gradient(q)
    end, crossed, which = first_switch(q)
    one = crossed | (end < 1)

    def after(_):
        # The polynomials from just past the first root to the step's end.
        rest = _shift(q, end, 1 - end)
        end2, crossed2, _ = first_switch(rest)
        return crossed2 | (end2 < 1)

    second = lax.cond(eqxi.unvmap_any(crossed & (end < 1)), after, lambda _: jnp.array(False), None)
    more = (~crossed & (end < 1)) | (crossed & (end < 1) & second)
    return one, more, which, end


def _past(qi: Array, s: Array) -> Array:
    """From `s`, just past a root of `qi`, further on until `|qi|` exceeds what the
    next expansion's own value of the switching function may differ by (rounding, and
    the truncation of the series, measured by its last two terms), so that the next
    expansion sees the new side of the switch and not a tie (where JAX's conventions
    would mix the two branches)."""
    eps = jnp.finfo(qi.dtype).eps
    m = qi.shape[0]
    scale = jnp.max(jnp.abs(qi))
    if m > 2:
        # The last two terms at s: what the series' truncation may be off by there.
        tail = jnp.abs(qi[m - 2]) * s ** (m - 2) + jnp.abs(qi[m - 1]) * s ** (m - 1)
    else:
        tail = jnp.zeros_like(scale)
    margin = 4 * tail + 256 * eps * scale
    value = _horner(qi, s)
    slope = _horner(qi[1:] * jnp.arange(1, m, dtype=qi.dtype), s) if m > 1 else jnp.zeros_like(value)
    extra = jnp.maximum(margin - jnp.abs(value), 0) / jnp.maximum(jnp.abs(slope), jnp.finfo(qi.dtype).tiny)
    return jnp.minimum(s + jnp.minimum(extra, 1), 1)


def root_derivative(q: Array, end: Array, crossed: Array, which: Array) -> Array:
    """`end` with the derivative of the root it brackets: one Newton correction
    `s - q(s)/q'(s)` in differentiable form, whose value is dropped."""
    qi = q[:, which]
    s = lax.stop_gradient(end)
    value = _horner(qi, s)
    m = qi.shape[0]
    dq = qi[1:] * jnp.arange(1, m, dtype=qi.dtype)
    slope = _horner(dq, s) if m > 1 else jnp.zeros_like(value)
    safe = crossed & (slope != 0)
    newton = s - value / jnp.where(safe, slope, 1)
    correction = jnp.where(safe, newton - lax.stop_gradient(newton), 0)
    return end + correction


def first_change(signature, end: Array) -> Array:
    """The first point of `(0, end]` where `signature(u)` (an integer array: the values of
    the switching operations the engine cannot see into, at the point `u` of the step)
    differs from `signature(0)`, found by evaluating it at `CELLS` points and bisecting
    between the last that agrees and the first that differs; `end` if none differs.
    A change that reverts between two of those points is not seen."""
    end = lax.stop_gradient(end)
    dtype = end.dtype
    ref = signature(jnp.zeros((), dtype))
    us = end * jnp.arange(1, CELLS + 1, dtype=dtype) / CELLS
    differs = jax.vmap(lambda u: jnp.any(signature(u) != ref))(us)
    first = jnp.argmax(differs)
    found = jnp.any(differs)

    def refine(_):
        lo = jnp.where(first > 0, us[jnp.maximum(first - 1, 0)], 0)
        hi = us[first]

        def body(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            same = ~jnp.any(signature(mid) != ref)
            return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

        hi = lax.fori_loop(0, jnp.finfo(dtype).nmant + 4, body, (lo, hi))[1]
        # A change at the end itself (within rounding of the step's time) needs no cut.
        return jnp.where(hi >= end * (1 - 64 * jnp.finfo(dtype).eps), end, hi)

    return lax.cond(found, refine, lambda _: end, None)
