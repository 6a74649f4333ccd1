"""Tracing leaves the user's model exactly as it found it.

``forward`` runs once on symbolic tensors. A forward that writes Python state (a dict that
caches an attention bias on first call, a counter, a lazily built list) would keep a symbolic
value after tracing: the next trace or a later pass then reads a node of a graph that no longer
exists. :class:`StateGuard` records every submodule's attributes before the run (containers
copied structurally, everything else by identity) and puts them back afterwards, in place, so
references the user holds to a cache dict stay valid; :meth:`StateGuard.restore` returns which
attributes forward had written.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_MAX_DEPTH = 6  # nested containers deeper than this are kept by identity only
_CONTAINERS = (dict, list, set, tuple)


class _Snap:
    """What a container held: its keys and values (the values kept alive, so their ids cannot
    be reused), their ids for a C-speed identity check, the empty containers it held (a cache
    forward fills; checked all at once with ``any``) and snapshots of the non-empty ones.
    Leaves (numbers, strings, tensors, modules) cost no Python call."""

    __slots__ = ("obj", "keys", "vals", "ids", "empty", "kids")

    def __init__(self, obj: Any, depth: int, memo: dict[int, Any]) -> None:
        self.obj = obj
        if isinstance(obj, dict):
            self.keys, self.vals = list(obj), list(obj.values())
        else:
            self.keys, self.vals = None, list(obj)
        self.ids = list(map(id, self.vals))
        self.empty, self.kids = [], []
        if depth >= _MAX_DEPTH:
            return
        for i, v in enumerate(self.vals):
            if isinstance(v, _CONTAINERS):
                if not v:
                    if not isinstance(v, tuple) and id(v) not in memo:
                        memo[id(v)] = v
                        self.empty.append(v)
                elif (k := _snap(v, depth + 1, memo)) is not None:
                    self.kids.append((i, k))

    def same(self) -> bool:
        """Whether the container (and every container it held) still holds what it held."""
        obj = self.obj
        if isinstance(obj, set):
            return obj == set(self.vals)
        if isinstance(obj, dict):
            if list(obj) != self.keys or list(map(id, obj.values())) != self.ids:
                return False
        elif list(map(id, obj)) != self.ids:
            return False
        return not any(self.empty) and all(k.same() for _, k in self.kids)

    def put_back(self) -> None:
        """Restore the container in place (tuples cannot change; their contents are restored)."""
        for e in self.empty:
            if e:
                e.clear()
        for _, k in self.kids:
            k.put_back()
        obj = self.obj
        if isinstance(obj, tuple) or self.same():
            return
        if isinstance(obj, dict):
            obj.clear()
            obj.update(zip(self.keys, self.vals))
        elif isinstance(obj, list):
            obj[:] = self.vals
        else:
            obj.clear()
            obj.update(self.vals)

    def kid_changed(self, i: int) -> bool:
        """Whether the container held at position ``i`` changed."""
        v = self.vals[i]
        for e in self.empty:
            if e is v:
                return bool(e)
        return any(j == i and not k.same() for j, k in self.kids)


def _snap(obj: Any, depth: int, memo: dict[int, Any]) -> _Snap | None:
    """A snapshot of container ``obj``, or None where there is nothing that can change: a tuple
    holding no containers, or a container already recorded (shared containers are recorded once)."""
    if isinstance(obj, tuple):
        if type(obj) is not tuple or not any(isinstance(v, _CONTAINERS) for v in obj):
            return None
    elif id(obj) in memo:
        return None
    else:
        memo[id(obj)] = obj
    return _Snap(obj, depth, memo)


class StateGuard:
    """Attributes of every submodule of ``model``, recorded now and put back by :meth:`restore`."""

    def __init__(self, model: nn.Module) -> None:
        memo: dict[int, Any] = {}
        self.mods = [(name, mod, _snap(mod.__dict__, 0, memo)) for name, mod in model.named_modules()]

    def restore(self) -> list[str]:
        """Put every attribute back; the ``module.attr`` names that forward had written."""
        written = []
        for name, mod, snap in self.mods:
            if snap is None or snap.same():
                continue
            before = {k: i for i, k in enumerate(snap.keys)}
            now = mod.__dict__
            missing = object()
            for key in sorted(set(before) | set(now), key=str):
                if key not in before or now.get(key, missing) is not snap.vals[before[key]] or \
                        snap.kid_changed(before[key]):
                    written.append(f"{name}.{key}" if name else str(key))
            snap.put_back()
        return written
