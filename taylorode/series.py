"""Recurrences for normalised Taylor coefficients, for writing Taylor rules with
[`taylorode.custom_taylor`][].

A series is a list `[a_0, ..., a_k]` of arrays, `a_j = a^(j)(t0) / j!`. Each function
returns the order-`k` coefficient of a result:

- `cauchy(a, b, k)`: of the product `a b`;
- `quotient(a_k, b, c, k)`: of `c = a / b`, given `a_k` and `c` up to order `k - 1`;
- `power(a, c, alpha, k)`: of `c = a**alpha` for a constant `alpha` (needs `a_0 != 0`);
- `logarithm(a, c, k)`: of `c = log(a)`;
- `derivative_conv(a, u, k)`: of `c` where `c' = u a'` (`u` up to order `k - 1`),
  the workhorse for functions whose derivative is known: `exp` (`u = c`),
  `sin` (`u = cos`), `tanh` (`u = 1 - c**2`), ...
"""

from ._coefficients._series import (
    cauchy as cauchy,
    derivative_conv as derivative_conv,
    logarithm as logarithm,
    power as power,
    quotient as quotient,
)
