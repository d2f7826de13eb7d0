"""Name -> coefficient method."""

from ._base import AbstractTaylorMethod
from .jet import JetMethod
from .jvp import JvpMethod
from .recurrence import RecurrenceMethod


_METHODS: dict[str, type[AbstractTaylorMethod]] = {
    "jet": JetMethod,
    "jvp": JvpMethod,
    "recurrence": RecurrenceMethod,
}


def resolve_method(method: str | AbstractTaylorMethod) -> AbstractTaylorMethod:
    """Turn `method="jet"` (or an `AbstractTaylorMethod` instance) into a method."""
    if isinstance(method, AbstractTaylorMethod):
        return method
    try:
        return _METHODS[method]()
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown Taylor coefficient method {method!r}; choose one of "
            f"{sorted(_METHODS)} (or pass an AbstractTaylorMethod instance)."
        ) from None
