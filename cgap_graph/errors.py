"""Error types. Each carries a one-line message that names the problem and the fix."""

from __future__ import annotations


class CgapError(Exception):
    """Base class: a problem with the user's input, reported on one line without a traceback."""


class TraceError(CgapError):
    """The model's forward cannot be traced into a graph."""


class ModelLoadError(CgapError):
    """A model file cannot be loaded (missing, corrupt, untrusted pickle, wrong architecture)."""


class SurgeryError(CgapError):
    """A channel selection cannot be applied (frozen group, bad indices, failed validation)."""


class InputShapeError(CgapError):
    """The given input shape does not fit the model."""
