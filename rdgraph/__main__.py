from rdgraph.cli import entry_point

entry_point()
