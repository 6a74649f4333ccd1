"""A surgery prints no warning of its own: prune, grow and carrying the optimizer over, in a fresh
process (torch warns once per process, so an earlier test could hide it), with every warning an error."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import torch
import cgap_graph as cg
from cgap_graph import zoo
from cgap_graph.passes.cgap.grow import grow
from cgap_graph.passes.cgap.optim import carry_optimizer
from cgap_graph.passes.cgap.prune import prune_units
from cgap_graph.passes.cgap.saliency import saliency
g = cg.trace(zoo.build("resnet20"), (1, 3, 32, 32))
opt = torch.optim.SGD(g.module.parameters(), lr=0.1, momentum=0.9)
g.module(torch.randn(2, 3, 32, 32)).sum().backward()
opt.step()
rep = prune_units(g, saliency(g, mode="magnitude"), 0.5)
opt = carry_optimizer(opt, g.module, rep.surgery)
rep = grow(g, saliency(g, mode="magnitude"), 0.6, init="preserve")
opt = carry_optimizer(opt, g.module, rep.surgery)
print(sum(p.numel() for p in g.module.parameters()))
"""


def test_prune_grow_and_optimizer_carry_over_warn_nothing():
    out = subprocess.run([sys.executable, "-W", "error", "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Warning" not in out.stderr
    assert int(out.stdout.split()[-1]) > 0


def test_a_dataset_file_from_another_pickle_protocol_loads_without_torch_warning(tmp_path):
    """Found by `benchmarks/fuzz_cli.py --cases 5000` (2026-12-03): a `.pt` dataset whose pickle header
    names another protocol made torch warn on stderr (3 lines) before the run went on or failed."""
    import torch
    good = tmp_path / "good.pt"
    torch.save({"x": torch.rand(8, 1, 28, 28), "y": torch.arange(8) % 2}, good, _use_new_zipfile_serialization=False)
    raw = bytearray(good.read_bytes())
    assert raw[:2] == b"\x80\x02"
    raw[1] = 7  # the PROTO opcode's argument: "protocol 7"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    out = subprocess.run([sys.executable, "-m", "cgap_graph", "grow", "lenet5", "--data", str(bad), "--select",
                          "taylor", "-o", str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pickle protocol" not in out.stderr and "Warning" not in out.stderr, out.stderr
    assert (tmp_path / "out.pt").exists()
