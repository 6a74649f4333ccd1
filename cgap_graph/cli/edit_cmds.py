"""``cgap-graph grow``, ``prune`` and ``seed``: one structural step on a model file, written to -o."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import typer
from rich.markup import escape
from rich.table import Table

from cgap_graph.cli.common import (
    DEVICE,
    MODEL_OPTIONS,
    OUTPUT,
    SEED_MODEL_OPTIONS,
    ModelRequest,
    choice,
    console,
    keyword,
    parse_device,
    run_command,
    with_options,
)
from cgap_graph.cli.report import fmt_count
from cgap_graph.errors import CgapError, check_number
from cgap_graph.io.model_io import save_model
from cgap_graph.io.outputs import check_output
from cgap_graph.ir.graph import ChannelGraph
from cgap_graph.passes.cgap.budget import budget_prune, parse_budget
from cgap_graph.passes.cgap.grow import check_growth, check_rates
from cgap_graph.passes.cgap.grow import grow as grow_pass
from cgap_graph.passes.cgap.prune import prune as prune_pass
from cgap_graph.passes.cgap.prune import prune_units
from cgap_graph.passes.cgap.saliency import Saliency, saliency
from cgap_graph.passes.cgap.seed import capacity_by_id, group_key
from cgap_graph.passes.cgap.seed import seed as seed_pass
from cgap_graph.passes.cgap.widths import check_round_to
from cgap_graph.passes.fpga.config import load_hw_config
from cgap_graph.run.sources import check_source, make_loader, open_source
from cgap_graph.run.tasks import make_task

DATA = typer.Option(None, "--data", metavar="DATASET", help="Data for Taylor saliency: mnist, fashion-mnist, "
                    "cifar10 or mnist-mini (read from --data-dir or $CGAP_DATA_DIR); an image folder "
                    "(CLASS/IMAGE.png); an .npz or .pt file with x and y; or module:function returning (train, test) "
                    "datasets or loaders.")
LOSS = typer.Option("cross-entropy", "--loss", metavar="LOSS", help="Loss the Taylor saliency differentiates: "
                    "cross-entropy, pixel-cross-entropy (segmentation), mse or module:function.")
VAL_SPLIT = typer.Option(0.2, "--val-split", metavar="F", help="Data without a test split: the seeded fraction held "
                         "out (the saliency uses the rest), as in train.")
DATA_DIR = typer.Option(None, "--data-dir", metavar="DIR", help="Folder holding the datasets.")
SELECT = typer.Option(None, "--select", metavar="HOW", help="taylor (default with --data), magnitude or random.")
BATCHES = typer.Option(10, "--batches", metavar="N", help="Batches of data for the saliency.")
BATCH_SIZE = typer.Option(64, "--batch-size", metavar="N", help="Images per saliency batch.")
SEED = typer.Option(0, "--seed", metavar="N", help="Random seed (noise, random selection).")
ROUND_TO = typer.Option("1", "--round-to", metavar="N|pof", help="Keep every resized width a multiple of N (e.g. 8), "
                        "or of the FPGA array's output parallelism (pof, from --hw-config or the paper's setup).")
HW_CONFIG = typer.Option(None, "--hw-config", metavar="FILE", help="TOML of FPGA parameters for fpga-* budgets and "
                         "--round-to pof (see docs/fpga_cost.md).")


def round_to_value(text: str, hw_config: Path | None = None) -> int:
    """``--round-to``: a whole number, or ``pof`` (the MAC array's output channels per cycle)."""
    if str(text).strip().lower() == "pof":
        return load_hw_config(hw_config).pof
    try:
        return check_round_to(int(text))
    except ValueError:
        raise CgapError(f"--round-to must be a whole number such as 8, or pof; got '{text}'") from None


@dataclass
class SaliencyOptions:
    """How a structural step scores units: Taylor on real batches (--data), magnitude or random."""

    data: str | None = None
    data_dir: str | None = None
    select: str | None = None
    batches: int = 10
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    loss: str = "cross-entropy"
    val_split: float = 0.2

    def scores(self, cg: ChannelGraph) -> tuple[Saliency, str]:
        select = self.select or ("taylor" if self.data else None)
        if select is None:
            raise CgapError("give --data DATASET (Taylor saliency on real batches) or --select magnitude|random")
        choice(select, "--select", ("taylor", "magnitude", "random"))
        if select != "taylor":
            return saliency(cg, mode=select, generator=torch.Generator().manual_seed(self.seed)), select
        if not self.data:
            raise CgapError("--select taylor needs --data DATASET (a built-in name, an image folder, an .npz/.pt "
                            "file or module:function)")
        check_number("batches", self.batches, 1, meaning="batches of data for the saliency")
        check_number("batch_size", self.batch_size, 1, 65536, meaning="images per saliency batch")
        check_number("val_split", self.val_split, 0.0, 1.0, lo_open=True, hi_open=True)
        task = make_task(self.loss)
        shape = tuple(cg.input_specs[0].shape)
        src = open_source(self.data, shape, data_dir=self.data_dir, val_split=self.val_split, seed=self.seed)
        check_source(src, shape, cg.output_shapes(), task)
        batches = make_loader(src, "train", self.batch_size, seed=self.seed)
        return saliency(cg, batches, batches=self.batches, loss_fn=task.loss), select


SALIENCY_OPTIONS = ([keyword("data", DATA, str | None), keyword("data_dir", DATA_DIR, str | None),
                     keyword("select", SELECT, str | None), keyword("batches", BATCHES, int),
                     keyword("batch_size", BATCH_SIZE, int), keyword("seed", SEED, int),
                     keyword("device", DEVICE, str), keyword("loss", LOSS, str),
                     keyword("val_split", VAL_SPLIT, float)],
                    SaliencyOptions)


def print_change(cg: ChannelGraph, title: str, widths_before: dict[int, int], params_before: int, flops_before: int,
                 notes: list[str] = ()) -> None:
    console.print(f"[bold]{escape(title)}[/bold]")
    table = Table(header_style="bold")
    for col in ("group", "first producer", "width", "status"):
        table.add_column(col, justify="right" if col in ("group", "width") else "left")
    for g in cg.groups:
        before = widths_before.get(g.id, g.width)
        width = f"{before}" if before == g.width else f"{before} -> [bold]{g.width}[/bold]"
        status = "frozen: " + g.frozen if g.frozen else ("changed" if before != g.width else "")
        table.add_row(str(g.id), escape(group_key(g)), width, escape(status))
    console.print(table)
    params, flops = cg.param_count(), cg.flops()
    console.print(f"parameters {params_before:,} -> {params:,} ({fmt_count(params)})   FLOPs {fmt_count(flops_before)} "
                  f"-> {fmt_count(flops)}")
    for n in notes:
        console.print(f"[yellow]note[/yellow]: {escape(n)}")


def save_result(cg: ChannelGraph, loaded, req: ModelRequest, output: Path, step: dict,
                capacity: dict | None = None) -> None:
    meta = dict(loaded.meta)
    meta["input_shape"] = list(cg.input_specs[0].shape)
    meta["widths"] = {str(g.id): g.width for g in cg.groups}
    meta["history"] = list(meta.get("history", [])) + [step]
    if capacity is not None:
        meta["capacity"] = capacity
    cg.module.cpu()
    kind = save_model(cg.module, output, meta=meta, inputs=req.inputs)
    console.print(f"wrote {escape(str(output))}" + (" (pickled: custom modules; load it with --trust)"
                                                     if kind == "pickle" else ""))


OUTPUT_OPTION = ([keyword("output", OUTPUT, Path)], lambda output: output)
# grow and prune: MODEL, how to score its units, where to write the result
edit_command = with_options(req=MODEL_OPTIONS, sal=SALIENCY_OPTIONS, output=OUTPUT_OPTION)


def _open(req: ModelRequest, sal: SaliencyOptions, output: Path):
    """Check the output and device, load and trace MODEL, score its units."""
    dev = parse_device(sal.device)
    check_output(output, req.inputs)
    loaded, cg, _ = req.trace()
    cg.module.to(dev)
    scores, how = sal.scores(cg)
    return loaded, cg, scores, how


def _state(cg: ChannelGraph) -> tuple[dict[int, int], int, int]:
    return {g.id: g.width for g in cg.groups}, cg.param_count(), cg.flops()


@edit_command
def grow(
    req: ModelRequest, sal: SaliencyOptions, output: Path,
    beta: float = typer.Option(0.6, "--beta", metavar="BETA", help="Growth ratio: each group gains round(BETA x "
                               "width) units, copies of its most salient ones (above 1: several copies each; at "
                               "most 10)."),
    init: str = typer.Option("paper", "--init", metavar="INIT", help="paper (Eq. 5-10), preserve (outputs "
                             "unchanged) or random."),
    sigma: float = typer.Option(0.5, "--sigma", metavar="S", help="Scaling factor of the paper initialiser."),
    mu: float = typer.Option(0.1, "--mu", metavar="MU", help="Noise range U(-MU, MU) of the paper initialiser."),
    capacity_mode: str = typer.Option("stop", "--capacity-mode", metavar="MODE", help="At the capacity limit "
                                      "(stored by 'seed'): stop (paper) or clip."),
    no_capacity: bool = typer.Option(False, "--no-capacity", help="Ignore a capacity limit stored in MODEL."),
    round_to: str = ROUND_TO,
    hw_config: Path | None = HW_CONFIG,
):
    """Grow MODEL (Algorithm 2): duplicate the most salient units of every growable group.

    \b
        cgap-graph grow model.pt --beta 0.6 --data cifar10 -o grown.pt
        cgap-graph grow seed.pt --beta 0.6 --select magnitude --init preserve -o grown.pt
    """
    def body():
        choice(init, "--init", ("paper", "preserve", "random"))
        choice(capacity_mode, "--capacity-mode", ("stop", "clip"))
        check_growth(beta, sigma, mu)
        step = round_to_value(round_to, hw_config)
        loaded, cg, scores, how = _open(req, sal, output)
        before, p0, f0 = _state(cg)
        cap = None if no_capacity else loaded.meta.get("capacity")
        rep = grow_pass(cg, scores, beta, init=init, sigma=sigma, mu=mu, capacity=capacity_by_id(cg, cap),
                        capacity_mode=capacity_mode, seed=sal.seed, round_to=step)
        notes = [f"group {gid} not grown: {why}" for gid, why in rep.skipped.items()]
        print_change(cg, f"grow {req.model}: beta {beta}, init {init}, saliency {how}", before, p0, f0, notes)
        save_result(cg, loaded, req, output, {"step": "grow", "beta": beta, "init": init, "sigma": sigma, "mu": mu,
                                              "saliency": how, "data": sal.data}, cap)
    run_command(body)


@edit_command
def prune(
    req: ModelRequest, sal: SaliencyOptions, output: Path,
    weight_rate: float = typer.Option(0.5, "--weight-rate", metavar="RATE", help="gamma_W: fraction of weights "
                                      "zeroed per layer, in (0, 1)."),
    unit_rate: float = typer.Option(0.5, "--unit-rate", metavar="RATE", help="gamma_F/gamma_N: a unit sparser than "
                                    "this is removed (with --mode units: the fraction of units removed per group)."),
    mode: str = typer.Option("alg3", "--mode", metavar="MODE", help="alg3 (weights, then sparse units) or units "
                             "(the lowest-scoring units)."),
    no_fold: bool = typer.Option(False, "--no-fold", help="Do not fold removed units' constants into readers."),
    budget: str | None = typer.Option(None, "--budget", metavar="METRIC=VALUE", help="Prune to a deployment budget "
                                      "instead of rates: params=9500, flops=0.5M, fpga-latency=1.5ms, "
                                      "fpga-energy=20uJ (FPGA cost model, --hw-config) or ort-latency=2ms@BATCH "
                                      "(measured with ONNX Runtime here). Units with the lowest saliency per unit "
                                      "of that cost go first."),
    round_to: str = ROUND_TO,
    hw_config: Path | None = HW_CONFIG,
):
    """Prune MODEL (Algorithm 3, or to a budget) and remove the pruned units physically.

    \b
        cgap-graph prune model.pt --weight-rate 0.5 --unit-rate 0.5 --data mnist -o small.pt
        cgap-graph prune model.pt --mode units --unit-rate 0.3 --select magnitude -o small.pt
        cgap-graph prune model.pt --budget fpga-latency=1.5ms --round-to 8 --data cifar10 -o small.pt
    """
    def body():
        choice(mode, "--mode", ("alg3", "units"))
        check_rates(**({"weight_rate": weight_rate} if mode == "alg3" else {}), unit_rate=unit_rate)
        step = round_to_value(round_to, hw_config)
        target = parse_budget(budget, load_hw_config(hw_config)) if budget else None
        loaded, cg, scores, how = _open(req, sal, output)
        before, p0, f0 = _state(cg)
        notes, rep = _prune(cg, scores, target, mode, weight_rate, unit_rate, not no_fold, step)
        print_change(cg, f"prune {req.model}: {budget or mode}, saliency {how}", before, p0, f0, notes)
        save_result(cg, loaded, req, output, {"step": "prune", "mode": "budget" if budget else mode,
                                              "budget": budget, "weight_rate": weight_rate, "unit_rate": unit_rate,
                                              "round_to": step, "saliency": how, "data": sal.data},
                    loaded.meta.get("capacity"))
    run_command(body)


def _prune(cg, scores, budget, mode: str, weight_rate: float, unit_rate: float, fold: bool, step: int):
    """One pruning step of the command; the notes it prints."""
    if budget is not None:
        res = budget_prune(cg, scores, budget, round_to=step, fold=fold)
        reports = res.prune
        notes = [f"budget {budget}: {res.before:.4g} -> {res.after:.4g} in {res.steps} steps"]
    else:
        rep = (prune_pass(cg, scores, weight_rate, unit_rate, fold=fold, round_to=step) if mode == "alg3"
               else prune_units(cg, scores, unit_rate, fold=fold, round_to=step))
        reports = [rep]
        notes = [f"zeroed {rep.weights_zeroed:,} of {rep.weights_total:,} weights"] if rep.weights_total else []
    for rep in reports:
        notes += rep.folded + [f"not folded: {n}" for n in rep.not_folded]
        notes += [f"group {gid} not removed (its units stay, zeroed): {why}" for gid, why in rep.skipped.items()]
    return notes, reports


@with_options(req=SEED_MODEL_OPTIONS)
def seed_cmd(
    req: ModelRequest,
    output: Path = OUTPUT,
    width: float = typer.Option(..., "--width", metavar="W", help="Width multiplier in (0, 1]: the paper's seeds "
                                "use 0.125."),
    select: str = typer.Option("magnitude", "--select", metavar="HOW", help="Which units to keep: magnitude or "
                               "first."),
    reinit: bool = typer.Option(False, "--reinit", help="Draw fresh parameters (train the seed from scratch)."),
    round_to: str = ROUND_TO,
    hw_config: Path | None = HW_CONFIG,
):
    """Make a seed: shrink every prunable group of MODEL to WIDTH of its size.

    The reference widths are stored in the seed as the capacity limit for later growth.

    \b
        cgap-graph seed vgg19 --width 0.125 -o seed.pt
    """
    def body():
        check_number("width", width, 0.0, 1.0, lo_open=True, meaning="the paper's seeds use 0.125")
        choice(select, "--select", ("magnitude", "first"))
        step = round_to_value(round_to, hw_config)
        check_output(output, req.inputs)
        loaded, cg, _ = req.trace()
        before, p0, f0 = _state(cg)
        rep = seed_pass(cg, width, select=select, reinit=reinit, round_to=step)
        print_change(cg, f"seed {req.model}: width {width}", before, p0, f0)
        save_result(cg, loaded, req, output, {"step": "seed", "width": width, "select": select, "reinit": reinit},
                    rep.reference_widths)
    run_command(body)
