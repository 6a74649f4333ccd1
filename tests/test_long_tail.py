"""The long tail of real architectures (issue 16): windowed attention with sizes read at run time,
relative-position bias tables, patch merging, ghost modules, weight-standardised convolutions,
MetaFormer token mixers, and a pass that must not fail as a whole for one group.

Tolerances: relative to the largest output magnitude, 1e-5 for every "exact" claim (masked ==
shrunk, preserve growth unchanged). The models are He-initialised with random norm statistics
(``long_tail_models.build``), so their outputs respond to a channel mix-up.
"""

import importlib.util
import pathlib

import numpy as np
import pytest
import torch
from long_tail_models import build

import cgap_graph as cg
from cgap_graph.passes.cgap.grow import grow
from cgap_graph.passes.cgap.prune import prune_units, remove_units, zero_filters
from cgap_graph.passes.cgap.saliency import Saliency
from cgap_graph.rules import TInfo, TSpec, register_rule, shp
from cgap_graph.surgery import apply_selection
from cgap_graph.verify import masked_vs_shrunk, preserve_growth_diff
from cgap_graph.verify.inputs import output_tensor, random_inputs

REL = 1e-5


def _scale(model, shape) -> float:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return float(output_tensor(model(torch.randn(shape, generator=g))).abs().max())


def _group_with(g, label: str):
    return next(grp for grp in g.groups if label in [m.label() for m in grp.members])


def _masked_rel(model, shape, gid, drop) -> float:
    return masked_vs_shrunk(model, shape, gid, drop) / _scale(model, shape)


def _magnitude(cgraph) -> Saliency:
    rng = np.random.default_rng(0)
    return Saliency("random", {}, {g.id: rng.random(g.width) for g in cgraph.groups if g.resizable})


@pytest.mark.parametrize("name", ["window_attention", "rel_pos_bias"])
def test_stream_grown_alone_keeps_scale_and_reshape(name):
    """Growing the stream alone (16 -> 19) with the preserve initialiser leaves outputs unchanged:
    the reshape's ``C // heads`` becomes 8 again, not 19 // 2, and the scale stays 8 ** -0.5."""
    model, shape = build(name)
    g = cg.trace(model, shape)
    stream = _group_with(g, "embed.out")
    sel = list(range(16)) + [0, 7, 15]
    assert preserve_growth_diff(model, shape, {stream.id: sel}) <= REL * _scale(model, shape)


def test_swin_v2_runtime_slice_and_heads():
    """Swin-V2 attention: ``qkv_bias[n // 3:2 * n // 3].zero_()`` (bounds read at run time) no longer
    freezes q/k/v; heads follow the per-head logit scale and bias table; cosine attention over
    head_dim is exact to prune (a norm does not see zero channels) and reported inexact to grow."""
    model, shape = build("cosine_window")
    g = cg.trace(model, shape)
    heads = _group_with(g, "attn.logit_scale[0]")
    assert heads.prunable and "attn.table[1]" in [m.label() for m in heads.members]
    hd = next(grp for grp in g.groups if grp.width == 8 and grp.resizable)
    assert not hd.prune_notes and any("F.normalize" in n for n in hd.grow_notes)
    stream = _group_with(g, "embed.out")
    assert _masked_rel(model, shape, stream.id, [2, 3, 11]) <= REL
    apply_selection(g, {stream.id: list(range(10)), hd.id: [0, 2, 4, 6]})
    assert g.module(torch.randn(shape)).shape == (1, 4)


@pytest.mark.parametrize("name", ["window_attention", "rel_pos_bias"])
def test_stream_pruned_alone_keeps_scale_and_reshape(name):
    """Pruning the residual stream alone (16 -> 10, head_dim unchanged): ``C // heads`` in the
    reshape is rewritten although its own group did not change, and ``(C // heads) ** -0.5``
    keeps its traced value."""
    model, shape = build(name)
    g = cg.trace(model, shape)
    stream = _group_with(g, "embed.out")
    assert stream.prunable and not stream.prune_notes
    assert _masked_rel(model, shape, stream.id, [1, 4, 5, 9, 12, 15]) <= REL
    pinned = [c for c in g.an.const_slots if c.mode == "pin"]
    assert pinned and all(abs(c.extra - 8 ** -0.5) < 1e-12 for c in pinned)


@pytest.mark.parametrize("name", ["window_attention", "rel_pos_bias", "cosine_window", "head_mask", "patch_merging",
                                  "ghost", "runtime_split"])
def test_every_group_masked_equals_shrunk(name):
    model, shape = build(name)
    g = cg.trace(model, shape)
    rng = np.random.default_rng(0)
    checked = 0
    for grp in g.groups:
        if not grp.prunable:
            continue
        drop = rng.choice(grp.width, size=max(1, grp.width // 2), replace=False)
        rel = _masked_rel(model, shape, grp.id, drop)
        assert rel <= REL, f"{name} group {grp.id} ({grp.status()}): masked vs shrunk {rel:.2e}"
        checked += 1
    assert checked >= 2


def test_runtime_split_sizes_rewritten_and_grow_exact():
    """``x.split([k, x.shape[-1] - k])``: every piece is resizable (the sizes argument is rewritten
    to the new widths) and preserve growth leaves the output unchanged."""
    model, shape = build("runtime_split")
    g = cg.trace(model, shape)
    pieces = [grp for grp in g.groups if grp.resizable]
    assert len(pieces) == 3, [grp.status() for grp in g.groups]
    for grp in pieces:
        sel = {grp.id: list(range(grp.width)) + [0, 1]}
        assert preserve_growth_diff(model, shape, sel) / _scale(model, shape) <= REL


def test_qkv_unbind_heads_and_head_dim_resizable():
    """qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4) then qkv[0], qkv[1], qkv[2]: heads and
    head_dim are groups of their own, and growing head_dim preserves outputs: the copies of k's
    rows of the fused qkv (only k's slice) are split, q's and v's copied."""
    model, shape = build("window_attention")
    g = cg.trace(model, shape)
    rows = g.an.slots[("attn.qkv.weight", 0)].expr
    qkv = [g.group_of_space(leaf) for leaf in dict.fromkeys(g.an.t.leaves(rows))]
    assert [grp.width for grp in qkv if not grp.resizable] == [3]  # the stacked q/k/v axis
    qkv = [grp for grp in qkv if grp.resizable]
    assert sorted(grp.width for grp in qkv) == [2, 8]  # heads, head_dim
    hd = next(grp for grp in qkv if grp.width == 8)
    assert not hd.grow_notes and not hd.prune_notes
    scale = _scale(model, shape)
    assert preserve_growth_diff(model, shape, {hd.id: list(range(8)) + [1, 1, 6]}) <= REL * scale
    rep = grow(g, _magnitude(g), 0.5, init="preserve")
    assert hd.id in rep.picked and not rep.skipped
    x = random_inputs(g)
    with torch.no_grad():
        assert float((output_tensor(g.module.eval()(*x)) - model(*x)).abs().max()) <= REL * scale


def test_relative_position_bias_heads_follow_table():
    """The bias table's head dimension is one group with the attention heads: pruning a head
    removes its table column, and the model runs."""
    model, shape = build("rel_pos_bias")
    g = cg.trace(model, shape)
    heads = _group_with(g, "attn.table[1]")
    assert heads.prunable and heads.width == 2
    assert _masked_rel(model, shape, heads.id, [0]) <= REL
    apply_selection(g, {heads.id: [1]})
    assert tuple(g.module.attn.table.shape) == (9, 1)
    assert g.module(torch.randn(shape)).shape == (1, 4)


def test_per_head_mask_tied_or_frozen():
    """A per-head mask added in place to the scores: as a buffer, its head dim is the heads group
    (pruned and grown with it, exactly); as a plain tensor of fixed size, the heads freeze."""
    model, shape = build("head_mask")
    g = cg.trace(model, shape)
    heads = _group_with(g, "mask[0]")
    assert heads.prunable and heads.width == 3
    assert _masked_rel(model, shape, heads.id, [1]) <= REL
    assert preserve_growth_diff(model, shape, {heads.id: [0, 1, 2, 2]}) <= REL * _scale(model, shape)
    apply_selection(g, {heads.id: [0, 2]})
    assert tuple(g.module.mask.shape) == (2, 6, 6) and g.module(torch.randn(shape)).shape == (1, 2)
    fixed, shape = build("fixed_mask")
    g = cg.trace(fixed, shape)
    frozen = [grp for grp in g.groups if grp.width == 3]
    assert frozen and all("fixed size" in (grp.frozen or "") for grp in frozen)


def test_inplace_broadcast_that_would_grow_self_fails_like_torch():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 1)
            self.b = torch.nn.Parameter(torch.zeros(1, 1, 4, 4))

        def forward(self, x):
            z = self.b.clone()
            z.add_(self.c(x))
            return z

    with pytest.raises(cg.errors.InputShapeError, match="doesn't match the broadcast shape"):
        cg.trace(Net(), (1, 3, 4, 4))


def test_ghost_growth_preserves_and_prunes():
    model, shape = build("ghost")
    g = cg.trace(model, shape)
    scale = _scale(model, shape)
    grown = 0
    for grp in g.groups:
        if grp.growable and grp.width > 1:
            sel = list(range(grp.width)) + [0, grp.width - 1]
            assert preserve_growth_diff(model, shape, {grp.id: sel}) <= REL * scale, grp
            grown += 1
    assert grown >= 3


def test_weight_standardised_conv_keeps_kernel():
    """``w.reshape(1, C, -1)`` -> ``F.batch_norm(training=True)`` -> ``reshape_as(w)``: the kernel
    dims are never cut; groups read by a standardised conv are reported inexact (its statistics
    span the input channels), the others are exact."""
    model, shape = build("weight_standardised")
    g = cg.trace(model, shape)
    prunable = [grp for grp in g.groups if grp.prunable]
    assert all(grp.width == 8 for grp in prunable)  # no kernel (3) dims among them
    stream = _group_with(g, "stem.out")
    assert any("F.batch_norm" in n for n in stream.prune_notes)
    plain = _group_with(g, "conv2.in")
    assert not plain.prune_notes and _masked_rel(model, shape, plain.id, [0, 3, 5]) <= REL
    rep = prune_units(g, _magnitude(g), 0.5)
    assert not rep.skipped
    assert tuple(g.module.conv1.weight.shape) == (4, 4, 3, 3)
    assert g.module(torch.randn(shape)).shape == (1, 3)


def test_metaformer_no_silent_mismatch():
    """Pooling mixer, channel-mixing mixer, StarReLU (``s * relu(x) ** 2 + b``: a zero channel
    becomes ``b``): every prunable group is exact or reported; the prune pass folds the StarReLU
    constant into the reader's bias, so its result equals the model with the filters zeroed."""
    model, shape = build("metaformer")
    g = cg.trace(model, shape)
    scale = _scale(model, shape)
    for grp in g.groups:
        if grp.prunable:
            rel = _masked_rel(model, shape, grp.id, list(range(0, grp.width, 2)))
            assert rel <= REL or grp.prune_notes, f"group {grp.id}: {rel:.2e} with no inexact report"
    starred = [grp for grp in g.groups if any("non-zero constant" in n for n in grp.prune_notes)]
    assert len(starred) == 2
    ref, out = cg.trace(model, shape), cg.trace(model, shape)
    dead = {grp.id: list(range(0, grp.width, 2)) for grp in starred}
    zero_filters(ref, dead)
    rep = remove_units(out, dead)
    assert len(rep.folded) == 2 and not rep.skipped
    x = random_inputs(ref)
    with torch.no_grad():
        diff = float((ref.module.eval()(*x) - out.module.eval()(*x)).abs().max())
    assert diff <= REL * scale
    assert out.module.get_submodule("mlps.0.2").in_channels == 12


# ---- a group that cannot be edited is skipped, not fatal ------------------------------------------
@torch.library.custom_op("cgap_tests::fixed_width8", mutates_args=())
def fixed_width8(x: torch.Tensor) -> torch.Tensor:
    """Pads or cuts the channels to exactly 8."""
    c = x.shape[1]
    return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, max(0, 8 - c)))[:, :8].clone()


@fixed_width8.register_fake
def _(x):
    return x.new_empty((x.shape[0], 8, *x.shape[2:]))


register_rule(fixed_width8, shape=lambda op: TSpec((shp(op.args[0])[0], 8, *shp(op.args[0])[2:]), op.args[0].dtype),
              # a wrong channel rule (it claims the op is element-wise): the validation must catch it
              channels=lambda an, op: TInfo(op.args[0].exprs, True, op.node.meta["shape"]))


class _FixedWidthNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 1)
        self.b = torch.nn.Conv2d(8, 8, 1)
        self.c = torch.nn.Conv2d(8, 8, 1)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        x = fixed_width8(self.a(x))
        x = torch.relu(self.c(torch.relu(self.b(x))))
        return self.head(x.mean((2, 3)))


def test_group_that_does_not_validate_is_skipped():
    model = _FixedWidthNet().eval()
    g = cg.trace(model, (1, 3, 4, 4))
    bad = _group_with(g, "a.out")
    good = _group_with(g, "b.out")
    rep = prune_units(g, _magnitude(g), 0.5)
    assert bad.id in rep.skipped and "does not validate" in rep.skipped[bad.id], rep.skipped
    assert bad.id not in rep.removed and good.id in rep.removed
    assert g.group(good.id).width == 4 and g.group(bad.id).width == 8
    assert g.module(torch.randn(1, 3, 4, 4)).shape == (1, 2)
    # the skipped group's units stay, zeroed and masked: the model is the masked one there
    ref = cg.trace(model, (1, 3, 4, 4))
    sal = _magnitude(ref)
    dead = {**rep.removed, bad.id: sorted(int(u) for u in np.argsort(sal.units[bad.id], kind="stable")[:4])}
    remove_units(ref, dead, shrink=False)
    gone = torch.as_tensor(dead[bad.id])
    w, bias = g.module.a.weight.detach(), g.module.a.bias.detach()
    assert float(w[gone].abs().max()) == 0 and float(bias[gone].abs().max()) == 0
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref.module(x), g.module(x)
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def test_swin_t_resizable_fraction():
    """Swin-T (torchvision, where installed): >= 80% of its conv/linear output channels lie in
    resizable groups (measured: 97.6%, main before issue 16: 66.2%; the classifier's 1000 outputs
    are the rest)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("tv", path / "tv.py")
    tv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tv)
    torchvision = tv.import_torchvision()
    if torchvision is None:
        pytest.skip("torchvision is not installed")
    import sys

    sys.path.insert(0, str(path))
    try:
        from swin_coverage import resizable_fraction
    finally:
        sys.path.remove(str(path))
    model = torchvision.models.swin_t().eval()
    g = cg.trace(model, (1, 3, 224, 224))
    res, tot = resizable_fraction(g, model)
    assert res / tot >= 0.8, f"{res}/{tot}"
