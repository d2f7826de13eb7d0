from .extrapolated_hermite_obreschkoff import (
    ExtrapolatedHermiteObreschkoff as ExtrapolatedHermiteObreschkoff,
)
from .hermite_obreschkoff import (
    HermiteObreschkoff as HermiteObreschkoff,
    HermiteObreschkoffState as HermiteObreschkoffState,
    implicit_stats as implicit_stats,
)
from .taylor import order_counts as order_counts, Taylor as Taylor, TaylorState as TaylorState
from .variable_order_hermite_obreschkoff import (
    VariableOrderHermiteObreschkoff as VariableOrderHermiteObreschkoff,
    VariableOrderHermiteObreschkoffState as VariableOrderHermiteObreschkoffState,
)
