"""Exception types that map onto rdgraph's exit statuses."""

__all__ = [
    "EnvironmentFailure",
    "InputError",
    "Interrupted",
    "RunDirectoryInUse",
    "SolverError",
    "on_root",
]


class InputError(ValueError):
    """Invalid user input: a config, mesh file, graph or expression (exit status 2)."""


class RunDirectoryInUse(InputError):
    """The run directory is locked by another rdgraph process (exit status 2)."""


class EnvironmentFailure(RuntimeError):
    """The machine refused: disk full, read-only directory, permission denied, out of memory
    (exit status 5). The message names the file and the OS error, and the last good
    checkpoint when there is one."""


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
        # What was saved, without the advice on how to continue (a sweep gives its own).
        self.detail = message


def on_root(comm, fn, *args):
    """Run ``fn`` on rank 0 and give every rank its value, or raise its error everywhere.

    For work that must happen once (reading a file) while failing identically on all ranks:
    an :class:`InputError` (or subclass) or :class:`EnvironmentFailure` of rank 0 is raised
    on every rank with the same type and message.
    """
    result, error = None, None
    if comm.rank == 0:
        try:
            result = fn(*args)
        except (InputError, EnvironmentFailure) as e:
            error = (type(e), str(e))
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise error[0](error[1])
    return result
