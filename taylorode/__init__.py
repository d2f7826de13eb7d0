"""taylorode: Taylor-series ODE solvers for JAX that drop into `diffrax.diffeqsolve`."""

from importlib import metadata as _metadata

from ._coefficients import (
    AbstractTaylorMethod as AbstractTaylorMethod,
    JetMethod as JetMethod,
    JvpMethod as JvpMethod,
    RecurrenceMethod as RecurrenceMethod,
)
from ._citation import citation as citation
from ._custom_taylor import custom_taylor as custom_taylor
from ._diagnostics import (
    stiffness_diagnostics as stiffness_diagnostics,
    StiffnessDiagnostics as StiffnessDiagnostics,
)
from ._errors import (
    PrecisionWarning as PrecisionWarning,
    SwitchWarning as SwitchWarning,
    TaylorRuleError as TaylorRuleError,
)
from ._interop import diffeqsolve as diffeqsolve
from ._interpolation import TaylorInterpolation as TaylorInterpolation
from ._linear_solver import BandedLU as BandedLU
from ._protocol import TaylorFunc as TaylorFunc
from ._results import RESULTS as RESULTS
from ._solver import (
    ExtrapolatedHermiteObreschkoff as ExtrapolatedHermiteObreschkoff,
    HermiteObreschkoff as HermiteObreschkoff,
    HermiteObreschkoffState as HermiteObreschkoffState,
    implicit_stats as implicit_stats,
    order_counts as order_counts,
    Taylor as Taylor,
    TaylorState as TaylorState,
    VariableOrderHermiteObreschkoff as VariableOrderHermiteObreschkoff,
    VariableOrderHermiteObreschkoffState as VariableOrderHermiteObreschkoffState,
)
from ._step_size_controller import TaylorController as TaylorController
from ._root_finder import PadeChord as PadeChord
from ._sensitivity import (
    forward_sensitivity as forward_sensitivity,
    SensitivitySolution as SensitivitySolution,
)
from ._taylor_coefficients import taylor_coefficients as taylor_coefficients
from . import series as series
from . import stable as stable


__version__ = _metadata.version("taylorode")
