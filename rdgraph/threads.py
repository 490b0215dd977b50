"""One BLAS thread per process.

MPI ranks already occupy the cores, and threaded BLAS spinning beside busy-polling ranks
made parallel runs several times slower (the product graphs' modal transforms are BLAS
``matmul`` passes). The thread counts are read from the environment when NumPy loads its
BLAS, so :func:`single_threaded_blas` must run before that; if NumPy was already loaded
(a notebook that imported it first), :func:`limit_loaded_blas` limits the loaded libraries
at run time instead. An explicit user setting wins in both cases.

This module imports nothing heavy: ``rdgraph/__init__`` runs it before NumPy loads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["BLAS_THREAD_VARIABLES", "LIBRARY_VARIABLES", "limit_loaded_blas",
           "single_threaded_blas"]

#: The variables OpenBLAS, OpenMP and MKL read for their thread counts.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: The variable that wins for each BLAS library (threadpoolctl's ``internal_api`` names):
#: with all three set to 1 by :func:`single_threaded_blas`, a user's ``OMP_NUM_THREADS``
#: alone does not change OpenBLAS's count, so it does not here either.
LIBRARY_VARIABLES = {"openblas": "OPENBLAS_NUM_THREADS", "mkl": "MKL_NUM_THREADS"}


def single_threaded_blas(env: MutableMapping[str, str] = os.environ) -> None:
    """One BLAS thread in ``env`` (this process's, or a child's), where the user chose none."""
    for name in BLAS_THREAD_VARIABLES:
        env.setdefault(name, "1")


def limit_loaded_blas() -> list[str]:
    """Limit the BLAS libraries already loaded in this process to one thread, each unless
    the user set its own variable, as :func:`single_threaded_blas` would have.

    Returns:
        The libraries limited (none before NumPy is loaded).
    """
    if "numpy" not in sys.modules:
        return []
    apis = [api for api, name in LIBRARY_VARIABLES.items() if name not in os.environ]
    if not apis:
        return []
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    limited = []
    for api in apis:
        selected = controller.select(internal_api=api)
        if selected.lib_controllers:
            selected.limit(limits=1)
            limited.append(api)
    return limited
