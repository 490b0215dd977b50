"""What the steppers that solve for the potentials Φ = β log ρ + V with Newton share.

The JKO step (:mod:`rdgraph.timestepping.jko`) and the upwind coupling
(:mod:`rdgraph.timestepping.upwind`) both take the nodal potentials ``Φ_g`` as unknowns, with
``ρ_g = exp((Φ_g − V_g)/β)`` nodally, and a residual ``m ∘ (ρ(Φ) − ρ^n) + ...`` whose first
term is a mass defect. This base class holds that common part: the density of a potential,
the size of ``m ∘ ρ^n`` for Newton's round-off floor, one Newton solve from ``Φ^n`` and the
Stepper bookkeeping.

Both conserve ``Σ_g mᵀρ_g`` exactly in exact arithmetic: the operator on Φ has no mass, and a
constant added to every ``Φ_g`` changes nothing but the mass. Newton stops at a residual of
its tolerance, though, and the operator's columns sum to zero only to rounding, which adds up
over long steps. The solution's densities are therefore scaled to the mass of ρ^n, which is
that constant shift of the potentials (β log of the ratio) and keeps them positive, where the
defect is of rounding size (:data:`~rdgraph.timestepping.base.MASS_ROUNDING_LIMIT`).
"""

from __future__ import annotations

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.problem.config import Scheme, SolverSettings
from rdgraph.timestepping.base import Stepper, is_mass_rounding

__all__ = ["PotentialNewtonStepper"]


class PotentialNewtonStepper(Stepper):
    """A :class:`Stepper` that solves for the nodal potentials with a Newton solver.

    This constructor keeps the arguments (for :meth:`with_dt`); a subclass then sets
    ``solver`` (a :class:`~rdgraph.solvers.nonlinear.NewtonSolver`), ``_potential`` (``V`` at
    the owned nodes of every block), ``_block_mass`` (the lumped mass ``m`` of every block)
    and ``_rho_old`` (a vector for ρ^n).
    """

    newton_iterations = 0  # over all steps
    linear_iterations = 0

    def __init__(self, model, operators, scheme: str | Scheme, dt: float,
                 solver: SolverSettings, overrides: dict | None = None):
        self.model = model
        self.layout = operators.layout
        self.scheme = Scheme(scheme)
        self.dt = dt
        self._operators = operators
        self._solver_settings = solver
        self._overrides = overrides
        self.steps_taken = 0
        self.beta = model.settings.beta

    def _density(self, phi: np.ndarray) -> np.ndarray:
        # An overflow makes the residual inf, and the line search backs off.
        with np.errstate(over="ignore"):
            return np.exp((phi - self._potential) / self.beta)

    def _mass_scale(self) -> float:
        """``‖m ∘ ρ^n‖``: the residual's part that does not depend on Φ (collective)."""
        local = float(np.sum((self._block_mass * self._rho_old.array_r) ** 2))
        return float(np.sqrt(self.layout.comm.allreduce(local)))

    def _solve_potentials(self, x: PETSc.Vec, phi: np.ndarray) -> tuple[int, int]:
        """Newton from the potentials ``phi``; ``x`` becomes the density of the solution.

        Returns:
            The (Newton, Krylov) iterations.

        Raises:
            SolverError: Newton diverged, on every rank.
        """
        potential = x.duplicate()
        potential.array[:] = phi
        try:
            newton, krylov = self.solver.solve(potential, scale=self._mass_scale())
            x.array[:] = self._density(potential.array_r)
            self._restore_mass(x)
        finally:
            potential.destroy()
        self.steps_taken += 1
        self.newton_iterations += newton
        self.linear_iterations += krylov
        return newton, krylov

    def _restore_mass(self, x: PETSc.Vec) -> None:
        """Scale the densities ``x`` to the mass ``Σ mᵀρ^n`` of the step's start (collective).

        The factor differs from 1 by Newton's mass defect (1e-14 .. 1e-11 relative).
        """
        local = np.array([self._block_mass @ self._rho_old.array_r,
                          self._block_mass @ x.array_r])
        total = np.empty_like(local)
        self.layout.comm.Allreduce(local, total, op=MPI.SUM)
        if total[1] > 0 and is_mass_rounding(total[0], total[1]):
            x.scale(total[0] / total[1])

    def with_dt(self, dt: float) -> PotentialNewtonStepper:
        return type(self)(self.model, self._operators, self.scheme, dt, self._solver_settings,
                          self._overrides)

    def solver_stats(self) -> dict[str, int]:
        return {"steps": self.steps_taken, "nonlinear_iterations": self.newton_iterations,
                "linear_iterations": self.linear_iterations}

    @property
    def solver_options(self) -> dict:
        return {**self.solver.options, **(self._overrides or {})}
