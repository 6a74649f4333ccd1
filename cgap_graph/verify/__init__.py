"""Independent checks of a channel graph (the oracles of the design notes): masked == shrunk,
function-preserving growth, and a perturbation check that does not use the channel rules."""

from cgap_graph.verify.inputs import output_tensor, random_inputs, randomize_norm_stats
from cgap_graph.verify.oracles import masked_vs_shrunk, preserve_growth_diff
from cgap_graph.verify.perturbation import PerturbationReport, perturbation_check

__all__ = ["PerturbationReport", "masked_vs_shrunk", "output_tensor", "perturbation_check", "preserve_growth_diff",
           "random_inputs", "randomize_norm_stats"]
