"""PETSc SNES for block problems ``F(x) = 0`` whose residual and Jacobian come from Python.

The JKO step (:mod:`rdgraph.timestepping.jko`) assembles its residual and Jacobian from value arrays
on the shared scalar pattern (:mod:`rdgraph.discretization.blocks`), so no mixed element and no N²
forms are needed. This module only owns the SNES: options under the caller's prefix (``rd_`` by
default, so ``-rd_snes_monitor`` works), Newton with a backtracking line search, MUMPS for the
linearized solves, and a collective :class:`~rdgraph.errors.SolverError` when Newton fails.

Convergence is PETSc's test with an absolute tolerance (the residual is a mass defect, so a
relative one would let a step lose mass when the first residual is large), and one more
state that counts as converged: Newton that stops making progress at a residual below what
round-off allows for the problem at hand. The residual cannot be resolved below about
``ε (‖ |J| |x| ‖ + s)``, ε the machine epsilon, ``|J| |x|`` the sizes of the terms that depend
on x (large where ρ is large, or where gibbs rates ``exp(ΔV/2β)`` are) and ``s`` the size of
those that do not (``M ρ^n``, given by the caller). Newton stagnates there: the residual
stops falling (by less than half in an iteration), or the line search finds no decrease.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rdgraph.compat import PETSc
from rdgraph.errors import SolverError
from rdgraph.solvers.petsc import OPTIONS_PREFIX, direct_package, options_in_database, reason_name

__all__ = ["ROUNDOFF_FACTOR", "STAGNATION_RATIO", "NewtonSolver", "newton_options"]

# The round-off floor of the residual is ROUNDOFF_FACTOR · ε (‖|J||x|‖ + s): a margin over the
# bare estimate for the accumulation over a row's terms.
ROUNDOFF_FACTOR = 16.0
# An iteration that reduces the residual by less than this factor is not converging.
STAGNATION_RATIO = 0.5
# Failures that mean "no more progress", as opposed to a residual that is NaN or growing.
_STAGNATION = (
    PETSc.SNES.ConvergedReason.DIVERGED_LINE_SEARCH,
    PETSc.SNES.ConvergedReason.DIVERGED_MAX_IT,
)


def newton_options(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Default SNES options (without prefix), updated with ``overrides``."""
    options: dict[str, Any] = {
        "snes_type": "newtonls",
        # Backtracking guards the exp nonlinearity: a full Newton step can overflow exp.
        "snes_linesearch_type": "bt",
        "snes_rtol": 0.0,  # the residual is the mass defect: atol and the round-off floor decide
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
        self._magnitude = J.duplicate()  # |J|, for the round-off floor
        self._abs_x, self._abs_jx = J.createVecs()
        self._jacobian = jacobian
        self._J = J
        self._scale = 0.0
        self._floor = 0.0  # at the latest Jacobian's iterate
        self._previous_norm = np.inf
        self.stagnated = 0  # solves accepted at the round-off floor
        snes = PETSc.SNES().create(J.getComm())
        snes.setFunction(lambda _snes, x, f: residual(x, f), self._f)

        def update_jacobian(_snes, x, A, P):
            jacobian(x, A)
            self._floor = self._magnitude_floor(x)

        snes.setJacobian(update_jacobian, J, J)
        snes.setConvergenceTest(self._converged)
        snes.setOptionsPrefix(prefix)
        self._prefix = prefix
        with options_in_database(self.options, prefix):
            snes.setFromOptions()
        self.snes = snes

    def _magnitude_floor(self, x: PETSc.Vec) -> float:
        """``ROUNDOFF_FACTOR · ε (‖|J||x|‖ + s)`` with the current ``J`` (collective)."""
        indptr, indices, values = self._J.getValuesCSR()
        self._magnitude.setValuesCSR(indptr, indices, np.abs(values))
        self._magnitude.assemble()
        x.copy(self._abs_x)
        self._abs_x.abs()
        self._magnitude.mult(self._abs_x, self._abs_jx)
        return ROUNDOFF_FACTOR * np.finfo(float).eps * (self._abs_jx.norm() + self._scale)

    def _converged(self, snes: PETSc.SNES, iteration: int, norms) -> int:
        """PETSc's default test, and stagnation at the round-off floor (collective)."""
        xnorm, ynorm, fnorm = norms
        rtol, atol, stol, _ = snes.getTolerances()
        reason = PETSc.SNES.ConvergedReason
        if iteration == 0:
            self._relative_target = rtol * fnorm
            self._previous_norm = np.inf
        previous, self._previous_norm = self._previous_norm, fnorm
        if not np.isfinite(fnorm):
            return reason.DIVERGED_FNORM_NAN
        if fnorm < atol:
            return reason.CONVERGED_FNORM_ABS
        if iteration == 0:
            return reason.CONVERGED_ITERATING
        if fnorm <= self._relative_target:
            return reason.CONVERGED_FNORM_RELATIVE
        if ynorm < stol * xnorm:
            return reason.CONVERGED_SNORM_RELATIVE
        if fnorm <= self._floor and fnorm > STAGNATION_RATIO * previous:
            self.stagnated += 1
            return reason.CONVERGED_FNORM_ABS
        return reason.CONVERGED_ITERATING

    def solve(self, x: PETSc.Vec, *, scale: float = 0.0) -> tuple[int, int]:
        """Solve from the initial guess ``x`` in place; return (Newton, Krylov) iterations.

        Args:
            x: The initial guess, overwritten by the solution.
            scale: The size (2-norm) of the residual's terms that do not depend on ``x``,
                e.g. ``‖M ρ^n‖``: part of the round-off floor below which the residual
                counts as converged.

        Raises:
            SolverError: Newton diverged (on every rank: SNES reasons are collective).
        """
        self._scale = scale
        self._floor = ROUNDOFF_FACTOR * np.finfo(float).eps * scale
        # The linear solver is set up inside the solve, and reads some options only then.
        with options_in_database(self.options, self._prefix):
            self.snes.solve(None, x)
        reason = self.snes.getConvergedReason()
        if reason in _STAGNATION:
            # The line search gave up before the test above saw the stagnation: judge the
            # final iterate by its own Jacobian.
            self._jacobian(x, self._J)
            if self.snes.getFunctionNorm() <= self._magnitude_floor(x):
                self.stagnated += 1
                reason = PETSc.SNES.ConvergedReason.CONVERGED_FNORM_ABS
        if reason <= 0:
            raise SolverError(
                f"{self.name}: Newton did not converge "
                f"({reason_name(PETSc.SNES.ConvergedReason, reason)}) after "
                f"{self.snes.getIterationNumber()} iterations"
            )
        return self.snes.getIterationNumber(), self.snes.getLinearSolveIterations()

    def destroy(self) -> None:
        self.snes.destroy()
        for obj in (self._f, self._magnitude, self._abs_x, self._abs_jx):
            obj.destroy()
