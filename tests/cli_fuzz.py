"""Fuzz cases for the command line: hostile and careless input of every kind it reads.

``FuzzBench(workdir)`` prepares valid files once (a saved model, an ONNX file, a TOML config, a
dataset folder); ``case(rng)`` draws one command from them: random bytes, truncated and bit-flipped
files of each kind, crafted hostile model files, random option values and shapes. ``check`` runs
it in-process and returns what went wrong, if anything: an exit code other than 0 or 2, more than
one line on stderr, a traceback, a payload that ran, a file written outside the output path, a
temporary file left behind. Used by ``tests/test_fuzz.py`` (bounded, in CI) and
``benchmarks/fuzz_cli.py`` (thousands of cases).
"""

from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from cli_harness import HOSTILE, Result, hostile_file, run_cli, saved_lenet
from PIL import Image

from cgap_graph import zoo
from cgap_graph.passes.export import export_onnx

NUMBERS = [0, -1, 1, 0.5, 1e-9, 1e9, 1e300, -0.0, float("inf"), float("-inf"), float("nan"), 2, 100, 3.5]
TEXTS = ["", "abc", "0x10", "1e", "--", "[train]", "1,2", "🙂", "nan", "-inf", " 1 "]


@dataclass
class Case:
    kind: str
    argv: list
    output: Path | None = None
    marker: Path | None = None


@dataclass
class Outcome:
    case: Case
    result: Result
    problems: list[str] = field(default_factory=list)


class FuzzBench:
    """Valid inputs to mutate, in ``workdir`` (left untouched between cases)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.inputs = self.dir / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.model = saved_lenet(self.inputs / "model.pt")
        self.onnx = self.inputs / "model.onnx"
        export_onnx(zoo.build("lenet5", width=0.25), (1, 1, 28, 28), self.onnx)
        self.toml = self.inputs / "cfg.toml"
        self.toml.write_text('[train]\nepochs = 3\nbeta = 0.6\ngamma-w = 0.5\n[train.gamma_w_layers]\nfc1 = 0.9\n')
        self.data = self.inputs / "data" / "mnist"
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "train-images-idx3-ubyte.gz").write_bytes(os.urandom(2048))
        # the user's own data (issue 13): arrays in both formats and one image to mutate
        x = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
        self.npz = self.inputs / "arrays.npz"
        np.savez(self.npz, x=x, y=np.arange(6) % 10)
        self.pt = self.inputs / "arrays.pt"
        torch.save({"x": torch.from_numpy(x)[:, None], "y": torch.arange(6)}, self.pt)
        self.png = self.inputs / "image.png"
        Image.fromarray(x[0]).save(self.png)
        self.count = 0

    # ---- mutations ------------------------------------------------------------------------------------
    def _mutated(self, src: Path, rng: random.Random, suffix: str) -> Path:
        data = bytearray(src.read_bytes())
        how = rng.choice(["truncate", "flip", "random", "empty", "zero_tail"])
        if how == "truncate":
            data = data[: rng.randrange(0, len(data))]
        elif how == "flip":
            for _ in range(rng.randint(1, 16)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif how == "random":
            data = bytearray(rng.randbytes(rng.randint(1, 4096)))
        elif how == "empty":
            data = bytearray()
        else:
            k = rng.randrange(len(data))
            data[k:] = bytes(len(data) - k)
        path = self.case_dir / f"in{suffix}"
        path.write_bytes(bytes(data))
        return path

    def _number(self, rng: random.Random) -> str:
        if rng.random() < 0.15:
            return rng.choice(TEXTS)
        x = rng.choice(NUMBERS) if rng.random() < 0.6 else rng.uniform(-5, 5)
        return repr(x) if not (isinstance(x, float) and math.isnan(x)) else "nan"

    def _shape(self, rng: random.Random) -> str:
        if rng.random() < 0.2:
            return rng.choice(TEXTS)
        dims = [rng.choice([0, -1, 1, 3, 28, 2**40, rng.randint(1, 64)]) for _ in range(rng.randint(1, 5))]
        return ",".join(map(str, dims))

    # ---- one case ---------------------------------------------------------------------------------------
    def case(self, rng: random.Random) -> Case:
        self.count += 1
        self.case_dir = self.dir / f"case{self.count}"
        self.case_dir.mkdir()
        out = self.case_dir / "out.pt"
        kind = rng.choice(["model_file", "hostile", "onnx_file", "toml_file", "dataset", "user_data", "options",
                           "shapes"])
        if kind == "model_file":
            cmd = rng.choice(["inspect", "grow", "prune", "export", "seed"])
            path = self._mutated(self.model, rng, ".pt")
            extra = {"inspect": [], "grow": ["--select", "magnitude"], "prune": ["--select", "magnitude"],
                     "export": [], "seed": ["--width", "0.5"]}[cmd]
            out = self.case_dir / ("out.onnx" if cmd == "export" else "out.pt")
            return Case(kind, [cmd, path, *extra] + ([] if cmd == "inspect" else ["-o", out]), out)
        if kind == "hostile":
            marker = self.case_dir / "PWNED"
            path = hostile_file(self.case_dir / "evil.pt", rng.choice(HOSTILE), marker)
            cmd = rng.choice(["inspect", "grow", "export"])
            extra = [] if cmd == "inspect" else (["--select", "magnitude"] if cmd == "grow" else []) + ["-o", out]
            return Case(kind, [cmd, path, *extra], out, marker)
        if kind == "onnx_file":
            path = self._mutated(self.onnx, rng, ".onnx")
            csv = self.case_dir / "layers.csv"
            return Case(kind, ["cost", path, "--csv", csv], csv)
        if kind == "toml_file":
            path = self._mutated(self.toml, rng, ".toml") if rng.random() < 0.7 else self._toml_values(rng)
            # cifar10 on LeNet-5's input: a valid config stops at the shape check, before training
            run = self.case_dir / "run"
            return Case(kind, ["train", "--config", path, "--dataset", "cifar10", "--out", run], run)
        if kind == "dataset":
            return Case(kind, ["grow", "lenet5", "--data", rng.choice(["mnist", "cifar10", "fashion-mnist", "x"]),
                               "--data-dir", self.inputs / "data", "-o", out], out)
        if kind == "user_data":
            return Case(kind, ["grow", "lenet5", "--data", self._user_data(rng), "-o", out], out)
        if kind == "options":
            return self._options_case(rng, out)
        return Case(kind, ["inspect", "lenet5", "--input-shape", self._shape(rng)])

    def _user_data(self, rng: random.Random) -> Path:
        """A damaged array file, or an image folder of damaged PNGs (some classes empty)."""
        form = rng.choice(["npz", "pt", "folder"])
        if form != "folder":
            return self._mutated(self.npz if form == "npz" else self.pt, rng, f".{form}")
        root = self.case_dir / "images"
        root.mkdir()
        for c in range(rng.randint(0, 3)):
            (root / f"c{c}").mkdir()
            for i in range(rng.randint(0, 3)):
                self._mutated(self.png, rng, ".png").rename(root / f"c{c}" / f"{i}.png")
        return root

    def _toml_values(self, rng: random.Random) -> Path:
        key = rng.choice(["epochs", "beta", "lr", "tau-accu", "gamma_w", "prune-target", "zero_survivors", "init",
                          "bogus", "gamma_w_layers"])
        value = rng.choice(['"ten"', "1e999", "-3", "true", "[1, 2]", "{a = 1}", "0.5", "nan", "inf", "'x'"])
        path = self.case_dir / "v.toml"
        path.write_text(f"[train]\n{key} = {value}\n")
        return path

    def _options_case(self, rng: random.Random, out: Path) -> Case:
        cmd = rng.choice(["grow", "prune", "seed", "train", "export", "inspect"])
        flags = {"grow": ["--beta", "--sigma", "--mu", "--width", "--batches"],
                 "prune": ["--weight-rate", "--unit-rate", "--width"],
                 "seed": ["--width", "--zoo-width"], "train": ["--epochs", "--lr", "--beta", "--seed-width"],
                 "export": ["--tolerance", "--opset", "--width"], "inspect": ["--width"]}[cmd]
        argv = [cmd, "lenet5"] if cmd != "train" else [cmd, "--dataset", "mnist-mini"]
        for flag in rng.sample(flags, rng.randint(1, len(flags))):
            argv += [flag, self._number(rng)]
        if cmd in ("grow", "prune"):
            argv += ["--select", "magnitude"]
        if cmd == "seed" and "--width" not in argv:
            argv += ["--width", "0.5"]
        if cmd == "train":  # never a real training run: the model does not fit the data
            argv += ["--out", self.case_dir / "run", "--input-shape", "1,3,8,8"]
            return Case("options", argv, self.case_dir / "run")
        if cmd == "export":
            out = self.case_dir / "out.onnx"
        return Case("options", argv + ([] if cmd == "inspect" else ["-o", out]), None if cmd == "inspect" else out)

    # ---- the check ----------------------------------------------------------------------------------------
    def check(self, case: Case) -> Outcome:
        before = set(self._files())
        result = run_cli(*case.argv)
        problems = []
        if result.code not in (0, 2):
            problems.append(f"exit code {result.code}")
        if len(result.err_lines) > 1:
            problems.append(f"{len(result.err_lines)} lines on stderr")
        if "Traceback" in result.err + result.out:
            problems.append("traceback")
        if case.marker is not None and case.marker.exists():
            problems.append("payload ran")
        new = set(self._files()) - before
        allowed = {case.output} if case.output is not None else set()
        stray = [p for p in new if not any(p == a or a in p.parents for a in allowed)]
        if stray:
            problems.append(f"wrote {sorted(map(str, stray))[:3]}")
        if any(p.name.endswith(".tmp") for p in self._files()):
            problems.append("temporary file left")
        shutil.rmtree(self.case_dir, ignore_errors=True)
        return Outcome(case, result, problems)

    def _files(self):
        return [p for p in self.dir.rglob("*") if p.is_file()]
