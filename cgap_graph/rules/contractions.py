"""Contractions: matmul, bmm, mm, addmm/baddbmm and einsum. The contracted dimension couples its two
operands; the Net2Wider split of a bilinear product goes to one side (``split_side``)."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from cgap_graph.ir.values import TInfo
from cgap_graph.rules.registry import Call, TSpec, broadcast_shapes, register
from cgap_graph.rules.util import shp


# ---- contractions ---------------------------------------------------------------------------------
def _matmul_shape(op):
    args = op.args
    a, b = args[0], args[1]
    sa, sb = shp(a), shp(b)
    if not sa or not sb:
        raise RuntimeError("matmul needs at least 1-d tensors")
    if len(sa) == 1 and len(sb) == 1:
        out: tuple = ()
    elif len(sb) == 1:
        out = sa[:-1]
    elif len(sa) == 1:
        out = (*sb[:-2], sb[-1])
    else:
        out = (*broadcast_shapes(sa[:-2], sb[:-2]), sa[-2], sb[-1])
    k_a = sa[-1]
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if k_a != k_b:
        raise RuntimeError(f"matmul: shapes {sa} and {sb} cannot be multiplied")
    return TSpec(out, a.dtype)


def _split_side(an, node, pos_first: fx.Node, pos_second: fx.Node, contracted) -> None:
    """Choose which operand's producer splits duplicated contracted units (see module doc)."""
    if not an.spaces_in(contracted[0]):
        return
    e, written_second, written_first = contracted
    if an.mark_split(pos_second, e, written_second):
        return
    if an.mark_split(pos_first, e, written_first):
        return
    an.note(e, f"{an.where()}: contracted channels have no producer that can be split on growth",
            prune=False)


def _zm_dims(an, exprs_zm) -> bool:
    return all(keeps_zero or not an.spaces_in(e) for e, keeps_zero in exprs_zm)


def matmul_channels(an, node, a: TInfo, b: TInfo, na, nb) -> TInfo:
    a1, b1 = a.ndim == 1, b.ndim == 1
    ca = a.exprs[-1]
    cb = b.exprs[0] if b1 else b.exprs[-2]
    contracted = (ca, an.t.written_leaves(cb), an.t.written_leaves(ca))
    an.unify(ca, cb)
    _split_side(an, node, na, nb, contracted)
    out_shape = node.meta["shape"]
    exprs: list = []
    zms: list = []
    if not a1 and not b1:
        nbatch = len(out_shape) - 2
        for j in range(nbatch):
            full, z = [], False
            for t in (a, b):
                k = j - (nbatch - (t.ndim - 2))
                if k >= 0 and t.shape[k] == out_shape[j] and not (out_shape[j] == 1 and t.exprs[k][0] == "F"):
                    full.append(t.exprs[k])
                    z = z or t.keeps_zero
                elif k >= 0 and t.exprs[k][0] != "F":
                    an.freeze(t.exprs[k], f"{an.where()}: a channel of width 1 is broadcast")
            cand = next((e for e in full if e[0] != "F"), None)
            for e in full:
                if cand is not None and e is not cand:
                    an.unify(cand, e)
            exprs.append(cand if cand is not None else ("F", out_shape[j]))
            zms.append(z)
        exprs += [a.exprs[-2], b.exprs[-1]]
        zms += [a.keeps_zero, b.keeps_zero]
    elif b1 and not a1:
        exprs, zms = list(a.exprs[:-1]), [a.keeps_zero] * (a.ndim - 1)
    elif a1 and not b1:
        exprs = list(b.exprs[:-2]) + [b.exprs[-1]]
        zms = [b.keeps_zero] * len(exprs)
    return TInfo(tuple(exprs), _zm_dims(an, zip(exprs, zms)), out_shape)


def _matmul_channels(an, op):
    node, args = op.node, op.args
    return matmul_channels(an, node, args[0], args[1], node.args[0], node.args[1])


register(torch.matmul, operator.matmul, "matmul", torch.bmm, "bmm", torch.mm, "mm", shape=_matmul_shape,
         channels=_matmul_channels)


def _addmm_shape(op):
    args = op.args
    return _matmul_shape(Call(args[1:3], {}))


def _addmm_channels(an, op):
    node, args = op.node, op.args
    out = matmul_channels(an, node, args[1], args[2], node.args[1], node.args[2])
    bias = args[0]
    if isinstance(bias, TInfo):
        n = len(out.exprs)
        for k in range(bias.ndim):
            j = n - bias.ndim + k
            if bias.shape[k] == out.shape[j] and out.shape[j] != 1:
                an.unify(out.exprs[j], bias.exprs[k])
    return out


register(torch.addmm, "addmm", torch.baddbmm, "baddbmm", shape=_addmm_shape, channels=_addmm_channels)


# ---- einsum -----------------------------------------------------------------------------------------
def _einsum_parse(eq: str, ndims: list[int]):
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    ins = lhs.split(",")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq]
    nell = max((nd - len(s.replace("...", "")) for s, nd in zip(ins, ndims) if "..." in s), default=0)
    ell = "".join(spare[:nell])
    subs = []
    for s, nd in zip(ins, ndims):
        if "..." in s:
            k = nd - len(s.replace("...", ""))
            s = s.replace("...", ell[nell - k:] if k else "")
        subs.append(s)
    if not _:
        counts: dict = {}
        for s in subs:
            for c in s:
                counts[c] = counts.get(c, 0) + 1
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        rhs = rhs.replace("...", ell)
    return subs, rhs


def _einsum_operands(args):
    eq = args[0]
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    return eq, ops


def _einsum_shape(op):
    args = op.args
    eq, ops = _einsum_operands(args)
    subs, rhs = _einsum_parse(eq, [len(shp(o)) for o in ops])
    size = {}
    for s, o in zip(subs, ops):
        for c, n in zip(s, shp(o)):
            if size.get(c, 1) == 1:
                size[c] = n
    return TSpec([size[c] for c in rhs], ops[0].dtype)


def _einsum_channels(an, op):
    node, args = op.node, op.args
    eq, ops = _einsum_operands(args)
    raw_ops = list(node.args[1]) if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) \
        else list(node.args[1:])
    subs, rhs = _einsum_parse(eq, [o.ndim for o in ops])
    letter: dict = {}
    holders: dict = {}
    written: dict = {}
    for i, (s, o) in enumerate(zip(subs, ops)):
        for c, e in zip(s, o.exprs):
            written.setdefault((c, i), an.t.written_leaves(e))
    for i, (s, o) in enumerate(zip(subs, ops)):
        for c, e, n in zip(s, o.exprs, o.shape):
            if n == 1 and e[0] == "F":
                continue
            holders.setdefault(c, []).append(i)
            if c in letter:
                an.unify(letter[c], e)
                if letter[c][0] == "F" and e[0] != "F":
                    letter[c] = e
            else:
                letter[c] = e
    for c, who in holders.items():
        if c not in rhs and len(who) > 1:
            _split_side(an, node, raw_ops[who[0]], raw_ops[who[-1]],
                        (letter[c], written[(c, who[-1])], written[(c, who[0])]))
    out_shape = node.meta["shape"]
    exprs = tuple(letter.get(c, ("F", n)) for c, n in zip(rhs, out_shape))
    keeps_zero = all(any(ops[i].keeps_zero for i in holders.get(c, [])) or not an.spaces_in(e)
                     for c, e in zip(rhs, exprs))
    return TInfo(exprs, keeps_zero, out_shape)


register(torch.einsum, shape=_einsum_shape, channels=_einsum_channels)

