"""What the steppers that solve for the potentials Φ = β log ρ + V with Newton share.

The JKO step (:mod:`rdgraph.timestepping.jko`) and the upwind coupling
(:mod:`rdgraph.timestepping.upwind`) both take the nodal potentials ``Φ_g`` as unknowns, with
``ρ_g = exp((Φ_g − V_g)/β)`` nodally, and a residual ``m ∘ (ρ(Φ) − ρ^n) + ...`` whose first
term is a mass defect. This base class holds that common part: the density of a potential,
the size of ``m ∘ ρ^n`` for Newton's round-off floor, one Newton solve from ``Φ^n`` and the
Stepper bookkeeping.
"""

from __future__ import annotations

import numpy as np

from rdgraph.compat import PETSc
from rdgraph.problem.config import Scheme, SolverSettings
from rdgraph.timestepping.base import Stepper

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
        finally:
            potential.destroy()
        self.steps_taken += 1
        self.newton_iterations += newton
        self.linear_iterations += krylov
        return newton, krylov

    def with_dt(self, dt: float) -> PotentialNewtonStepper:
        return type(self)(self.model, self._operators, self.scheme, dt, self._solver_settings,
                          self._overrides)

    def solver_stats(self) -> dict[str, int]:
        return {"steps": self.steps_taken, "nonlinear_iterations": self.newton_iterations,
                "linear_iterations": self.linear_iterations}

    @property
    def solver_options(self) -> dict:
        return {**self.solver.options, **(self._overrides or {})}
