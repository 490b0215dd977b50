"""rdgraph: gradient flows of the relative entropy on R^d × G with DOLFINx and PETSc.

A system of reaction–diffusion equations, one density per vertex of a weighted graph,
each drifting in its own potential on one shared mesh and coupled through the graph.

Example:
    >>> import rdgraph
    >>> settings = rdgraph.load_settings("examples/nas.toml", ["time.dt=1e-2"])
    >>> result = rdgraph.run(settings, out_dir="results/nas")
"""

import os as _os

# One BLAS thread per process: MPI ranks already occupy the cores, and threaded BLAS
# spinning beside busy-polling ranks made parallel runs several times slower (measured).
# Set before NumPy loads its BLAS; an explicit user setting wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")

import sys as _sys  # noqa: E402

# The command line (``rdgraph ...``, ``python -m rdgraph ...``) answers SIGTERM/SIGINT with
# status 143/130 from its first moment: its handlers go in before the imports below (seconds).
if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "rdgraph" or (
    getattr(_sys, "orig_argv", [])[1:3] == ["-m", "rdgraph"]
):
    from rdgraph.cli import _install_setup_signal_handlers

    _install_setup_signal_handlers()

__version__ = "0.1.0"

from rdgraph.problem.config import Settings, load_settings, settings_from_dict  # noqa: E402
from rdgraph.errors import InputError, SolverError  # noqa: E402
from rdgraph.simulation import RunResult, Simulation, run  # noqa: E402

__all__ = [
    "InputError",
    "RunResult",
    "Settings",
    "Simulation",
    "SolverError",
    "__version__",
    "load_settings",
    "run",
    "settings_from_dict",
]
