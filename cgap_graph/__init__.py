"""cgap-graph: graph-IR structural surgery for PyTorch, for Continuous Growth and Pruning.

    import cgap_graph as cg
    g = cg.trace(model, (1, 3, 32, 32))     # channel groups of any traced model
    g.groups[3].status()                     # 'prunable, growable'
"""

from cgap_graph import rules as _rules  # noqa: F401
from cgap_graph import zoo
from cgap_graph._version import __version__
from cgap_graph.errors import CgapError, InputShapeError, ModelLoadError, SurgeryError, TraceError
from cgap_graph.io import model_io
from cgap_graph.io.model_io import load_model, save_model
from cgap_graph.ir.analysis import strict_rules
from cgap_graph.ir.graph import ChannelGraph, Group, Member, trace
from cgap_graph.rules import all as _all_rules  # noqa: F401  (registers every op rule)
from cgap_graph.rules.registry import register_rule

__all__ = [
    "CgapError", "ChannelGraph", "Group", "InputShapeError", "Member", "ModelLoadError", "SurgeryError",
    "TraceError", "load_model", "model_io", "register_rule", "save_model", "strict_rules", "trace", "zoo",
    "__version__",
]
