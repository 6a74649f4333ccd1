"""The working module's own copy of a model's layers: fast for plain layers, exact for the rest."""

from __future__ import annotations





