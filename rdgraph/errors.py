"""Exception types that map onto rdgraph's exit statuses."""

__all__ = ["InputError", "Interrupted", "SolverError", "on_root"]


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


def on_root(comm, fn, *args):
    """Run ``fn`` on rank 0 and give every rank its value, or raise its InputError everywhere.

    For work that must happen once (reading a file) while failing identically on all ranks.
    """
    result, error = None, None
    if comm.rank == 0:
        try:
            result = fn(*args)
        except InputError as e:
            error = str(e)
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise InputError(error)
    return result
