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
