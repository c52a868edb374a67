"""The `globmed-edge` command line: thin click commands over the library."""
