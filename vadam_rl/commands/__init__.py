"""The ``vadam-rl`` command line: thin glue between arguments and the library."""
