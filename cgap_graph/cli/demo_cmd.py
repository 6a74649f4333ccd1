"""``cgap-graph demo``: the whole path in seconds, with nothing to download: seed, grow, prune,
fine-tune, export to ONNX, FPGA cost."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import typer

from cgap_graph import zoo
from cgap_graph.cli.common import console, run_command
from cgap_graph.cli.train_cmd import _print_run
from cgap_graph.errors import check_number
from cgap_graph.io.atomic import atomic_write_text
from cgap_graph.io.model_io import load_model
from cgap_graph.ir.graph import trace
from cgap_graph.passes.cgap.seed import seed as seed_pass
from cgap_graph.passes.export import export_onnx
from cgap_graph.passes.fpga.cost import cost_onnx
from cgap_graph.run.config import TrainConfig
from cgap_graph.run.loop import train_run

SHAPE = (1, 1, 28, 28)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", metavar="DIR", help="Where to write the demo run."),
    epochs: int = typer.Option(10, "--epochs", metavar="N", help="Epochs (the demo takes about 1 s per epoch)."),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Replace an earlier demo run in --out "
                                   "(default), or refuse to."),
):
    """A short CGaP run on LeNet-5 with the built-in MNIST subset: nothing else needed.

    Starts from a seed a quarter of LeNet-5's widths, grows it twice, prunes it three times,
    fine-tunes, and writes the model, its metrics, plots and checkpoint to OUT; then exports the
    model to OUT/model.onnx (checked against PyTorch) and costs it on the paper's FPGA setup.
    """
    def body():
        check_number("epochs", epochs, 1, 1000)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # same figures on any thread count (other vector widths round differently)
        try:
            _run(epochs, out, overwrite)
        finally:
            torch.set_num_threads(threads)
    run_command(body)


def _run(epochs: int, out: Path, overwrite: bool) -> None:
    """Seed, train with CGaP, export, cost."""
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, lr_decay_every=0.5, f_growth=0.5, beta=0.6,
                      prune_start=0.6, prune_end=0.8, tau_accu=0.8, gamma_w=0.3, saliency_batches=4,
                      eval_batch_size=500).validate()
    torch.manual_seed(0)
    cg = trace(zoo.build("lenet5"), SHAPE)
    rep = seed_pass(cg, 0.25, select="first", reinit=True)
    console.print("[bold]cgap-graph demo[/bold]: LeNet-5 seed (a quarter of 20-50-500-10) on the built-in "
                  "MNIST subset (3,000 training / 1,000 test images)")
    res = train_run(cg.module, SHAPE, "mnist-mini", out, cfg, reference_widths=rep.reference_widths,
                    console=console, meta={"model": "lenet5", "dataset": "mnist-mini"}, overwrite=overwrite)
    _print_run(res)
    _deploy(out)


def _deploy(out: Path) -> None:
    """The demo's last step: the trained model to ONNX, and its FPGA cost next to LeNet-5's."""
    trained = load_model(str(out / "model.pt"))
    rep = export_onnx(trained.model, SHAPE, out / "model.onnx", meta=trained.meta)
    console.print(f"wrote {out / 'model.onnx'} (ONNX Runtime vs PyTorch: max |diff| {rep.max_abs_diff:.1e})",
                  markup=False)
    small = cost_onnx(out / "model.onnx", name="CGaP LeNet-5")
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(zoo.build("lenet5"), SHAPE, Path(tmp) / "lenet5.onnx")
        base = cost_onnx(Path(tmp) / "lenet5.onnx", name="LeNet-5")
    atomic_write_text(out / "fpga_cost.json", small.to_json() + "\n")
    tb, ts = base.totals(), small.totals()

    def pct(k: str) -> str:
        return f"{100 * (ts[k] / tb[k] - 1):+.0f}%"
    console.print(f"FPGA cost per inference (paper's setup, 300 MHz): latency {ts['latency_ms'] * 1e3:.1f} us "
                  f"({pct('latency_ms')} vs LeNet-5), DRAM energy {ts['dram_energy_pj'] * 1e-6:.2f} uJ "
                  f"({pct('dram_energy_pj')}), buffer energy {ts['buffer_energy_pj'] * 1e-6:.2f} uJ "
                  f"({pct('buffer_energy_pj')}); wrote {out / 'fpga_cost.json'}", markup=False)
