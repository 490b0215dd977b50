"""Exception types that map onto rdgraph's exit statuses."""

__all__ = ["InputError", "Interrupted", "SolverError"]


class InputError(ValueError):
    """Invalid user input: a config, mesh file, graph or expression (exit status 2)."""


class SolverError(RuntimeError):
    """A linear or nonlinear solve that did not converge (exit status 3)."""


class Interrupted(RuntimeError):
    """The run stopped on SIGTERM/SIGINT after writing a checkpoint (exit status 128 + signal).

    Args:
        signum: The signal received.
        message: What was saved and how to resume.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
