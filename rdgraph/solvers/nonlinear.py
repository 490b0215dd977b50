"""PETSc SNES for block problems ``F(x) = 0`` whose residual and Jacobian come from Python.

The JKO step (:mod:`rdgraph.timestepping.jko`) assembles its residual and Jacobian from value arrays
on the shared scalar pattern (:mod:`rdgraph.discretization.blocks`), so no mixed element and no N²
forms are needed. This module only owns the SNES: options under the caller's prefix (``rd_`` by
default, so ``-rd_snes_monitor`` works), Newton with a backtracking line search, MUMPS for the
linearized solves, and a collective :class:`~rdgraph.errors.SolverError` when Newton fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rdgraph.compat import PETSc
from rdgraph.errors import SolverError
from rdgraph.solvers.petsc import OPTIONS_PREFIX, direct_package, options_in_database, reason_name

__all__ = ["NewtonSolver", "newton_options"]


def newton_options(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Default SNES options (without prefix), updated with ``overrides``."""
    options: dict[str, Any] = {
        "snes_type": "newtonls",
        # Backtracking guards the exp nonlinearity: a full Newton step can overflow exp.
        "snes_linesearch_type": "bt",
        "snes_rtol": 1e-14,  # the absolute residual is the mass defect: let atol decide
        "snes_atol": 1e-13,
        "snes_stol": 1e-14,  # Newton at round-off: the step stops changing x
        "snes_max_it": 50,
        "ksp_type": "preonly",
        "pc_type": "lu",
        "pc_factor_mat_solver_type": direct_package(),
    }
    options.update(overrides or {})
    return options


class NewtonSolver:
    """Newton (PETSc SNES) for ``F(x) = 0`` with Python callbacks.

    Args:
        residual: ``residual(x, f)`` writes ``F(x)`` into ``f``.
        jacobian: ``jacobian(x, J)`` writes ``F'(x)`` into ``J`` (same nonzero pattern).
        J: The Jacobian matrix, with its final nonzero pattern.
        options: PETSc options without prefix (see :func:`newton_options`).
        prefix: The options prefix, identical on every rank.
        name: What is being solved, for error messages.
    """

    def __init__(
        self,
        residual: Callable[[PETSc.Vec, PETSc.Vec], None],
        jacobian: Callable[[PETSc.Vec, PETSc.Mat], None],
        J: PETSc.Mat,
        options: dict[str, Any],
        *,
        prefix: str = OPTIONS_PREFIX,
        name: str,
    ):
        self.options = dict(options)
        self.name = name
        self._f = J.createVecLeft()
        snes = PETSc.SNES().create(J.getComm())
        snes.setFunction(lambda _snes, x, f: residual(x, f), self._f)
        snes.setJacobian(lambda _snes, x, A, P: jacobian(x, A), J, J)
        snes.setOptionsPrefix(prefix)
        self._prefix = prefix
        with options_in_database(self.options, prefix):
            snes.setFromOptions()
        self.snes = snes

    def solve(self, x: PETSc.Vec) -> tuple[int, int]:
        """Solve from the initial guess ``x`` in place; return (Newton, Krylov) iterations.

        Raises:
            SolverError: Newton diverged (on every rank: SNES reasons are collective).
        """
        # The linear solver is set up inside the solve, and reads some options only then.
        with options_in_database(self.options, self._prefix):
            self.snes.solve(None, x)
        reason = self.snes.getConvergedReason()
        if reason <= 0:
            raise SolverError(
                f"{self.name}: Newton did not converge "
                f"({reason_name(PETSc.SNES.ConvergedReason, reason)}) after "
                f"{self.snes.getIterationNumber()} iterations"
            )
        return self.snes.getIterationNumber(), self.snes.getLinearSolveIterations()

    def destroy(self) -> None:
        self.snes.destroy()
        self._f.destroy()
