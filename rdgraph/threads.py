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

__all__ = ["BLAS_THREAD_VARIABLES", "limit_loaded_blas", "single_threaded_blas",
           "user_chose_threads"]

#: The variables OpenBLAS, OpenMP and MKL read for their thread counts.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def user_chose_threads(env: MutableMapping[str, str] = os.environ) -> bool:
    """Whether ``env`` sets any BLAS thread count."""
    return any(name in env for name in BLAS_THREAD_VARIABLES)


def single_threaded_blas(env: MutableMapping[str, str] = os.environ) -> None:
    """One BLAS thread in ``env`` (this process's, or a child's), where the user chose none."""
    for name in BLAS_THREAD_VARIABLES:
        env.setdefault(name, "1")


def limit_loaded_blas() -> bool:
    """Limit the BLAS libraries already loaded in this process to one thread.

    Returns:
        Whether a limit was set: only when NumPy is loaded and the user set no thread count.
    """
    if "numpy" not in sys.modules or user_chose_threads():
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return True
