from cgap_graph.cli import console_script

console_script()
