"""Independent checks of a channel graph (the oracles of the design notes): masked == shrunk,
function-preserving growth, and a perturbation check that does not use the channel rules."""

from cgap_graph.verify.inputs import output_tensor, random_inputs, randomize_norm_stats
from cgap_graph.verify.kept_stats import KeptStatsInterpreter, kept_stats_reference
from cgap_graph.verify.oracles import masked_vs_shrunk, preserve_growth_diff
from cgap_graph.verify.perturbation import PerturbationReport, perturbation_check
from cgap_graph.verify.responsive import calibrate_norms, calibration_batch, input_sensitivity, make_responsive

__all__ = ["KeptStatsInterpreter", "PerturbationReport", "calibrate_norms", "calibration_batch", "input_sensitivity",
           "kept_stats_reference", "make_responsive", "masked_vs_shrunk", "output_tensor", "perturbation_check",
           "preserve_growth_diff", "random_inputs", "randomize_norm_stats"]
