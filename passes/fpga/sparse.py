"""How many DRAM bytes a layer's weights take, dense or with scattered (non-structured) zeros.

A dense-array accelerator (Ma et al.) steps its MAC array over every weight position, so scattered
zeros never remove compute cycles; the most they can save is weight *storage* in DRAM, if the
weights are stored compressed and expanded into the (dense) weight buffer on the way in. Two
formats, chosen by ``HwConfig.sparse_format``; a layer uses the format only where it is smaller
than dense storage:

- ``zero-bursts`` (default): the weights stay dense, but a 512-bit DRAM word that holds only zeros
  is not fetched (a bitmap of one bit per word says which). This is what a dense accelerator can
  exploit without an index decoder: with 60% scattered zeros almost no 32-weight word is all
  zero, so almost nothing is saved, as the paper found for magnitude pruning (Sec. VI-B).
  Each filter starts on a word boundary.
- ``csr``: each non-zero weight is stored with a relative index of ``sparse_index_bits`` bits (the
  number of zeros before it: 4 bits in EIE, Han et al. ISCA 2016, the paper's ref. [28]; Deep
  Compression uses 5-8); a run of more zeros than the index can count needs a filler entry. An
  optimistic bound: it needs a decoder the paper's accelerator does not have.

Biases are always dense. Zeros are counted from the constant weights in the ONNX file.

Kernel-level sparsity (``kernel=True``: what Small-World masks leave, whole Nky x Nkx kernels or,
in a fully connected layer, single weights at zero) is the one kind a dense MAC array can skip
*in compute* (ours, in the spirit of kernel-skipping accelerators): the array walks the input
channels one at a time for ``pof`` output channels in lock step, so an input channel is skipped
when the kernels of all ``pof`` lanes on it are zero (``lane_steps``). Weights are stored as the
non-zero kernels plus a bitmap of one bit per (output, input) channel pair. Channels keep their
order: no re-ordering to line up zero patterns across lanes.
"""

from __future__ import annotations

import math

import numpy as np

from cgap_graph.passes.fpga.config import HwConfig
from cgap_graph.passes.fpga.graph import MacLayer


def zero_word_counts(weights: np.ndarray, word_elems: int) -> np.ndarray:
    """Per output channel: DRAM words (of ``word_elems`` weights, filter-aligned) holding a non-zero."""
    nof, k = weights.shape
    words = math.ceil(k / word_elems)
    padded = np.zeros((nof, words * word_elems), dtype=bool)
    padded[:, :k] = weights != 0
    return padded.reshape(nof, words, word_elems).any(axis=2).sum(axis=1)


def csr_entries(weights: np.ndarray, index_bits: int) -> np.ndarray:
    """Per output channel: stored entries (non-zeros plus fillers for zero runs the index cannot span)."""
    span = 2 ** index_bits  # an entry can skip up to span - 1 zeros; a filler covers span positions
    out = np.empty(weights.shape[0], dtype=np.int64)
    for c, row in enumerate(weights != 0):
        pos = np.flatnonzero(row)
        gaps = np.diff(np.concatenate(([-1], pos))) - 1  # zeros before each non-zero
        out[c] = len(pos) + int((gaps // span).sum())
    return out


class WeightStore:
    """DRAM bytes and buffer elements of any range of a layer's output channels."""

    def __init__(self, layer: MacLayer, cfg: HwConfig, sparse: bool = False, kernel: bool = False) -> None:
        self.cfg = cfg
        self.k = layer.k
        self.nif_g = layer.nif // layer.groups  # input channels one output channel reads
        self.bias = int(layer.bias)
        self.format = "dense"
        self.zero_fraction: float | None = None
        self._prefix: np.ndarray | None = None  # cumulative stored bits per channel (sparse formats)
        self._overhead_per_channel = 0.0  # zero-bursts: the bitmap, spread over the channels
        self._active: np.ndarray | None = None  # kernel mode: (nof, nif/groups) non-zero kernels
        w = layer.weights
        if w is None or w.shape != (layer.nof, layer.k):
            return
        self.zero_fraction = float((w == 0).mean()) if w.size else 0.0
        if kernel:
            self._kernel_store(w, layer.nof)
            return
        if not sparse:
            return
        if cfg.sparse_format == "zero-bursts":
            word_elems = cfg.dram_width_bits // cfg.data_bits
            words = zero_word_counts(w, word_elems)
            total_words = layer.nof * math.ceil(self.k / word_elems)
            bits = words * cfg.dram_width_bits
            overhead = total_words  # the bitmap: one bit per word
        else:
            bits = csr_entries(w, cfg.sparse_index_bits) * (cfg.data_bits + cfg.sparse_index_bits)
            overhead = 0
        if bits.sum() + overhead < layer.nof * self.k * cfg.data_bits:
            self.format = cfg.sparse_format
            self._prefix = np.concatenate(([0], np.cumsum(bits)))
            self._overhead_per_channel = overhead / layer.nof

    def _kernel_store(self, w: np.ndarray, nof: int) -> None:
        """Kernel mode: non-zero kernels plus a bitmap of one bit per (output, input) channel pair."""
        cfg = self.cfg
        active = (w != 0).reshape(nof, self.nif_g, -1).any(axis=2)
        kernel_elems = self.k // self.nif_g
        bits = active.sum(axis=1) * kernel_elems * cfg.data_bits + self.nif_g
        self._active = active
        if bits.sum() < nof * self.k * cfg.data_bits:
            self.format = "kernel"
            self._prefix = np.concatenate(([0], np.cumsum(bits)))

    def lane_steps(self, c0: int, c1: int, pof: int) -> int:
        """Input-channel steps the array takes for output channels [c0, c1), ``pof`` lanes at a time:
        ceil((c1 - c0) / pof) * Nif/groups when dense; in kernel mode a step is skipped where every
        lane's kernel is zero."""
        if self._active is None:
            return -(-(c1 - c0) // pof) * self.nif_g
        return int(sum(self._active[a:min(a + pof, c1)].any(axis=0).sum() for a in range(c0, c1, pof)))

    def elems(self, c0: int, c1: int) -> int:
        """Dense weights and biases of channels [c0, c1): what the weight buffer holds."""
        return (c1 - c0) * (self.k + self.bias)

    def nbytes(self, c0: int, c1: int) -> int:
        """DRAM bytes of channels [c0, c1) in the layer's storage format."""
        db = self.cfg.data_bytes
        if self._prefix is None:
            return (c1 - c0) * (self.k + self.bias) * db
        bits = int(self._prefix[c1] - self._prefix[c0]) + math.ceil(self._overhead_per_channel * (c1 - c0))
        return math.ceil(bits / 8) + (c1 - c0) * self.bias * db
