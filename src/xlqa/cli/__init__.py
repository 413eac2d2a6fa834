"""The ``xlqa`` command line: one module per command group; each command parses flags and calls one job."""
