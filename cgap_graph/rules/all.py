"""Register every family of op rules."""

from cgap_graph.rules import (  # noqa: F401
    attention,
    elementwise,
    join_split,
    linear_conv,
    misc,
    norms,
    pooling,
    reductions,
    shape_ops,
)
