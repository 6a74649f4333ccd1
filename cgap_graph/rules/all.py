"""Register every family of op rules."""

from cgap_graph.rules import (  # noqa: F401
    attention,
    contractions,
    elementwise,
    indexing,
    join_split,
    linear_conv,
    misc,
    norms,
    pooling,
    reductions,
    reshape,
    shape_ops,
)
