from cgap_graph.cli import main

main()
