"""Import DOLFINx the same way whichever distribution provides it.

The ``dolfinx-solver-real`` wheel ships a ``dolfinx_solver`` module that must be imported
before ``dolfinx``/``petsc4py`` (it loads the MPI library the bindings were built against).
Conda and the official Docker images have no such module, and need nothing.
"""

try:  # pragma: no cover - depends on the installation
    import dolfinx_solver  # noqa: F401
except ImportError:  # pragma: no cover
    pass

import signal as _signal  # noqa: E402
import threading as _threading  # noqa: E402

from mpi4py import MPI  # noqa: E402

# PETSc installs a handler that turns SIGTERM into MPI_Abort(59). rdgraph's command line
# handles SIGTERM/SIGINT itself (a checkpoint in the time loop, then status 128 + signal), so
# the handler SIGTERM had before PETSc (the command line's, or the OS's default) is put back.
# PETSc keeps its handlers of SIGSEGV, SIGFPE, ...
_MAIN = _threading.current_thread() is _threading.main_thread()
_SIGTERM = _signal.getsignal(_signal.SIGTERM) if _MAIN else None

from petsc4py import PETSc  # noqa: E402

if _MAIN:
    _signal.signal(_signal.SIGTERM, _SIGTERM if _SIGTERM is not None else _signal.SIG_DFL)

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402,F401

from rdgraph.version import __version__  # noqa: E402

__all__ = ["MPI", "PETSc", "dolfinx", "versions"]


def versions() -> dict[str, str]:
    """Versions of the stack, for ``summary.json`` and ``rdgraph info``."""
    import platform

    import numpy

    major, minor, patch = PETSc.Sys.getVersion()
    return {
        "rdgraph": __version__,
        "dolfinx": dolfinx.__version__,
        "petsc": f"{major}.{minor}.{patch}",
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "mpi4py": __import__("mpi4py").__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
