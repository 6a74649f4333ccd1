"""Cost one layer on the accelerator under a schedule, and search the schedule (Ma et al. style).

Loop unrolling (fixed by the hardware): ``pox x poy x pof`` MACs compute that many output columns,
rows and channels per cycle; the kernel and the input channels are walked sequentially, with the
partial sum kept in the MAC (output stationary). Tiling (searched per layer): a tile holds all
columns (Tox = Nox), ``toy`` rows (a multiple of Poy), ``tof`` output channels (a multiple of Pof)
and all input channels (Tif = Nif), so no partial sum ever leaves the chip.

Per tile (rows, channels = the tile's actual sizes):

    compute = Nky * Nkx * Nif/groups * ceil(Nox/Pox) * ceil(rows/Poy) * ceil(channels/Pof)
              (kernel sparsity: Nif/groups * ceil(channels/Pof) becomes the input-channel steps
              where some lane's kernel is non-zero, ``WeightStore.lane_steps``)
    read    = input rows incl. the halo of the kernel (inside the image) x Nix x Nif (a grouped conv:
              the input channels of the tile's groups only),
              + the tile's weights (+ biases), + its share of fused operands (residual Add)
    write   = the tile's share of the (pooled) output

Loop order (searched): ``rows`` keeps a row tile's pixels while every channel tile passes (pixels
read once, weights once per row tile); ``channels`` keeps a channel tile's weights while every row
tile passes (weights read once, pixels once per channel tile). With one channel tile the weights
are read once; with one row tile the pixels are read once, in both orders (a grouped conv reads
each channel tile's own input channels).

DRAM: each transfer moves whole ``dram_width_bits`` words at ``dram_bandwidth_gbs`` and costs
``dram_overhead_cycles`` more; reads and writes share the one DRAM port. Double buffering overlaps
the compute of tile i with the reads of tile i+1 and the write of tile i-1:

    latency = read_0 + sum_i max(compute_i, read_{i+1} + write_{i-1}) + write_last

so latency >= max(total compute, total DRAM time) (the roofline). A buffer that is reloaded needs
room for two tiles. Buffer accesses: the pixel buffer is read Pox*Poy words per compute cycle (one
read feeds Pof MACs), the weight buffer Pof words per cycle (one read feeds Pox*Poy MACs), every
output (and fused operand) is written to and read from the output buffer once, and every word
loaded from DRAM is written into its buffer once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from cgap_graph.passes.fpga.config import HwConfig
from cgap_graph.passes.fpga.graph import MacLayer, MemoryPass
from cgap_graph.passes.fpga.sparse import WeightStore

ORDERS = ("rows", "channels")


@dataclass(frozen=True)
class Schedule:
    """Tiling of one layer: ``toy`` rows x ``tof`` channels per tile, and the tile loop order."""

    toy: int
    tof: int
    order: str = "rows"


@dataclass
class LayerCost:
    """Cost of one layer (or memory pass) for one inference."""

    name: str
    op: str
    shape: str
    fused: list[str] = field(default_factory=list)
    macs: int = 0
    schedule: Schedule | None = None
    tiles: int = 0
    fits: bool = True
    compute_cycles: int = 0
    latency_cycles: int = 0
    latency_s: float = 0.0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    dram_words: int = 0
    dram_transfers: int = 0
    pixel_buffer_accesses: int = 0
    weight_buffer_accesses: int = 0
    output_buffer_accesses: int = 0
    buffer_energy_pj: float = 0.0
    dram_energy_pj: float = 0.0
    mac_energy_pj: float = 0.0
    weight_format: str = "dense"
    weight_zero_fraction: float | None = None
    note: str = ""

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes

    @property
    def buffer_accesses(self) -> int:
        return self.pixel_buffer_accesses + self.weight_buffer_accesses + self.output_buffer_accesses

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = None if self.schedule is None else asdict(self.schedule)
        return d


class _Dram:
    """Counts words, transfers and cycles of DRAM transfers."""

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        self.words = self.transfers = 0

    def cycles(self, nbytes: int) -> int:
        if nbytes <= 0:
            return 0
        cfg = self.cfg
        words = -(-nbytes // cfg.word_bytes)
        self.words += words
        self.transfers += 1
        return math.ceil(words * cfg.word_bytes / cfg.dram_bytes_per_cycle - 1e-9) + cfg.dram_overhead_cycles


def _split(total: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, total)) for a in range(0, total, step)]


def _share(total: int, part: int, whole: int) -> int:
    """``total * part / whole`` rounded up: a tile's share of a fused output or operand."""
    return -(-total * part // whole)


def cost_layer(layer: MacLayer, schedule: Schedule, cfg: HwConfig, store: WeightStore | None = None) -> LayerCost:
    """Cost of ``layer`` under a fixed ``schedule`` (see the module docstring for the equations)."""
    if schedule.toy % cfg.poy or schedule.tof % cfg.pof or schedule.toy <= 0 or schedule.tof <= 0:
        raise ValueError(f"toy must be a positive multiple of poy={cfg.poy} and tof of pof={cfg.pof}, "
                         f"got {schedule}")
    if schedule.order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {schedule.order!r}")
    store = store or WeightStore(layer, cfg)
    db = cfg.data_bytes
    row_tiles, chan_tiles = _split(layer.noy, schedule.toy), _split(layer.nof, schedule.tof)
    if schedule.order == "rows":
        tiles = [(r, c) for r in range(len(row_tiles)) for c in range(len(chan_tiles))]
    else:
        tiles = [(r, c) for c in range(len(chan_tiles)) for r in range(len(row_tiles))]
    whole = layer.noy * layer.nof
    rep = layer.repeat  # out_elems / extra_elems count every copy; the tiles below are one copy's
    out_total, extra_total = -(-layer.out_elems // rep), -(-layer.extra_elems // rep)
    lanes = min(cfg.pof, layer.groups)  # grouped conv: lanes of different groups read different pixels
    per_step = layer.nky * layer.nkx * math.ceil(layer.nox / cfg.pox)  # one input channel of pof lanes
    dram = _Dram(cfg)
    comp, reads, writes = [], [], []
    px_loads = w_loads = px_elems = w_elems = out_elems = 0
    read_bytes = write_bytes = 0
    prev_r = prev_c = None
    for r, c in tiles:
        (y0, y1), (c0, c1) = row_tiles[r], chan_tiles[c]
        rows, chans = y1 - y0, c1 - c0
        comp.append(per_step * math.ceil(rows / cfg.poy) * store.lane_steps(c0, c1, cfg.pof))
        cycles = 0
        if r != prev_r or (layer.groups > 1 and c != prev_c):  # new pixels (halo rows included)
            n = layer.in_rows(y0, y1) * layer.nix * layer.in_channels(c0, c1)
            px_loads, px_elems, read_bytes = px_loads + 1, px_elems + n, read_bytes + n * db
            cycles += dram.cycles(n * db)
        if c != prev_c:  # a new channel tile's weights
            nbytes = store.nbytes(c0, c1)
            w_loads, w_elems, read_bytes = w_loads + 1, w_elems + store.elems(c0, c1), read_bytes + nbytes
            cycles += dram.cycles(nbytes)
        extra = _share(extra_total, rows * chans, whole)
        read_bytes += extra * db
        cycles += dram.cycles(extra * db)
        reads.append(cycles)
        out = _share(out_total, rows * chans, whole)
        write_bytes += out * db
        writes.append(dram.cycles(out * db))
        out_elems += rows * layer.nox * chans + extra
        prev_r, prev_c = r, c
    n = len(tiles)
    latency = reads[0] + writes[-1]
    for i in range(n):
        latency += max(comp[i], (reads[i + 1] if i + 1 < n else 0) + (writes[i - 1] if i > 0 else 0))
    compute = sum(comp)
    fits = _fits(layer, schedule, cfg, store, row_tiles, chan_tiles, px_loads, w_loads, n)
    pixel_acc = px_elems + compute * cfg.pox * cfg.poy * lanes
    weight_acc = w_elems + compute * cfg.pof
    output_acc = 2 * out_elems
    buffers = pixel_acc + weight_acc + output_acc
    return LayerCost(
        name=layer.name, op=layer.op, shape=layer.describe(), fused=list(layer.fused), macs=layer.macs,
        schedule=schedule, tiles=n * rep, fits=fits, compute_cycles=compute * rep, latency_cycles=latency * rep,
        latency_s=latency * rep / cfg.freq_hz, dram_read_bytes=read_bytes * rep, dram_write_bytes=write_bytes * rep,
        dram_words=dram.words * rep, dram_transfers=dram.transfers * rep, pixel_buffer_accesses=pixel_acc * rep,
        weight_buffer_accesses=weight_acc * rep, output_buffer_accesses=output_acc * rep,
        buffer_energy_pj=buffers * rep * cfg.data_bits * cfg.buffer_pj_per_bit,
        dram_energy_pj=dram.words * rep * cfg.dram_width_bits * cfg.dram_pj_per_bit,
        mac_energy_pj=compute * rep * cfg.array_macs * cfg.mac_pj,
        weight_format=store.format, weight_zero_fraction=store.zero_fraction,
        note="" if fits else "smallest tile exceeds an on-chip buffer (costed as if it fitted)")


def _fits(layer: MacLayer, s: Schedule, cfg: HwConfig, store: WeightStore, row_tiles, chan_tiles,
          px_loads: int, w_loads: int, n_tiles: int) -> bool:
    """Does every tile fit its buffers (twice, where the buffer is reloaded while in use)?"""
    db = cfg.data_bytes
    in_ch = max(layer.in_channels(a, b) for a, b in chan_tiles)
    px = max(layer.in_rows(a, b) for a, b in row_tiles) * layer.nix * in_ch * db * (2 if px_loads > 1 else 1)
    wt = max(store.elems(a, b) for a, b in chan_tiles) * db * (2 if w_loads > 1 else 1)
    out = min(s.toy, layer.noy) * layer.nox * min(s.tof, layer.nof) * db * (2 if n_tiles > 1 else 1)
    return px <= cfg.buffer_bytes("pixel") and wt <= cfg.buffer_bytes("weight") and out <= cfg.buffer_bytes("output")


def candidate_schedules(layer: MacLayer, cfg: HwConfig) -> list[Schedule]:
    """Every distinct tiling: toy a multiple of Poy, tof of Pof, both loop orders where they differ."""
    out = []
    for toy in range(cfg.poy, math.ceil(layer.noy / cfg.poy) * cfg.poy + 1, cfg.poy):
        for tof in range(cfg.pof, math.ceil(layer.nof / cfg.pof) * cfg.pof + 1, cfg.pof):
            both = toy < layer.noy and tof < layer.nof
            out += [Schedule(toy, tof, order) for order in (ORDERS if both else ORDERS[:1])]
    return out


def search_schedule(layer: MacLayer, cfg: HwConfig, store: WeightStore | None = None) -> LayerCost:
    """The fitting schedule with the lowest latency (then DRAM bytes, then buffer energy); if no
    tile fits the buffers, the smallest tile, flagged ``fits=False``."""
    store = store or WeightStore(layer, cfg)
    best = None
    for s in candidate_schedules(layer, cfg):
        cost = cost_layer(layer, s, cfg, store)
        if not cost.fits:
            continue
        key = (cost.latency_cycles, cost.dram_bytes, cost.buffer_energy_pj)
        if best is None or key < best[0]:
            best = (key, cost)
    if best is None:
        return cost_layer(layer, Schedule(cfg.poy, cfg.pof), cfg, store)
    return best[1]


def cost_memory_pass(op: MemoryPass, cfg: HwConfig) -> LayerCost:
    """An unfused op: stream each input from DRAM and each output back; the DRAM port is the bound."""
    db = cfg.data_bytes
    dram = _Dram(cfg)
    latency = sum(dram.cycles(e * db) for e in op.read_elems) + sum(dram.cycles(e * db) for e in op.write_elems)
    reads, writes = sum(op.read_elems), sum(op.write_elems)
    accesses = 2 * reads + 2 * writes
    return LayerCost(
        name=op.name, op=op.op, shape=op.describe(), fused=list(op.fused), latency_cycles=latency,
        latency_s=latency / cfg.freq_hz, dram_read_bytes=reads * db, dram_write_bytes=writes * db,
        dram_words=dram.words, dram_transfers=dram.transfers, pixel_buffer_accesses=2 * reads,
        output_buffer_accesses=2 * writes, buffer_energy_pj=accesses * cfg.data_bits * cfg.buffer_pj_per_bit,
        dram_energy_pj=dram.words * cfg.dram_width_bits * cfg.dram_pj_per_bit, note="memory-bound pass")
