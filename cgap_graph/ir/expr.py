"""Channel expressions and the space table: how tensor dimensions map onto channel groups.

Every dimension of every tensor in a traced graph gets an *expression* that says which channel
units its positions belong to:

- ``('F', n)``: a fixed dimension of size ``n`` that carries no resizable channels (batch,
  spatial, class logits, a constant);
- ``('S', sid)``: the channels of space ``sid``, one position per unit;
- ``('C', (e1, e2, ...))``: a concatenation (``torch.cat``, option-A zero padding);
- ``('P', (e1, e2, ...))``: a row-major product (flatten into a Linear, heads x head_dim,
  grouped convolutions, channel shuffle).

Spaces are unified with a union-find. A space may later be *refined* into a concat or a product
of fresh sub-spaces (``cat`` splits a space, ``view(B, h, d)`` factors it). The leaves that remain
(unrefined representatives) are the channel groups: one selection vector over a leaf, mapped
through each expression, gives the positions to keep or repeat in every coupled tensor.

Why tuples: expressions are built for every node of every model, so they stay small, hashable
and cheap to compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

Expr = tuple

F1 = ("F", 1)


def fixed(n: int) -> Expr:
    return ("F", int(n))


def space(sid: int) -> Expr:
    return ("S", sid)


def concat(parts: Iterable[Expr]) -> Expr:
    parts = tuple(parts)
    return parts[0] if len(parts) == 1 else ("C", parts)


def product(factors: Iterable[Expr]) -> Expr:
    factors = tuple(factors)
    if not factors:
        return F1
    return factors[0] if len(factors) == 1 else ("P", factors)


class SpaceTable:
    """Union-find over channel spaces, with refinement into concat/product structure.

    The table also carries two kinds of facts per space: *frozen* (its width must not change,
    with the first reason found) and *notes* (it can change, but removing or duplicating a unit
    is not exactly function-preserving, with reasons), for pruning and growth separately.
    """

    __slots__ = ("_parent", "_width", "_refined", "origin", "frozen", "prune_notes", "grow_notes", "_wmemo")

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._width: list[int] = []
        self._refined: dict[int, Expr] = {}
        self.origin: list[str] = []
        self.frozen: dict[int, str] = {}
        self.prune_notes: dict[int, list[str]] = {}
        self.grow_notes: dict[int, list[str]] = {}
        # widths of structured layouts; unions and refinements never change a width, so this
        # stays valid until surgery sets a new width (which clears it)
        self._wmemo: dict[Expr, int] = {}

    # ---- basic union-find -------------------------------------------------------------
    def new(self, width: int, origin: str = "") -> int:
        sid = len(self._parent)
        self._parent.append(sid)
        self._width.append(int(width))
        self.origin.append(origin)
        return sid

    def __len__(self) -> int:
        return len(self._parent)

    def find(self, s: int) -> int:
        parent = self._parent
        root = s
        while parent[root] != root:
            root = parent[root]
        while parent[s] != root:
            parent[s], s = root, parent[s]
        return root

    def is_refined(self, s: int) -> bool:
        return self.find(s) in self._refined

    def refinement(self, s: int) -> Expr | None:
        return self._refined.get(self.find(s))

    # ---- normal form ------------------------------------------------------------------
    def norm(self, e: Expr) -> Expr:
        """Resolve spaces to representatives, substitute refinements, flatten nesting."""
        tag = e[0]
        if tag == "F":
            return e
        if tag == "S":
            r = self.find(e[1])
            ref = self._refined.get(r)
            if ref is None:
                return e if r == e[1] else ("S", r)
            return self.norm(ref)
        if tag == "C":
            out: list[Expr] = []
            for p in e[1]:
                p = self.norm(p)
                items = p[1] if p[0] == "C" else (p,)
                for q in items:
                    if q[0] == "F" and out and out[-1][0] == "F":
                        out[-1] = ("F", out[-1][1] + q[1])
                    elif not (q[0] == "F" and q[1] == 0):
                        out.append(q)
            return concat(out) if out else ("F", 0)
        # product
        out = []
        for f in e[1]:
            f = self.norm(f)
            items = f[1] if f[0] == "P" else (f,)
            for q in items:
                if q[0] == "F":
                    if q[1] == 1:
                        continue
                    if out and out[-1][0] == "F":
                        out[-1] = ("F", out[-1][1] * q[1])
                        continue
                out.append(q)
        return product(out)

    def width(self, e: Expr) -> int:
        tag = e[0]
        if tag == "F":
            return e[1]
        w = self._wmemo.get(e)
        if w is not None:
            return w
        if tag == "S":
            r = self.find(e[1])
            ref = self._refined.get(r)
            w = self._width[r] if ref is None else self.width(ref)
        elif tag == "C":
            w = sum(self.width(p) for p in e[1])
        else:
            w = 1
            for f in e[1]:
                w *= self.width(f)
        self._wmemo[e] = w
        return w

    def leaves(self, e: Expr) -> Iterator[int]:
        """Unrefined representative spaces in ``e`` (with repeats, in order)."""
        e = self.norm(e)
        stack = [e]
        while stack:
            x = stack.pop()
            if x[0] == "S":
                yield x[1]
            elif x[0] in ("C", "P"):
                stack.extend(reversed(x[1]))

    def has_space(self, e: Expr) -> bool:
        return next(self.leaves(e), None) is not None

    def all_spaces(self, e: Expr) -> Iterator[int]:
        """Every space mentioned in ``e``, refined ones included (for freezing)."""
        stack = [e]
        while stack:
            x = stack.pop()
            if x[0] == "S":
                r = self.find(x[1])
                yield r
                ref = self._refined.get(r)
                if ref is not None:
                    stack.append(ref)
            elif x[0] in ("C", "P"):
                stack.extend(x[1])

    # ---- facts ------------------------------------------------------------------------
    def freeze(self, e: Expr, why: str) -> None:
        why = str(why)
        for s in self.all_spaces(e):
            self.frozen.setdefault(s, why)

    def note(self, e: Expr, why: str, *, prune: bool = True, grow: bool = True) -> None:
        why = str(why)
        for s in set(self.all_spaces(e)):
            if prune:
                lst = self.prune_notes.setdefault(s, [])
                if why not in lst:
                    lst.append(why)
            if grow:
                lst = self.grow_notes.setdefault(s, [])
                if why not in lst:
                    lst.append(why)

    def finalize(self) -> None:
        """Re-key facts by representative and push frozen/notes down refinements."""
        for d in (self.frozen,):
            items = list(d.items())
            d.clear()
            for s, why in items:
                d.setdefault(self.find(s), why)
        for d in (self.prune_notes, self.grow_notes):
            items = list(d.items())
            d.clear()
            for s, whys in items:
                lst = d.setdefault(self.find(s), [])
                lst.extend(w for w in whys if w not in lst)
        work = [s for s in self.frozen if s in self._refined]
        while work:
            s = work.pop()
            for c in self.all_spaces(self._refined[s]):
                if c not in self.frozen:
                    self.frozen[c] = self.frozen[s]
                    if c in self._refined:
                        work.append(c)
        for d in (self.prune_notes, self.grow_notes):
            work = [s for s in d if s in self._refined]
            while work:
                s = work.pop()
                for c in self.all_spaces(self._refined[s]):
                    lst = d.setdefault(c, [])
                    new = [w for w in d[s] if w not in lst]
                    if new or c not in d:
                        lst.extend(new)
                        if c in self._refined:
                            work.append(c)

    def frozen_reason(self, s: int) -> str | None:
        return self.frozen.get(self.find(s))

    # ---- unification ------------------------------------------------------------------
    def _link(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if ra > rb:  # keep the older space as representative: stable, readable ids
            ra, rb = rb, ra
        self._parent[rb] = ra
        if rb in self.frozen and ra not in self.frozen:
            self.frozen[ra] = self.frozen.pop(rb)
        for d in (self.prune_notes, self.grow_notes):
            if rb in d:
                lst = d.setdefault(ra, [])
                lst.extend(w for w in d.pop(rb) if w not in lst)

    def _fresh_like(self, s: int, shape: Expr, origin: str) -> None:
        """Refine unrefined rep ``s`` into fresh sub-spaces mirroring ``shape``'s top level."""
        parts = []
        for p in shape[1]:
            if p[0] == "F":
                parts.append(p)
            else:
                parts.append(("S", self.new(self.width(p), origin)))
        self._refined[s] = (shape[0], tuple(parts))

    def unify(self, a: Expr, b: Expr, why: str) -> None:
        """Make two layouts of equal size denote the same channels, position by position."""
        if a is b:
            return
        a, b = self.norm(a), self.norm(b)
        if a == b:
            return
        wa, wb = self.width(a), self.width(b)
        if wa != wb:
            self.freeze(a, f"{why}: sizes {wa} and {wb} differ")
            self.freeze(b, f"{why}: sizes {wa} and {wb} differ")
            return
        ta, tb = a[0], b[0]
        if ta == "F" or tb == "F":
            if ta != tb:
                self.freeze(b if ta == "F" else a, f"{why}: tied to a fixed size")
            return
        if ta == "S" and tb == "S":
            self._link(a[1], b[1])
            return
        if ta == "S":
            self._fresh_like(a[1], b, self.origin[a[1]])
            self.unify(a, b, why)
            return
        if tb == "S":
            self._fresh_like(b[1], a, self.origin[b[1]])
            self.unify(a, b, why)
            return
        if ta == "C" and tb == "C":
            self._unify_concat(a[1], b[1], why)
            return
        if ta == "P" and tb == "P":
            self._unify_product(a[1], b[1], why)
            return
        self.freeze(a, f"{why}: incompatible channel structure (concat vs product)")
        self.freeze(b, f"{why}: incompatible channel structure (concat vs product)")

    def _unify_concat(self, pa: tuple, pb: tuple, why: str) -> None:
        cuts: set[int] = set()
        for parts in (pa, pb):
            off = 0
            for p in parts:
                off += self.width(p)
                cuts.add(off)
        pieces_a = self._cut(pa, cuts, why)
        pieces_b = self._cut(pb, cuts, why)
        for x, y in zip(pieces_a, pieces_b):
            self.unify(x, y, why)

    def _cut(self, parts: tuple, cuts: set[int], why: str) -> list[Expr]:
        out: list[Expr] = []
        off = 0
        for p in parts:
            w = self.width(p)
            inner = sorted(c - off for c in cuts if off < c < off + w)
            if inner:
                bounds = [0, *inner, w]
                out.extend(self.split(p, [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)], why))
            else:
                out.append(p)
            off += w
        return out

    def split(self, e: Expr, sizes: list[int], why: str) -> list[Expr]:
        """Cut layout ``e`` into consecutive pieces of the given sizes (refining spaces)."""
        e = self.norm(e)
        trivial = _trivial_cut(e, sizes)
        if trivial is not None:
            return trivial
        tag = e[0]
        if tag == "S":
            parts = tuple(("S", self.new(k, self.origin[e[1]])) for k in sizes)
            s = e[1]
            self._refined[s] = ("C", parts)
            return list(parts)
        if tag == "C":
            cuts, off = set(), 0
            for k in sizes:
                off += k
                cuts.add(off)
            pieces = self._cut(e[1], cuts, why)
            out, cur, acc, i = [], [], 0, 0
            for p in pieces:
                cur.append(p)
                acc += self.width(p)
                if acc == sizes[i]:
                    out.append(concat(cur))
                    cur, acc, i = [], 0, i + 1
            return out
        # product: split along the leading factor when the cut respects the inner block size
        head, rest = e[1][0], product(e[1][1:])
        inner = self.width(rest)
        if all(k % inner == 0 for k in sizes):
            heads = self.split(head, [k // inner for k in sizes], why)
            return [product((h, rest)) for h in heads]
        self.freeze(e, f"{why}: a cut falls inside a flattened block")
        return [("F", k) for k in sizes]

    def _unify_product(self, fa: tuple, fb: tuple, why: str) -> None:
        for ga, gb in self._chunks(list(fa), list(fb)):
            if ga is None:
                continue
            if len(ga) == 1 and len(gb) == 1:
                self.unify(ga[0], gb[0], why)
            elif len(ga) == 1:
                for x, y in zip(self.factor(ga[0], [self.width(f) for f in gb], why), gb):
                    self.unify(x, y, why)
            elif len(gb) == 1:
                for x, y in zip(ga, self.factor(gb[0], [self.width(f) for f in ga], why)):
                    self.unify(x, y, why)
            else:
                self.freeze(product(ga), f"{why}: incompatible factorisations")
                self.freeze(product(gb), f"{why}: incompatible factorisations")

    def _chunks(self, fa: list, fb: list):
        i = j = 0
        while i < len(fa) and j < len(fb):
            ga, gb = [fa[i]], [fb[j]]
            pa, pb = self.width(fa[i]), self.width(fb[j])
            i += 1
            j += 1
            while pa != pb:
                if pa < pb:
                    if i >= len(fa):
                        break
                    ga.append(fa[i])
                    pa *= self.width(fa[i])
                    i += 1
                else:
                    if j >= len(fb):
                        break
                    gb.append(fb[j])
                    pb *= self.width(fb[j])
                    j += 1
            yield ga, gb
        # trailing width-1 factors (spaces of width 1) pair with nothing: leave them alone

    def factor(self, e: Expr, sizes: list[int], why: str) -> list[Expr]:
        """Split layout ``e`` into row-major factors of the given sizes (refining spaces)."""
        e = self.norm(e)
        sizes = [int(k) for k in sizes]
        trivial = _trivial_cut(e, sizes)
        if trivial is not None:
            return trivial
        tag = e[0]
        if tag == "S":
            s = e[1]
            parts = tuple(("F", 1) if k == 1 else ("S", self.new(k, self.origin[s])) for k in sizes)
            nontrivial = [p for p in parts if p != ("F", 1)]
            if len(nontrivial) == 1:  # e.g. [C, 1]: nothing to refine
                return [e if p != ("F", 1) else p for p in parts]
            self._refined[s] = product(parts)
            return list(parts)
        if tag == "P":
            out: list[Expr] = []
            factors = list(e[1])
            k_iter = iter(sizes)
            for ga, gb in self._chunks(factors, [("F", k) for k in sizes]):
                if len(gb) == 1:
                    out.append(product(ga))
                elif len(ga) == 1:
                    out.extend(self.factor(ga[0], [f[1] for f in gb], why))
                else:
                    self.freeze(product(ga), f"{why}: incompatible factorisations")
                    out.extend(gb)
            del k_iter
            if len(out) != len(sizes):  # width-1 sizes at the ends
                return self._pad_ones(out, sizes, e, why)
            return out
        # concat: only trivial factorisations keep it intact ...
        if sum(1 for k in sizes if k != 1) == 1:
            return [e if k != 1 else ("F", 1) for k in sizes]
        # ... or n equal pieces viewed as (n, piece): the pieces must then change together
        # (channel shuffle after a concat, ShuffleNetV2)
        nontriv = [k for k in sizes if k != 1]
        n = nontriv[0]
        total = self.width(e)
        if total % n == 0:
            piece_w = total // n
            cuts = {piece_w * (i + 1) for i in range(n)}
            pieces = self._cut(e[1], cuts, why)
            runs, cur, acc = [], [], 0
            for p in pieces:
                cur.append(p)
                acc += self.width(p)
                if acc == piece_w:
                    runs.append(concat(cur))
                    cur, acc = [], 0
            if len(runs) == n:
                for r in runs[1:]:
                    self.unify(runs[0], r, f"{why} (equal pieces viewed as a product)")
                lead = [("F", 1)] * sizes.index(n)
                rest = sizes[sizes.index(n) + 1:]
                tail = self.factor(runs[0], rest, why) if len(rest) > 1 else [runs[0]] if rest else []
                return [*lead, ("F", n), *tail]
        self.freeze(e, f"{why}: a concatenation cannot be split into a product")
        return [("F", k) for k in sizes]

    def _pad_ones(self, out: list[Expr], sizes: list[int], e: Expr, why: str) -> list[Expr]:
        res: list[Expr] = []
        it = iter(out)
        pending = next(it, None)
        for k in sizes:
            if pending is not None and self.width(pending) == k:
                res.append(pending)
                pending = next(it, None)
            elif k == 1:
                res.append(("F", 1))
            else:
                self.freeze(e, f"{why}: cannot match the reshape")
                return [("F", k) for k in sizes]
        return res

    # ---- index maps -------------------------------------------------------------------
    def positions(self, e: Expr, sel: Mapping[int, np.ndarray]) -> np.ndarray:
        """Source positions, in the current layout ``e``, of every position after applying
        the selection vectors ``sel`` (leaf rep -> indices into its current units)."""
        e = self.norm(e)
        tag = e[0]
        if tag == "F":
            return np.arange(e[1], dtype=np.int64)
        if tag == "S":
            s = sel.get(e[1])
            return np.arange(self._width[e[1]], dtype=np.int64) if s is None else np.asarray(s, dtype=np.int64)
        if tag == "C":
            out, off = [], 0
            for p in e[1]:
                out.append(self.positions(p, sel) + off)
                off += self.width(p)
            return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        idx = np.zeros(1, dtype=np.int64)
        for f in e[1]:
            idx = (idx[:, None] * self.width(f) + self.positions(f, sel)[None, :]).reshape(-1)
        return idx

    def written_leaves(self, e: Expr) -> set[int]:
        """Space ids as written in ``e`` and its refinements (not resolved through unions).

        Unification merges, say, the head_dim of ``q`` and of ``k`` into one group; the written
        ids still tell the two apart, which is what a bilinear split mark needs."""
        out: set[int] = set()
        stack = [e]
        while stack:
            x = stack.pop()
            if x[0] == "S":
                ref = self._refined.get(self.find(x[1]))
                if ref is None:
                    out.add(x[1])
                else:
                    out.add(x[1])
                    stack.append(ref)
            elif x[0] in ("C", "P"):
                stack.extend(x[1])
        return out

    def scales(self, e: Expr, sel: Mapping[int, np.ndarray], counts: Mapping[int, np.ndarray],
               split: set[int] | None, inherited: bool = False) -> np.ndarray:
        """Per-position factor 1/multiplicity for duplicated units: the consumer side of a
        function-preserving split. ``split=None`` scales every leaf (a consumer slot); otherwise
        only leaves written as (or under) an id in ``split`` (a bilinear operand's producer)."""
        tag = e[0]
        if tag == "F":
            return np.ones(e[1])
        if tag == "S":
            x = e[1]
            r = self.find(x)
            inh = inherited or split is None or x in split
            ref = self._refined.get(r)
            if ref is not None:
                return self.scales(ref, sel, counts, split, inh)
            idx = sel.get(r)
            n = self._width[r] if idx is None else len(idx)
            if idx is None or not inh or r not in counts:
                return np.ones(n)
            return 1.0 / counts[r][np.asarray(idx)]
        if tag == "C":
            parts = [self.scales(p, sel, counts, split, inherited) for p in e[1]]
            return np.concatenate(parts) if parts else np.ones(0)
        out = np.ones(1)
        for f in e[1]:
            out = (out[:, None] * self.scales(f, sel, counts, split, inherited)[None, :]).reshape(-1)
        return out

    def unit_ids(self, e: Expr, leaf: int) -> np.ndarray:
        """For each position of layout ``e``, the unit of ``leaf`` it belongs to (-1: none).

        Aggregates per-position quantities (weights, saliency) into per-unit ones."""
        e = self.norm(e)
        tag = e[0]
        if tag == "F":
            return np.full(e[1], -1, dtype=np.int64)
        if tag == "S":
            w = self._width[e[1]]
            return np.arange(w, dtype=np.int64) if e[1] == leaf else np.full(w, -1, dtype=np.int64)
        if tag == "C":
            return np.concatenate([self.unit_ids(p, leaf) for p in e[1]])
        out = np.full(1, -1, dtype=np.int64)
        for f in e[1]:
            ids = self.unit_ids(f, leaf)
            out = np.maximum(out[:, None], ids[None, :]).reshape(-1)
        return out

    def dropped(self, e: Expr, dead: Mapping[int, np.ndarray]) -> np.ndarray:
        """For each position of layout ``e``: does it hold a unit listed in ``dead`` (leaf rep ->
        unit indices)? One call covers every group at once (masking, folding, zeroing)."""
        e = self.norm(e)
        tag = e[0]
        if tag == "F":
            return np.zeros(e[1], dtype=bool)
        if tag == "S":
            mask = np.zeros(self._width[e[1]], dtype=bool)
            units = dead.get(e[1])
            if units is not None:
                mask[units] = True
            return mask
        if tag == "C":
            return np.concatenate([self.dropped(p, dead) for p in e[1]])
        out = np.zeros(1, dtype=bool)
        for f in e[1]:
            out = (out[:, None] | self.dropped(f, dead)[None, :]).reshape(-1)
        return out

    def set_width(self, s: int, w: int) -> None:
        r = self.find(s)
        if r in self._refined:
            raise ValueError("cannot set the width of a refined space")
        self._width[r] = int(w)
        self._wmemo.clear()

    def describe(self, e: Expr) -> str:
        """Human-readable layout, e.g. ``G3 x 25`` or ``[G1 | G2]``."""
        e = self.norm(e)
        tag = e[0]
        if tag == "F":
            return str(e[1])
        if tag == "S":
            return f"s{e[1]}"
        sep = " | " if tag == "C" else " x "
        inner = sep.join(self.describe(p) for p in e[1])
        return f"[{inner}]" if tag == "C" else f"({inner})"


def _trivial_cut(e: Expr, sizes: list[int]) -> list[Expr] | None:
    """Cutting into one piece, or cutting a fixed layout: no space to refine."""
    if len(sizes) == 1:
        return [e]
    if e[0] == "F":
        return [("F", k) for k in sizes]
    return None
