"""The version of rdgraph (one place: the package and ``summary.json`` read it)."""

__version__ = "0.1.0"
