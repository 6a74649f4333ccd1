"""The ``cgap-graph`` command line: one module per command family."""

from cgap_graph.cli.app import app, main

__all__ = ["app", "main"]
