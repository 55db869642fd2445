"""The ``digitrec`` command line: one module per command group, flags generated from the configs."""

from digitrec.cli.main import main

__all__ = ["main"]
