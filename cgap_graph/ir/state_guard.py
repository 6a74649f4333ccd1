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


def _snap(obj: Any, depth: int, memo: dict[int, Any]) -> Any:
    """A structural copy of ``obj``: ('dict'|'list'|'set'|'tuple', obj, items) or ('leaf', obj)."""
    if depth > _MAX_DEPTH or id(obj) in memo or isinstance(obj, nn.Module):
        return ("leaf", obj)
    if isinstance(obj, dict):
        memo[id(obj)] = obj
        return ("dict", obj, [(k, _snap(v, depth + 1, memo)) for k, v in obj.items()])
    if isinstance(obj, list):
        memo[id(obj)] = obj
        return ("list", obj, [_snap(v, depth + 1, memo) for v in obj])
    if isinstance(obj, set):
        return ("set", obj, list(obj))
    if type(obj) is tuple:
        return ("tuple", obj, [_snap(v, depth + 1, memo) for v in obj])
    return ("leaf", obj)


def _same(snap: tuple) -> bool:
    """Whether the object a snapshot was taken of still holds what it held."""
    kind, obj = snap[0], snap[1]
    if kind == "leaf":
        return True
    items = snap[2]
    if kind == "dict":
        return len(obj) == len(items) and all(
            k in obj and obj[k] is s[1] and _same(s) for k, s in items)
    if kind == "set":
        return obj == set(items)
    return len(obj) == len(items) and all(a is s[1] and _same(s) for a, s in zip(obj, items))


def _put_back(snap: tuple) -> Any:
    """Restore the snapshot's object in place; returns that object."""
    kind, obj = snap[0], snap[1]
    if kind == "dict":
        vals = [(k, _put_back(s)) for k, s in snap[2]]
        if not _same(snap):
            obj.clear()
            obj.update(vals)
    elif kind == "list":
        vals = [_put_back(s) for s in snap[2]]
        if not _same(snap):
            obj[:] = vals
    elif kind == "set" and obj != set(snap[2]):
        obj.clear()
        obj.update(snap[2])
    elif kind == "tuple":
        for s in snap[2]:
            _put_back(s)
    return obj


class StateGuard:
    """Attributes of every submodule of ``model``, recorded now and put back by :meth:`restore`."""

    def __init__(self, model: nn.Module) -> None:
        memo: dict[int, Any] = {}
        self.mods = [(name, mod, _snap(mod.__dict__, 0, memo)) for name, mod in model.named_modules()]

    def restore(self) -> list[str]:
        """Put every attribute back; the ``module.attr`` names that forward had written."""
        written = []
        for name, mod, snap in self.mods:
            if _same(snap):
                continue
            before = dict(snap[2])
            now = mod.__dict__
            for key in sorted(set(before) | set(now), key=str):
                s = before.get(key)
                if s is None or now.get(key, s) is not s[1] or not _same(s):
                    written.append(f"{name}.{key}" if name else str(key))
            _put_back(snap)
        return written
