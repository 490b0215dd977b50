"""The lower bound (LB) of a block solve's step on large graphs, measured in the same run.

LB is one cached factorization of a single vertex's scalar operator ``a M + b K̄`` solving
all N right-hand sides in batches, split between the ranks: each rank holds the operator
whole (as the spectral solver's per-rank modes do) and solves its share of the N blocks. No
block solver of ``a (I ⊗ M) + b A`` can do less per step than solving N scalar problems of
that size, so ``step / LB`` says how close a solver is to it.
"""

from __future__ import annotations

import time

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.operators import BlockOperators
from rdgraph.solvers.mode_exchange import deal_groups, whole_matrices
from rdgraph.solvers.petsc import configure_ksp, direct_package
from rdgraph.solvers.spectral import BATCH_BYTES

__all__ = ["lower_bound_step"]


def lower_bound_step(operators: BlockOperators, mass_coefficient: float,
                     operator_coefficient: float, repeats: int = 3,
                     package: str | None = None) -> dict:
    """Time the LB operation (collective).

    Args:
        operators: The block operators of the run (its mass and average stiffness are used).
        mass_coefficient: ``a``.
        operator_coefficient: ``b``.
        repeats: Solves of all N right-hand sides; the fastest counts.
        package: The factorization package (default: MUMPS where PETSc has it, whose
            batched solve the spectral solver uses too).

    Returns:
        ``{"setup": s, "step": s}``: the factorization, and one solve of all N blocks (the
        slowest rank's, fastest of ``repeats``).
    """
    comm = operators.layout.comm
    N, size = operators.layout.num_blocks, operators.layout.size_global
    matrix = whole_matrices(comm, operators.pattern, operators.mass,
                            operators.average_stiffness(), operator_coefficient)(mass_coefficient)
    ksp = PETSc.KSP().create(PETSc.COMM_SELF)
    ksp.setOperators(matrix)
    comm.Barrier()
    start = time.perf_counter()
    configure_ksp(ksp, {"ksp_type": "preonly", "pc_type": "lu",
                        "pc_factor_mat_solver_type": package or direct_package()},
                  "rd_lower_bound_", set_up=True)
    setup = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    mine = len(deal_groups([1] * N, comm.size)[comm.rank])
    columns = max(1, min(mine, BATCH_BYTES // (8 * size)))
    rng = np.random.default_rng(comm.rank)
    rhs = rng.standard_normal((columns, size))
    solution = np.zeros((columns, size))
    dense = [PETSc.Mat().createDense(((size, None), (None, columns)), array=block.reshape(-1),
                                     comm=PETSc.COMM_SELF) for block in (rhs, solution)]
    best = np.inf
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        done = 0
        while done < mine:
            # The same block each time: the work per column is what is measured.
            ksp.matSolve(*dense)
            done += columns
        best = min(best, comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    for obj in [*dense, ksp, matrix]:
        obj.destroy()
    return {"setup": setup, "step": best}
