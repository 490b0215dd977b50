"""rdgraph: gradient flows of the relative entropy on R^d × G with DOLFINx and PETSc.

A system of reaction–diffusion equations, one density per vertex of a weighted graph,
each drifting in its own potential on one shared mesh and coupled through the graph.

Example:
    >>> import rdgraph
    >>> settings = rdgraph.load_settings("examples/nas_toy.toml", ["time.t_end=1.0"])
    >>> result = rdgraph.run(settings, out_dir="results/nas_toy")
"""

from rdgraph import threads as _threads

# One BLAS thread per process (see rdgraph.threads): before NumPy loads, or, when it was
# imported first, by limiting its loaded BLAS.
_threads.limit_loaded_blas()
_threads.single_threaded_blas()

import importlib as _importlib  # noqa: E402

from rdgraph.errors import InputError, SolverError  # noqa: E402
from rdgraph.problem.config import Settings, load_settings, settings_from_dict  # noqa: E402
from rdgraph.version import __version__  # noqa: E402

# The simulation imports DOLFINx and PETSc; it is loaded on first use of these names, so that
# ``import rdgraph.problem`` (pure Python: configs, graphs, expressions) works without them.
_SIMULATION_NAMES = ("RunResult", "Simulation", "run")


def __getattr__(name: str):
    if name in _SIMULATION_NAMES:
        return getattr(_importlib.import_module("rdgraph.simulation"), name)
    raise AttributeError(f"module 'rdgraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SIMULATION_NAMES])


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
