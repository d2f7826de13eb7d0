"""What one expansion by the recurrence engine learns besides the coefficients, collected
while it runs: the series of the switching functions (`_switches.py`), the switching
operations it cannot see into, and checks that the series are valid at all (a positive
power of a series that is zero where it starts but not identically zero has no Taylor
series there)."""

import contextlib
import contextvars


class Collector:
    """- `series`: functions `j -> array`, the switching functions' coefficients;
    - `opaque`: switching primitives without a switching function, name -> where;
    - `checks`: functions `() -> bool array`, true where the expansion is invalid."""

    def __init__(self):
        self.series: list = []
        self.opaque: dict[str, str | None] = {}
        self.checks: list = []


_COLLECTOR: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "taylorode_expansion_collector", default=None
)


def current() -> Collector | None:
    """The collector of the expansion running now, if any."""
    return _COLLECTOR.get()


@contextlib.contextmanager
def collecting():
    collector = Collector()
    token = _COLLECTOR.set(collector)
    try:
        yield collector
    finally:
        _COLLECTOR.reset(token)
