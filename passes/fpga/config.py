"""Hardware description of the FPGA accelerator the cost pass models, with TOML loading.

Defaults are the CGaP paper's setup (Sec. VI-A: 16-bit fixed point, 512-bit DRAM data width,
300 MHz, 19.2 GB/s) plus the numbers the paper leaves to Ma et al. (TCAD 2019) or to us:

- MAC array ``pox x poy x pof = 4 x 4 x 64 = 1,024`` MACs. Ma et al. unroll output columns, rows
  and channels (Pox, Poy, Pof); their Arria 10 designs use about 1,000-3,000 MACs. 4 x 4 divides
  every feature-map size of a 32x32 network except the last 2x2 stage, 64 divides every
  VGG/ResNet width except ResNet's first stage (16).
- On-chip buffers 1 MiB pixel + 2 MiB weight + 1 MiB output = 4 MiB, about 60% of the 6.6 MB of
  M20K memory of an Arria 10 GX 1150 (Ma et al.'s board). A tile of 64 filters of 3x3x512 16-bit
  weights (590 KB) fits half the weight buffer (double buffering).
- 16 cycles of overhead per DRAM transfer (DMA descriptor, row activation): our assumption.
- Energies from Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm), as tabulated by Han
  et al. (NIPS 2015): a 32-bit DRAM access 640 pJ -> 20 pJ/bit; a 32-bit access to a small (8 KB)
  SRAM 5 pJ -> 0.156 pJ/bit (FPGA buffers are built from 2.5 KB M20K banks, so every access
  touches one small bank); a 16-bit fixed-point MAC ~0.9 pJ (multiplier interpolated
  quadratically between Horowitz's 8-bit 0.2 pJ and 32-bit 3.1 pJ, plus a 32-bit add 0.1 pJ).

Any field can be overridden in a TOML file (top level or a ``[fpga]`` table); the others keep
their defaults. Every value is checked: an unknown key, a missing, non-numeric, zero or negative
value is a one-line ``CgapError`` naming the key and the fix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from cgap_graph.errors import CgapError

SPARSE_FORMATS = ("zero-bursts", "csr")


@dataclass(frozen=True)
class HwConfig:
    """One FPGA accelerator: arithmetic, DRAM, MAC array, buffers and per-access energies."""

    data_bits: int = 16  # pixels and weights, fixed point (paper Sec. VI-A)
    dram_width_bits: int = 512  # DRAM controller data width (paper)
    freq_mhz: float = 300.0  # accelerator clock (paper)
    dram_bandwidth_gbs: float = 19.2  # GB/s (paper)
    mac_units: int = 1024  # DSP MACs available; pox * poy * pof must not exceed it
    pox: int = 4  # output columns computed in parallel
    poy: int = 4  # output rows computed in parallel
    pof: int = 64  # output channels computed in parallel
    pixel_buffer_kib: int = 1024
    weight_buffer_kib: int = 2048
    output_buffer_kib: int = 1024
    dram_overhead_cycles: int = 16  # fixed cycles per DRAM transfer (ours)
    dram_pj_per_bit: float = 20.0  # Horowitz 2014: 640 pJ per 32-bit DRAM access
    buffer_pj_per_bit: float = 0.15625  # Horowitz 2014: 5 pJ per 32-bit access to an 8 KB SRAM
    mac_pj: float = 0.9  # one 16-bit multiply-accumulate (see module docstring)
    sparse_format: str = "zero-bursts"  # weight storage in --unstructured mode: zero-bursts | csr
    sparse_index_bits: int = 4  # csr: relative index bits per stored weight (EIE, Han et al. ISCA 2016)

    def __post_init__(self) -> None:
        validate(self)

    # ---- derived quantities --------------------------------------------------------------------
    @property
    def data_bytes(self) -> int:
        return self.data_bits // 8

    @property
    def word_bytes(self) -> int:
        """Bytes of one DRAM word (one access of the DRAM controller)."""
        return self.dram_width_bits // 8

    @property
    def freq_hz(self) -> float:
        return self.freq_mhz * 1e6

    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bytes per accelerator cycle: 19.2 GB/s at 300 MHz is 64 B, one 512-bit word."""
        return self.dram_bandwidth_gbs * 1e9 / self.freq_hz

    @property
    def array_macs(self) -> int:
        return self.pox * self.poy * self.pof

    def buffer_bytes(self, which: str) -> int:
        return getattr(self, f"{which}_buffer_kib") * 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_INT_FIELDS = {f.name for f in fields(HwConfig) if f.type == "int"}
_STR_FIELDS = {f.name for f in fields(HwConfig) if f.type == "str"}


def _fail(key: str, problem: str, fix: str) -> None:
    raise CgapError(f"hardware config: {key} {problem}; {fix}")


def validate(cfg: HwConfig) -> None:
    """Check every field; raise a one-line CgapError naming the first bad one and the fix."""
    defaults = {f.name: f.default for f in fields(HwConfig)}
    for f in fields(HwConfig):
        value = getattr(cfg, f.name)
        default = defaults[f.name]
        if f.name in _STR_FIELDS:
            if value not in SPARSE_FORMATS:
                _fail(f.name, f"is {value!r}", f"use one of {', '.join(SPARSE_FORMATS)}")
            continue
        if value is None or value == "":
            _fail(f.name, "has no value", f"give a positive number, e.g. {f.name} = {default}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(f.name, f"is {value!r}, not a number", f"give a positive number, e.g. {f.name} = {default}")
        if f.name in _INT_FIELDS and value != int(value):
            _fail(f.name, f"is {value}, not a whole number", f"give a positive integer, e.g. {f.name} = {default}")
        if f.name == "dram_overhead_cycles":
            if value < 0:
                _fail(f.name, f"is {value}", f"give 0 or more cycles, e.g. {f.name} = {default}")
        elif value <= 0:
            _fail(f.name, f"is {value}", f"give a positive number, e.g. {f.name} = {default}")
    if cfg.data_bits % 8:
        _fail("data_bits", f"is {cfg.data_bits}", "use a whole number of bytes, e.g. 8 or 16")
    if cfg.dram_width_bits % cfg.data_bits:
        _fail("dram_width_bits", f"({cfg.dram_width_bits}) is not a multiple of data_bits ({cfg.data_bits})",
              "use e.g. dram_width_bits = 512 with data_bits = 16")
    if cfg.pox * cfg.poy * cfg.pof > cfg.mac_units:
        _fail("pox * poy * pof", f"= {cfg.pox * cfg.poy * cfg.pof} exceeds mac_units = {cfg.mac_units}",
              "lower the unrolling or raise mac_units")


def config_from_dict(values: dict[str, Any], source: str = "hardware config") -> HwConfig:
    """A config from a mapping of overrides: unknown keys are errors, missing keys keep defaults."""
    known = {f.name for f in fields(HwConfig)}
    for key in values:
        if key not in known:
            raise CgapError(f"{source}: unknown key '{key}'; valid keys: {', '.join(sorted(known))}")
    values = {k: int(v) if k in _INT_FIELDS and isinstance(v, float) and v.is_integer() else v
              for k, v in values.items()}
    return HwConfig(**values)


def load_hw_config(path: str | Path | None) -> HwConfig:
    """The defaults, overridden by a TOML file (top level, or a ``[fpga]`` table)."""
    if path is None:
        return HwConfig()
    path = Path(path)
    if not path.is_file():
        raise CgapError(f"hardware config {path} does not exist; give a TOML file, e.g. --config fpga.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CgapError(f"hardware config {path} is not a text file; give a TOML file of key = value lines") from None
    except tomllib.TOMLDecodeError as exc:
        raise CgapError(f"hardware config {path} is not valid TOML ({exc}); write key = value, "
                        "e.g. pof = 64") from None
    if "fpga" in data:
        if not isinstance(data["fpga"], dict) or len(data) > 1:
            raise CgapError(f"hardware config {path}: put every key in the [fpga] table or all at the top level")
        data = data["fpga"]
    for key, value in data.items():
        if isinstance(value, dict):
            raise CgapError(f"hardware config {path}: unknown table [{key}]; put keys at the top level or in [fpga]")
    return config_from_dict(data, f"hardware config {path}")
