"""Op rules: one registry (``registry.py``, which documents the contract) and one module per family
of ops. Importing this package registers every built-in rule."""

from cgap_graph.ir.values import SizeV, TInfo
from cgap_graph.rules import all as _all  # noqa: F401  (registers every family)
from cgap_graph.rules.registry import Call, TSpec, add_traits, register, register_rule
from cgap_graph.rules.util import shp, v

__all__ = ["Call", "SizeV", "TInfo", "TSpec", "add_traits", "register", "register_rule", "shp", "v"]
