"""The honest reference for normalised groups (issue 16): removing channels that a LayerNorm,
RMSNorm or GroupNorm (module or functional, channels-first or channels-last) normalises across
equals the masked model whose norm statistics are taken over the kept channels only, within
1e-5 relative to the output. Every prunable group of each model, a random subset each."""

import numpy as np
import pytest
import torch
from norm_models import MODELS

import cgap_graph as cg
from cgap_graph.ir.notes import is_kept_stats_note
from cgap_graph.passes.cgap.prune import prune_units, remove_units
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.verify import kept_stats_reference, make_responsive, masked_vs_shrunk

TOL = 1e-5  # relative: max |masked - shrunk| / max |output|


def _model(name):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    return make_responsive(factory()).eval(), shape


@pytest.mark.parametrize("name", list(MODELS))
def test_kept_stats_reference_equals_shrunk(name):
    model, shape = _model(name)
    g = cg.trace(model, shape)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scale = float(model(x).abs().max())
    rng = np.random.default_rng(0)
    normalised = [grp for grp in g.groups if grp.prunable and any(is_kept_stats_note(n) for n in grp.prune_notes)]
    assert normalised
    assert normalised, "no normalised group: the test would check nothing"
    for grp in [grp for grp in g.groups if grp.prunable]:
        drop = rng.choice(grp.width, size=max(1, grp.width // 3), replace=False)
        diff = masked_vs_shrunk(model, shape, grp.id, drop, inputs=[x]) / scale
        assert diff <= TOL, f"{name} group {grp.id} ({grp.status()}): relative {diff:.2e}"


@pytest.mark.parametrize("name", list(MODELS))
def test_half_of_every_group_against_kept_stats(name):
    """The benchmark's route: half of every prunable group removed at once; the shrunk model
    equals the kept-statistics reference of the masked one, and differs from the plain masked
    model (so the reference is not vacuous)."""
    model, shape = _model(name)
    shrunk, masked = cg.trace(model, shape), cg.trace(model, shape)
    rep = prune_units(shrunk, saliency(shrunk, mode="magnitude"), 0.5)
    remove_units(masked, rep.removed, shrink=False)
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = shrunk.module.eval()(x)
        ref = kept_stats_reference(masked, rep.removed, [x])
        plain = masked.module.eval()(x)
    scale = float(out.abs().max())
    assert float((ref - out).abs().max()) / scale <= TOL
    assert float((plain - out).abs().max()) / scale > 1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_normalised_groups_report_exact_against_kept_stats(name):
    """The rules' norm notes are recognised: such groups say "exact against kept-channel
    statistics" for pruning (the reference above holds them to it) instead of "inexact"."""
    model, shape = _model(name)
    g = cg.trace(model, shape)
    normalised = [grp for grp in g.groups if grp.prunable and any(is_kept_stats_note(n) for n in grp.prune_notes)]
    assert normalised
    for grp in normalised:
        assert grp.kept_stats_exact and grp.summary()["prune_exact_kept_stats"], grp.status()
        assert "pruning exact against kept-channel statistics" in grp.status()
        assert not grp.status().split(", ")[2].startswith("inexact")


def test_softmax_groups_stay_inexact():
    """A softmax across channels is not a statistic the reference recomputes: still inexact."""
    class SoftmaxMix(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.b(self.a(x).softmax(-1))

    g = cg.trace(SoftmaxMix(), (2, 6))
    grp = next(grp for grp in g.groups if grp.width == 8)
    assert grp.prune_notes and not grp.kept_stats_exact and "inexact" in grp.status()
