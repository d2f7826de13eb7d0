from .taylor import order_counts as order_counts, Taylor as Taylor, TaylorState as TaylorState
