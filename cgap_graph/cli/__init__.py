"""The ``cgap-graph`` command line: one module per command family (``inspect_cmd``, ``edit_cmds``
for grow/prune/seed, ``train_cmd``, ``export_cmd``, ``cost_cmd``, ``demo_cmd``), the shared
loader and options (``common``) and the reports (``report``)."""

from cgap_graph.cli.app import app, console_script, main

__all__ = ["app", "console_script", "main"]
