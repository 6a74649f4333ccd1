"""Abstract values of the channel analysis: tensors (one channel layout per dimension) and
Python scalars computed from sizes."""

from __future__ import annotations

from typing import Any


class TInfo:
    """Analysis value of a tensor: one channel expression per dimension.

    ``keeps_zero``: when every producer of the groups in this tensor has its
    masked units zeroed, are those units zero here too? (False after sigmoid, exp, +1 ...)
    """

    __slots__ = ("exprs", "keeps_zero", "shape")

    def __init__(self, exprs: tuple, keeps_zero: bool, shape: tuple) -> None:
        self.exprs = exprs
        self.keeps_zero = keeps_zero
        self.shape = shape

    @property
    def ndim(self) -> int:
        return len(self.exprs)

    def __repr__(self) -> str:
        return f"TInfo({self.exprs}, keeps_zero={self.keeps_zero})"


class SizeV:
    """Analysis value of a Python scalar computed from tensor sizes: the layouts it reads."""

    __slots__ = ("exprs", "value")

    def __init__(self, exprs: tuple, value: Any) -> None:
        self.exprs = exprs
        self.value = value
