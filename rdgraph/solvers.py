"""Linear solvers for the block system, configured through PETSc options under a prefix.

Precedence, lowest first: rdgraph's defaults, ``[solver]`` in the config (including its
``petsc_options`` table), then command-line options such as ``-rd_ksp_monitor``.
"""

from __future__ import annotations

from typing import Any

from rdgraph.compat import PETSc
from rdgraph.config import SolverSettings
from rdgraph.errors import SolverError

__all__ = ["OPTIONS_PREFIX", "LinearSolver", "solver_options"]

OPTIONS_PREFIX = "rd_"


def _direct_package() -> str:
    # MUMPS is in the wheel and in the official images; fall back to PETSc's own LU.
    for package in ("mumps", "superlu_dist"):
        if PETSc.Sys.hasExternalPackage(package):
            return package
    return "petsc"


def solver_options(settings: SolverSettings, overrides: dict[str, Any] | None = None) -> dict:
    """The PETSc options (without prefix) for the block solve."""
    if settings.type == "direct":
        options: dict[str, Any] = {
            "ksp_type": "preonly",
            "pc_type": "lu",
            "pc_factor_mat_solver_type": _direct_package(),
        }
    else:
        options = {
            "ksp_type": settings.ksp_type,
            "pc_type": settings.pc_type,
            "ksp_rtol": settings.rtol,
            "ksp_atol": settings.atol,
            "ksp_max_it": settings.max_it,
        }
        if settings.pc_type == "bjacobi":
            options["sub_pc_type"] = "ilu"
    options.update(settings.petsc_options)
    options.update(overrides or {})
    return options


def _option_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None or value == "" else str(value)


class LinearSolver:
    """A KSP for one fixed matrix, set up once and applied every step.

    Args:
        A: The system matrix (kept fixed: ``dt`` is fixed).
        options: PETSc options without the prefix.
        prefix: The options prefix, identical on every rank.
        name: What is being solved, for error messages.
    """

    def __init__(self, A: PETSc.Mat, options: dict, *, prefix: str = OPTIONS_PREFIX, name: str):
        self.name = name
        self.ksp = PETSc.KSP().create(A.getComm())
        self.ksp.setOperators(A)
        self.ksp.setOptionsPrefix(prefix)
        database = PETSc.Options()
        for key, value in options.items():
            database.setValue(f"{prefix}{key}", _option_value(value))
        try:
            self.ksp.setFromOptions()
            self.ksp.setUp()
        finally:
            # Leave the global database as found: the next solver may want other options.
            for key in options:
                database.delValue(f"{prefix}{key}")

    def solve(self, b: PETSc.Vec, x: PETSc.Vec) -> int:
        """Solve ``A x = b`` (x is the initial guess); return the iteration count.

        Raises:
            SolverError: The solve did not converge.
        """
        self.ksp.solve(b, x)
        reason = self.ksp.getConvergedReason()
        if reason < 0:
            names = {v: k for k, v in vars(PETSc.KSP.ConvergedReason).items() if k.isupper()}
            raise SolverError(
                f"{self.name}: the linear solve diverged ({names.get(reason, reason)}, "
                f"{self.ksp.getIterationNumber()} iterations)"
            )
        return self.ksp.getIterationNumber()

    def destroy(self) -> None:
        self.ksp.destroy()
