"""The oracles of the design notes, on every group of every zoo model and coupling model.

1. masked == shrunk: zeroing a random subset of a group's channels (producers, biases, norm
   affine parameters) and removing them give the same outputs, max abs diff <= 1e-5 x max(1,
   max |output|) (float32 resolves ~1e-7 of an output's size; the models are made responsive
   first, so a deep residual stream's outputs reach ~50). Groups
   normalised by LayerNorm/GroupNorm compare against a masked model whose norm statistics
   skip the removed channels (what removal means for them).
2. preserve growth: duplicating random channels with the Net2Wider initialiser leaves outputs
   unchanged (same bound). For groups normalised across channels, partial duplication is flagged
   inexact and a uniform 2x duplication is exact.
4. perturbation agreement: no producer change reaches a consumer position that the groups do
   not predict, and every predicted change happens.

Zoo models run in float64: float32 rounding over ResNet-110's 110 layers reaches ~1e-5 of the
output, so a float32 oracle trips the bound when the thread count changes, while float64 leaves
the algebra alone to measure. Every model is made responsive first (``verify.make_responsive``:
norm statistics measured on a random batch and jittered, random affine parameters, zero
parameters re-drawn), so its output
depends on its input and a channel mix-up shows. Zoo models run at reduced width (the coupling
structure does not depend on it) so the suite stays fast; benchmarks use full widths.
"""

import numpy as np
import pytest
import torch
from coupling_models import MODELS, zoo_and_coupling_cases

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.verify import (
    make_responsive,
    masked_vs_shrunk,
    output_tensor,
    perturbation_check,
    preserve_growth_diff,
    random_inputs,
)

TOL = 1e-5
ZOO_WIDTH = {"vgg16": 0.25, "vgg19": 0.25, "resnet56": 0.5, "resnet110": 0.25, "densenet": 0.5}
# Over-coupling the check may report (safe: it restricts pruning, it never breaks a model).
ALLOWED_MISSING = {
    "channel_shuffle": "a shuffle after a concat couples the two halves unit by unit, so each unit "
                       "spans one channel from each branch; changing one branch changes one of them",
}


def _cases():
    return zoo_and_coupling_cases()


def _build(case):
    kind, name = case
    if kind == "zoo":  # in float64: the oracles then measure the algebra, not float32 rounding over 110 layers
        shape = zoo.input_shape(name)
        model = make_responsive(zoo.build(name, width=ZOO_WIDTH.get(name, 1.0)), input_shape=shape).eval()
        return model.double(), shape, {"input_dtype": torch.float64}
    factory, shape, dtype = MODELS[name]
    return make_responsive(factory(), input_shape=shape, input_dtype=dtype).eval(), shape, {"input_dtype": dtype}


def _groups_of(case, which: str):
    """The model, its shape and trace options, its groups that are ``which`` (prunable ...), and
    the bound TOL x max(1, max |output|)."""
    model, shape, kw = _build(case)
    g = cg.trace(model, shape, **kw)
    with torch.no_grad():
        scale = float(output_tensor(model(*random_inputs(g))).abs().max())
    return model, shape, kw, [grp for grp in g.groups if getattr(grp, which)], TOL * max(1.0, scale)


@pytest.mark.parametrize("case", list(_cases()))
def test_masked_equals_shrunk_every_group(case):
    model, shape, kw, groups, bound = _groups_of(case, "prunable")
    rng = np.random.default_rng(0)
    checked = 0
    for grp in groups:
        drop = rng.choice(grp.width, size=rng.integers(1, grp.width), replace=False)
        diff = masked_vs_shrunk(model, shape, grp.id, drop, **kw)
        assert diff <= bound, f"group {grp.id} ({grp.status()}): masked vs shrunk differ by {diff:.2e}"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("case", list(_cases()))
def test_preserve_growth_every_group(case):
    grown = 0
    model, shape, kw, groups, bound = _groups_of(case, "growable")
    rng = np.random.default_rng(1)
    for grp in groups:
        grown += 1
        if grp.grow_notes:
            sel = list(range(grp.width)) * 2  # uniform duplication keeps cross-channel statistics
        else:
            sel = list(range(grp.width)) + list(rng.integers(0, grp.width, size=max(1, grp.width // 2)))
        diff = preserve_growth_diff(model, shape, {grp.id: sel}, **kw)
        assert diff <= bound, f"group {grp.id} ({grp.status()}): preserve growth changed outputs by {diff:.2e}"
    assert grown > 0, "no growable group: the test would pass without checking anything"


@pytest.mark.parametrize("case", list(_cases()))
def test_groups_agree_with_perturbation(case):
    model, shape, kw = _build(case)
    g = cg.trace(model, shape, **kw)
    report = perturbation_check(g)
    assert report.unexpected == []
    if case[1] != "shuffle_grouped_v1":  # every producer there touches a frozen group
        assert report.checked > 0
    if case[1] not in ALLOWED_MISSING:
        assert report.missing == []


def test_partial_duplication_under_layernorm_is_flagged_and_not_exact():
    model = make_responsive(zoo.build("vit", width=0.5)).eval()
    g = cg.trace(model, zoo.input_shape("vit"))
    stream = next(grp for grp in g.groups if grp.grow_notes)
    assert any("LayerNorm" in n for n in stream.grow_notes)
    diff = preserve_growth_diff(model, zoo.input_shape("vit"), {stream.id: list(range(stream.width)) + [0]})
    assert diff > 1e-4  # the note is true: statistics over the stream change


def test_grouped_conv_after_shuffle_freezes_with_reason():
    """ShuffleNet v1: the grouped conv after a shuffle sees channels of every earlier group, so no
    selection keeps its groups even; those groups freeze and name the conv, the rest stays."""
    factory, shape, _ = MODELS["shuffle_grouped_v1"]
    g = cg.trace(factory(), shape)
    frozen = [grp for grp in g.groups if grp.frozen and "gconv2" in grp.frozen]
    assert frozen and any("factorisations" in grp.frozen for grp in frozen)
    assert any(grp.resizable for grp in g.groups)


@pytest.mark.parametrize("case", list(_cases()))
def test_every_op_has_a_rule(case):
    # the zoo and the coupling models are what the rules are written for: nothing there may be
    # unknown or opaque (the tests run strict, so a rule that raises fails the trace itself)
    model, shape, kw = _build(case)
    g = cg.trace(model, shape, **kw)
    assert g.unknown_ops == [] and g.opaque_modules == {}
