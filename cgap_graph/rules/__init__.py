"""Op rules: one registry (``registry.py``), one file per family of ops.

Importing ``cgap_graph.rules.all`` registers every family; ``cgap_graph`` does it on import.
"""
