"""Tracing leaves the user's model exactly as it found it (issue 16): parameters, buffers and
every submodule's Python attributes compare equal before and after ``cg.trace`` (tensors by
identity and value, containers recursively), and tracing twice gives the same graph. A model
that caches an attention bias in a dict on first call (efficient mobile-ViT designs) keeps an
empty cache, traces twice to the same graph and prunes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coupling_models import MODELS, zoo_and_coupling_cases
from torch import nn

import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.passes.cgap.prune import prune_units
from cgap_graph.passes.cgap.saliency import saliency
from cgap_graph.verify import masked_vs_shrunk

_PRIMITIVE = (int, float, str, bool, type(None), complex, bytes)


def _fp(obj, depth=0):
    """A comparable fingerprint: tensors by identity and value, containers recursively,
    primitives by value, everything else by identity."""
    if isinstance(obj, torch.Tensor):
        return ("T", id(obj), obj.detach().clone() if not obj.is_meta else obj.shape)
    if isinstance(obj, _PRIMITIVE):
        return ("P", type(obj), obj)
    if depth < 8 and isinstance(obj, dict):
        return ("D", id(obj), {k: _fp(v, depth + 1) for k, v in obj.items()})
    if depth < 8 and isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return ("L", id(obj), type(obj), [_fp(v, depth + 1) for v in items])
    return ("O", id(obj))


def _equal(a, b, where=""):
    assert type(a) is type(b) and a[0] == b[0], f"{where}: changed"
    if a[0] == "T":
        assert a[1] == b[1], f"{where}: tensor replaced"
        same = torch.equal(a[2], b[2]) if isinstance(a[2], torch.Tensor) else a[2] == b[2]
        assert same, f"{where}: tensor values changed"
    elif a[0] == "D":
        assert a[1] == b[1] and a[2].keys() == b[2].keys(), f"{where}: dict changed ({set(a[2]) ^ set(b[2])})"
        for k in a[2]:
            _equal(a[2][k], b[2][k], f"{where}.{k}")
    elif a[0] == "L":
        assert a[:3] == b[:3] and len(a[3]) == len(b[3]), f"{where}: container changed"
        for i, (x, y) in enumerate(zip(a[3], b[3])):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a} -> {b}"


def _state(model):
    return {name: _fp(vars(m)) for name, m in model.named_modules()}


def _cases():
    return zoo_and_coupling_cases()


def _build(case):
    kind, name = case
    if kind == "zoo":
        return zoo.build(name, width=0.25 if name.startswith(("vgg", "resnet110")) else 0.5), zoo.input_shape(name), {}
    factory, shape, dtype = MODELS[name]
    return factory(), shape, {"input_dtype": dtype}


def _graph_key(g):
    return str(g.graph), [(grp.width, grp.status()) for grp in g.groups]


@pytest.mark.parametrize("case", list(_cases()))
def test_trace_leaves_model_unchanged(case):
    model, shape, kw = _build(case)
    before = _state(model)
    g1 = cg.trace(model, shape, **kw)
    after = _state(model)
    assert before.keys() == after.keys()
    for name in before:
        _equal(before[name], after[name], name or "<root>")
    assert _graph_key(cg.trace(model, shape, **kw)) == _graph_key(g1), "tracing twice gave another graph"


class CachedBiasAttention(nn.Module):
    """Attention whose per-head relative-position bias is gathered once and cached in a dict."""

    def __init__(self, d: int = 16, heads: int = 2, n: int = 16) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.table = nn.Parameter(torch.randn(heads, 2 * n - 1))
        rel = torch.arange(n)[:, None] - torch.arange(n)[None, :] + n - 1
        self.register_buffer("idx", rel, persistent=False)
        self.cache: dict[str, torch.Tensor] = {}

    def bias(self, key: str) -> torch.Tensor:
        if key not in self.cache:
            self.cache[key] = self.table[:, self.idx]
        return self.cache[key]

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        a = (q @ k.transpose(-2, -1)) * 0.25 + self.bias(str(x.device))
        return self.proj((F.softmax(a, -1) @ v).transpose(1, 2).flatten(2))


class CachedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.attn, self.head = nn.Linear(8, 16), CachedBiasAttention(), nn.Linear(16, 4)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(1)
        x = self.emb(x)
        return self.head((x + self.attn(x)).mean(1))


def test_forward_cache_restored_and_reported():
    model = CachedNet().eval()
    cache = model.attn.cache
    g1 = cg.trace(model, (1, 16, 8))
    assert model.attn.cache is cache and cache == {} and model.calls == []
    assert set(g1.traced.restored) == {"attn.cache", "calls"}
    g2 = cg.trace(model, (1, 16, 8))
    assert _graph_key(g2) == _graph_key(g1)
    x = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)  # eager: fills the cache with a real tensor
    assert isinstance(cache["cpu"], torch.Tensor) and not isinstance(cache["cpu"], nn.Parameter)
    cache.clear()
    rep = prune_units(g2, saliency(g2, mode="magnitude"), 0.5)
    assert rep.removed
    with torch.no_grad():
        assert g2.module.eval()(x).shape == ref.shape
    rng = np.random.default_rng(0)
    for grp in g1.groups:
        if grp.prunable:
            drop = rng.choice(grp.width, size=max(1, grp.width // 2), replace=False)
            diff = masked_vs_shrunk(model, (1, 16, 8), grp.id, drop, inputs=[x])
            assert diff <= 1e-5 * float(ref.abs().max()), f"group {grp.id}: {diff:.2e}"


class CountingLeaf(nn.Module):
    """A user layer kept as a leaf whose forward writes Python state (a call counter)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def forward(self, x):
        self.n += 1
        return x * 2


class CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.count, self.b, self.c = nn.Conv2d(3, 8, 3), CountingLeaf(), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.count(self.a(x)))))


def test_validation_guards_state_only_where_user_code_runs():
    from cgap_graph.surgery.validate import _only_builtin_layers
    g = cg.trace(zoo.build("resnet20").eval(), zoo.input_shape("resnet20"))
    assert _only_builtin_layers(g.module)  # the re-trace runs no user Python: no guard needed
    g = cg.trace(CountingNet().eval(), (1, 3, 12, 12), leaf_modules=["count"])
    assert not _only_builtin_layers(g.module)
    # no folding probe (a real forward); the one run of the layer's code is the validation re-trace
    rep = prune_units(g, saliency(g, mode="magnitude"), 0.5, fold=False)
    assert rep.removed and g.module.get_submodule("count").n == 0


def test_builtin_layers_written_by_other_code_are_restored():
    """What a parent's forward assigns onto a built-in layer (whose own forward never runs in a
    trace), or appends to a list one holds, is put back."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
            self.b.seen = []

        def forward(self, x):
            y = self.a(x)
            self.a.last = y  # a parent writing onto a built-in layer
            self.b.seen.append(y)  # ... and into a list one holds
            return self.b(y)

    model = Net()
    before = _state(model)
    g = cg.trace(model, (1, 3, 8, 8))
    assert {"a.last", "b.seen"} <= set(g.traced.restored)
    after = _state(model)
    for name in before:
        _equal(before[name], after[name], name or "<root>")
    assert model.b.seen == [] and not hasattr(model.a, "last")
