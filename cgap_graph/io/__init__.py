"""Files: atomic writes, the safe cgap-graph model format, loading models given on the command line."""
