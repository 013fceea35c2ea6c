"""Migration coordination: the tool adapter, SQL lint, catalog diff and the merge gate."""
