from ._base import AbstractTaylorMethod as AbstractTaylorMethod, check_order as check_order
from .jet import JetMethod as JetMethod
from .jvp import JvpMethod as JvpMethod
from .registry import resolve_method as resolve_method
from .recurrence import RecurrenceMethod as RecurrenceMethod
