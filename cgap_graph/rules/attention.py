"""Attention: ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``.

``nn.MultiheadAttention`` keeps ``embed_dim = num_heads * head_dim`` equal to its input and
output widths, so as a black box none of its channels could change independently. It is
therefore traced through an explicit, numerically equivalent forward built from its own
parameters (``in_proj_weight`` split into q/k/v, heads reshaped with constant sizes, a constant
``1/sqrt(head_dim)`` scale). The channel rules then see heads x head_dim for q/k and v, and the
output projection, as ordinary groups; the module object stays in the graph module as the
holder of its parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cgap_graph.errors import TraceError
from cgap_graph.ir.values import TInfo
from cgap_graph.rules.contractions import _split_side
from cgap_graph.rules.registry import TSpec, broadcast_shapes, register
from cgap_graph.rules.util import shp, v


def _sdpa_args(op):
    return op.bind("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _sdpa_shape(op):
    a = _sdpa_args(op)
    q, k, val = a["query"], a["key"], a["value"]
    sq, sk, sv = shp(q), shp(k), shp(val)
    if sq[-1] != sk[-1] or sk[-2] != sv[-2]:
        raise RuntimeError(f"attention shapes do not match: q {sq}, k {sk}, v {sv}")
    batch = broadcast_shapes(sq[:-2], sk[:-2], sv[:-2])
    return TSpec((*batch, sq[-2], sv[-1]), q.dtype)


def _sdpa_channels(an, op):
    node = op.node
    a = _sdpa_args(op)
    q, k, val = a["query"], a["key"], a["value"]
    if v(a.get("enable_gqa", False)):
        for t in (q, k, val):
            for e in t.exprs[:-2]:
                an.freeze(e, f"{an.where()}: grouped-query attention repeats heads")
    out_shape = node.meta["shape"]
    nb = len(out_shape) - 2
    batch = []
    for j in range(nb):
        full = []
        for t in (q, k, val):
            kk = j - (nb - (t.ndim - 2))
            if kk >= 0 and t.shape[kk] == out_shape[j] and not (out_shape[j] == 1 and t.exprs[kk][0] == "F"):
                full.append(t.exprs[kk])
        cand = next((e for e in full if e[0] != "F"), None)
        for e in full:
            if cand is not None and e is not cand:
                an.unify(cand, e)
        batch.append(cand if cand is not None else ("F", out_shape[j]))
    mask = a.get("attn_mask")
    if isinstance(mask, TInfo):
        for e in mask.exprs:
            if e[0] != "F":
                an.freeze(e, f"{an.where()}: the attention mask carries channels")
    contracted = (q.exprs[-1], an.t.written_leaves(k.exprs[-1]), an.t.written_leaves(q.exprs[-1]))
    an.unify(q.exprs[-1], k.exprs[-1])
    raw = list(node.args) + [None] * 3
    qn = raw[0] if raw[0] is not None else node.kwargs.get("query")
    kn = raw[1] if raw[1] is not None else node.kwargs.get("key")
    _split_side(an, node, qn, kn, contracted)
    an.unify(k.exprs[-2], val.exprs[-2])
    if a.get("scale") is None and an.spaces_in(q.exprs[-1]):
        # the default scale 1/sqrt(E) would follow E: pin today's value when E changes
        an.const(("kwargs", "scale"), q.exprs[-1], "sdpa_scale", extra=1.0 / math.sqrt(q.shape[-1]))
    exprs = (*batch, q.exprs[-2], val.exprs[-1])
    return TInfo(exprs, val.keeps_zero, out_shape)


register(F.scaled_dot_product_attention, shape=_sdpa_shape, channels=_sdpa_channels)


# ---- nn.MultiheadAttention, traced through --------------------------------------------------------
def explicit_mha_forward(mha: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                         need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                         is_causal: bool = False):
    """``nn.MultiheadAttention.forward`` written with ops the channel rules understand."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise TraceError("nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is kept opaque")
    if is_causal and attn_mask is None:
        raise RuntimeError("need attn_mask if specifying the is_causal hint")
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif mha.batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    # now [L, N, E] like the reference implementation; go batch-first for the math
    q_in, k_in, v_in = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    E, h = mha.embed_dim, mha.num_heads
    d = mha.head_dim
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = torch.split(mha.in_proj_weight, [E, E, E], dim=0)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    if mha.in_proj_bias is not None:
        b_q, b_k, b_v = torch.split(mha.in_proj_bias, [E, E, E], dim=0)
    else:
        b_q = b_k = b_v = None
    q = F.linear(q_in, w_q, b_q)
    k = F.linear(k_in, w_k, b_k)
    vv = F.linear(v_in, w_v, b_v)
    n, tq = q.size(0), q.size(1)
    tk = k.size(1)
    q = q.view(n, tq, h, d).transpose(1, 2)
    k = k.view(n, tk, h, d).transpose(1, 2)
    vv = vv.view(n, tk, h, d).transpose(1, 2)
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.where(attn_mask, float("-inf"), 0.0)
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.view(n, h, tq, tk)
        mask = attn_mask
    if key_padding_mask is not None:
        if key_padding_mask.dtype == torch.bool:
            key_padding_mask = torch.where(key_padding_mask, float("-inf"), 0.0)
        kpm = key_padding_mask.view(n, 1, 1, tk)
        mask = kpm if mask is None else mask + kpm
    scale = 1.0 / math.sqrt(d)
    p = mha.dropout if mha.training else 0.0
    if need_weights:
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        if p > 0.0:
            attn = F.dropout(attn, p=p)
        out = torch.matmul(attn, vv)
    else:
        out = F.scaled_dot_product_attention(q, k, vv, attn_mask=mask, dropout_p=p, scale=scale)
        attn = None
    out = out.transpose(1, 2).reshape(n, tq, h * d)
    out = mha.out_proj(out)
    if not batched:
        out = out.squeeze(0)
    elif not mha.batch_first:
        out = out.transpose(0, 1)
    if attn is None:
        return out, None
    weights = attn.mean(dim=1) if average_attn_weights else attn
    if not batched:
        weights = weights.squeeze(0)
    return out, weights


register(nn.MultiheadAttention, forward=explicit_mha_forward)

__all__ = ["explicit_mha_forward"]
