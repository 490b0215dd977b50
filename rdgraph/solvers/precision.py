"""The precision of the spectral solver's factorizations where they only precondition.

Where the vertex operators differ, the spectral solver's factorizations of ``s M + b K̄``
precondition FGMRES on the true operator: they need not be exact, only much closer to the
true inverse than the averaged operator ``K̄`` is. MUMPS can factorize and solve them in single
precision (PETSc's ``-pc_precision single``), which halves the memory of the factors and the
bytes each solve reads. The solve's relative error is then about ``ε_single κ``, with ``κ``
the condition number of the scalar problem: kept small, the outer iteration does not notice
it.
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import InputError
from rdgraph.solvers.petsc import configure_ksp

__all__ = ["SINGLE_PRECISION_MAX_CONDITION", "condition_estimate", "factorization_precision",
           "mumps_single_precision", "mumps_single_precision_on"]

# ``auto`` factorizes in single precision up to this estimated condition number: a
# single-precision solve's forward error is about 1e-8 times the estimate (so at most 2e-4
# here), which leaves FGMRES's iteration count unchanged.
SINGLE_PRECISION_MAX_CONDITION = 2e4


def condition_estimate(operators, mass_coefficient: float, operator_coefficient: float
                       ) -> float:
    """Estimated condition number of the worst-conditioned scalar problem ``a M + b K̄``.

    The lowest shift is ``a`` (the graph matrix has the eigenvalue 0), and Gershgorin's bound
    on ``M_L⁻¹ K̄`` (``M_L`` the lumped mass) stands for the highest eigenvalue of ``M⁻¹ K̄``:
    ``κ ≈ 1 + (b/a) max_i Σ_j |K̄_ij| / Σ_j M_ij``. For P1 that of ``M⁻¹ K̄`` is up to d + 2
    times higher (``M ≥ M_L / (d + 2)``). Higher degrees have
    mass rows that sum to zero or less (P2 vertices): no estimate, infinity.
    """
    if operators.model.degree != 1:
        return math.inf
    starts = operators.pattern.indptr[:-1]
    ratio = 0.0
    if len(starts):
        stiffness = np.add.reduceat(np.abs(operators.average_stiffness()), starts)
        mass = np.add.reduceat(operators.mass, starts)
        ratio = float(np.max(stiffness / mass))
    ratio = operators.layout.comm.allreduce(ratio, op=MPI.MAX)
    return 1.0 + operator_coefficient / mass_coefficient * ratio


def _links_single_precision_mumps() -> bool:
    """Whether the loaded PETSc links MUMPS's single-precision real solver (``smumps_c``), as
    PETSc built with MUMPS mixed precision does. Looked up, not tried: without it, PETSc fails
    the factorization in a state that destroying the solver does not survive."""
    try:
        return hasattr(ctypes.CDLL(PETSc.__file__), "smumps_c")
    except OSError:
        return False


@functools.cache
def mumps_single_precision() -> bool:
    """Whether this PETSc's MUMPS factorizes in single precision (a double-precision PETSc
    needs MUMPS built with mixed precision, and a PETSc that reads ``-pc_precision``).

    Where MUMPS's single-precision solver is linked, a 2×2 system of condition 4e5 is solved
    with ``-pc_precision single``: a single-precision solve misses by about 1e-2, a double one
    (an older PETSc ignores the option) by 1e-11. Once per process.
    """
    if not PETSc.Sys.hasExternalPackage("mumps") or not _links_single_precision_mumps():
        return False
    A = PETSc.Mat().createAIJ(size=(2, 2), nnz=2, comm=PETSc.COMM_SELF)
    A.setValues([0, 1], [0, 1], [1.0, 1.0, 1.0, 1.0 + 1e-5])
    A.assemble()
    b, x = A.createVecs()
    b.array[:] = [2.0, 2.0 + 1e-5]  # x = (1, 1)
    ksp = PETSc.KSP().create(PETSc.COMM_SELF)
    ksp.setOperators(A)
    try:
        configure_ksp(ksp, {"ksp_type": "preonly", "pc_type": "lu",
                            "pc_factor_mat_solver_type": "mumps", "pc_precision": "single"},
                      "rd_precision_probe_", set_up=True)
        ksp.solve(b, x)
        supported = bool(np.abs(x.array - 1.0).max() > 1e-6)
    except PETSc.Error:
        supported = False
    finally:
        for obj in (ksp, A, b, x):
            obj.destroy()
    return supported


def mumps_single_precision_on(comm: MPI.Comm) -> bool:
    """:func:`mumps_single_precision` on every rank of ``comm`` (collective): the ranks must
    agree, or one would factorize in single precision and wait for another that raised."""
    return comm.allreduce(mumps_single_precision(), op=MPI.LAND)


def factorization_precision(setting: str, *, preconditions: bool, condition: float,
                            supported: bool) -> str:
    """``"single"`` or ``"double"``: what ``[solver] factorization_precision`` resolves to.

    Args:
        setting: ``auto``, ``double`` or ``single``.
        preconditions: The factorizations precondition an outer Krylov solve (the spectral
            solve is not exact); exact solves always factorize in double precision.
        condition: :func:`condition_estimate` (read by ``auto`` only).
        supported: :func:`mumps_single_precision`.

    Raises:
        InputError: ``single`` was asked for where MUMPS cannot.
    """
    if setting == "double" or not preconditions:
        return "double"
    if setting == "single":
        if not supported:
            raise InputError(
                "solver.factorization_precision = 'single': this PETSc has no MUMPS that "
                "factorizes in single precision (it needs MUMPS with mixed precision); use "
                "'auto' or 'double'")
        return "single"
    return "single" if supported and condition <= SINGLE_PRECISION_MAX_CONDITION else "double"
