"""Exception types that map onto rdgraph's exit statuses."""

__all__ = ["InputError", "SolverError"]


class InputError(ValueError):
    """Invalid user input: a config, mesh file, graph or expression (exit status 2)."""


class SolverError(RuntimeError):
    """A linear or nonlinear solve that did not converge (exit status 3)."""
