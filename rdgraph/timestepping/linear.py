"""Time schemes for ``(I ⊗ M) ρ' + A ρ = F``: implicit Euler, Crank–Nicolson, BDF2.

Each step solves one system with the matrix ``a (I ⊗ M) + b τ A``, set up once per run for a
fixed β.

The columns of ``A`` sum to zero (no-flux walls, a conservative coupling), so every scheme
conserves the total mass ``Σ_g 1ᵀMρ_g`` up to the sources' mass, in exact arithmetic. In
floating point the assembled columns sum to zero only to rounding, and a Krylov solve leaves a
residual: each step then changes the mass by about ``τ 1ᵀAρ``, with the same sign step after
step, which adds up over long or many steps. Each step therefore scales the densities back
to the mass the scheme conserves (a scaling, unlike an added constant, keeps a density that
vanishes somewhere from turning negative there), but only a defect of rounding size
(:data:`~rdgraph.timestepping.base.MASS_ROUNDING_LIMIT`): a larger one is a fault to be seen,
not hidden.

Under a temperature schedule ``A = A(β(t))``: implicit Euler and BDF2 take β at the step's
end, ``A(β(t_{n+1})) ρ^{n+1}``, as their one evaluation of ``A ρ`` is there; Crank–Nicolson,
the trapezoidal rule, takes ``A(β(t_n)) ρ^n`` and ``A(β(t_{n+1})) ρ^{n+1}``, which keeps it
second order. The solver's set-up (a factorization, a spectral or vertex-block
preconditioner) is made again only when the operator's entries may have changed by more
than a factor :data:`BETA_SETUP_RATIO` since it was made (β itself, and for gibbs the rates
``exp((V_g − V_h)/2β)``, which move far more than β when β is small); in between, FGMRES
solves the current operator, preconditioned by the last set-up
(:class:`~rdgraph.solvers.block.ReusedSetupSolver`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.blocks import BlockLayout
from rdgraph.discretization.model import Model
from rdgraph.discretization.operators import BlockOperators
from rdgraph.errors import SolverError
from rdgraph.problem.config import Scheme, SolverSettings
from rdgraph.problem.schedule import BetaSchedule
from rdgraph.solvers.block import BlockSolver, ReusedSetupSolver, more_robust_type
from rdgraph.timestepping.base import History, Stepper, is_mass_rounding

__all__ = ["BETA_SETUP_RATIO", "SCHEME_COEFFICIENTS", "TimeStepper"]

#: Under a temperature schedule, a solver set-up is made again once the operator may have
#: changed by more than this factor since the last one
#: (:meth:`~rdgraph.discretization.operators.BlockOperators.change_factor`: the ratio of the
#: β's times the largest change of a gibbs rate); in between it preconditions FGMRES on the
#: current operator. See docs/notes/annealing.md for the measurement behind the value.
BETA_SETUP_RATIO = 1.25


@dataclass(frozen=True)
class _Scheme:
    mass: float  # a in a (I⊗M) ρ^{n+1} + b τ A ρ^{n+1} = ...
    operator: float  # b
    order: int


# Keyed by Scheme, a str enum: the plain names of the config find them too.
SCHEME_COEFFICIENTS = {
    Scheme.IMPLICIT_EULER: _Scheme(1.0, 1.0, 1),
    Scheme.CRANK_NICOLSON: _Scheme(1.0, 0.5, 2),
    Scheme.BDF2: _Scheme(1.5, 1.0, 2),
}


class TimeStepper(Stepper):
    """Advances the block state ``x`` by one fixed step ``dt`` of the chosen scheme.

    BDF2's history is ρ^{n-1} (``History.vectors["previous"]``).

    Args:
        model: Forms and sources.
        operators: The assembled block operators.
        scheme: "implicit-euler", "crank-nicolson" or "bdf2" (started by one implicit-Euler step).
        dt: The fixed time step.
        solver: The ``[solver]`` settings.
        overrides: Command-line PETSc options for the block solves (without prefix).
        schedule: β(t), when ``model.beta`` is a schedule (``None`` or a constant one: the
            operators keep their β).

    Attributes:
        setups: Solver set-ups this stepper made (more than one under a schedule).
    """

    def __init__(
        self,
        model: Model,
        operators: BlockOperators,
        scheme: str | Scheme,
        dt: float,
        solver: SolverSettings,
        overrides: dict | None = None,
        schedule: BetaSchedule | None = None,
    ):
        self.model = model
        self.schedule = schedule if schedule is not None and schedule.varies else None
        self.layout: BlockLayout = operators.layout
        self.scheme = scheme = Scheme(scheme)
        if not scheme.linear:
            raise ValueError(f"TimeStepper runs the linear schemes, not {str(scheme)!r}")
        self.dt = dt
        self._solver_settings = solver
        #: A failed solve may be retried with a more robust solver (``auto`` chose this one).
        self.falls_back = solver.type == "auto"
        self._overrides = overrides
        self._operators = operators
        coeffs = SCHEME_COEFFICIENTS[scheme]
        # Products with I⊗M and A are matrix-free: no assembled copy of the coupling.
        self.mass_matrix = operators.shell(1.0, 0.0)
        self.operator_matrix = (operators.shell(0.0, 1.0) if scheme is Scheme.CRANK_NICOLSON
                                else None)
        self.solver = BlockSolver(operators, coeffs.mass, coeffs.operator * dt, solver,
                                  overrides, name=f"{scheme} step")
        self.setups = 1
        # β of the set-up of ``solver``, of the operator the next solve is for (when they
        # differ, ``_reused`` solves it), of ``operator_matrix`` and of the BDF2 start.
        self._setup_beta = self._system_beta = operators.beta
        self._operator_beta = self._startup_beta = operators.beta
        self._reused: ReusedSetupSolver | None = None
        self._guess = None  # the guess of a reused set-up's solve, kept for a second try
        self._startup = None  # implicit-Euler solver for BDF2's first step, built lazily
        self._rhs = self.layout.create_vector()
        self._work = self.layout.create_vector()
        self._source_new = self.layout.create_vector() if model.source_form else None
        self._source_old = self.layout.create_vector() if model.source_form else None
        self._previous = None  # x^{n-1} for BDF2
        self._mass_row_sums = operators.mass_row_sums()  # M 1: ∫ρ_g = (M 1)ᵀρ_g
        self._comm = self.layout.comm
        # Krylov solves start from ρ^n extrapolated linearly from the last state this stepper
        # started from (one dt back), else from ρ^n.
        self._last, self._spare, self._last_time = None, None, None
        self.steps_taken = 0
        self.linear_iterations = 0

    def _assemble_sources(self, t: float, out: PETSc.Vec) -> None:
        for g in range(self.model.graph.n):
            self.layout.block(out, g)[:] = self.model.assemble_source(g, t)

    def step(self, x: PETSc.Vec, t: float) -> int:
        """Replace ``x`` = ρ^n at time ``t`` by ρ^{n+1}; return the Krylov iterations."""
        dt, rhs = self.dt, self._rhs
        has_source = self._source_new is not None
        if has_source:
            self._assemble_sources(t + dt, self._source_new)
        scheme = self.scheme
        if self.schedule is not None and scheme is Scheme.CRANK_NICOLSON:
            self._operator_at(self.schedule(t))  # A(β(t_n)) ρ^n on the right
        startup = False
        # The scheme's mass balance a·m(ρ^{n+1}) = m(w) + τ Σ c_s ∫F_s, with w the vector
        # the mass matrix multiplies on the right-hand side (the operator's part has no
        # mass); this rank's share of it.
        sources: list[tuple[float, PETSc.Vec]] = []
        if scheme is Scheme.IMPLICIT_EULER or (scheme.multistep and self._previous is None):
            target = self._local_mass(x)
            self.mass_matrix.mult(x, rhs)
            if has_source:
                rhs.axpy(dt, self._source_new)
                sources = [(dt, self._source_new)]
            if scheme.multistep:
                self._previous = x.copy()
                startup = True
        elif scheme is Scheme.CRANK_NICOLSON:
            target = self._local_mass(x)
            self.mass_matrix.mult(x, rhs)
            self.operator_matrix.mult(x, self._work)
            rhs.axpy(-0.5 * dt, self._work)
            if has_source:
                self._assemble_sources(t, self._source_old)
                rhs.axpy(0.5 * dt, self._source_old)
                rhs.axpy(0.5 * dt, self._source_new)
                sources = [(0.5 * dt, self._source_old), (0.5 * dt, self._source_new)]
        else:  # bdf2: 3/2 M x^{n+1} + τ A x^{n+1} = M (2 x^n - x^{n-1}/2) + τ F^{n+1}
            self._work.array[:] = 2.0 * x.array_r - 0.5 * self._previous.array_r
            target = self._local_mass(self._work)
            self.mass_matrix.mult(self._work, rhs)
            if has_source:
                rhs.axpy(dt, self._source_new)
                sources = [(dt, self._source_new)]
            x.copy(self._previous)
        for weight, source in sources:
            target += weight * float(source.array_r.sum())  # Σ_i ∫f φ_i = ∫f
        if scheme.multistep and not startup:
            target /= SCHEME_COEFFICIENTS[scheme].mass
        if self.schedule is not None:
            # After the right side: the operators' state (the quadrature coupling is applied
            # from it) moves to β(t_{n+1}) only now.
            self._system_at(self.schedule(t + dt))
        solver = self._startup_solver() if startup else self._reused or self.solver
        if solver.takes_initial_guess:
            self._predict(x, t)
        if solver is self._reused:
            iterations = self._solve_reused(rhs, x)
        else:
            iterations = solver.solve(rhs, x)
        self._restore_mass(x, target)
        self.steps_taken += 1
        self.linear_iterations += iterations
        return iterations

    def _operator_at(self, beta: float) -> None:
        """Make :attr:`operator_matrix` the product with ``A(beta)``."""
        operators = self._operators
        if beta != self._operator_beta or operators.quadrature_coupling is not None:
            # The quadrature coupling is applied from the operators' state, not copied.
            operators.set_beta(beta)
        if beta != self._operator_beta:
            self.operator_matrix.destroy()
            self.operator_matrix = operators.shell(0.0, 1.0)
            self._operator_beta = beta

    def _solve_reused(self, rhs: PETSc.Vec, x: PETSc.Vec) -> int:
        """Solve with the reused set-up; if that fails, set up at the current β and solve
        again from the same guess (a failure of the new set-up is the step's failure)."""
        if self._guess is None:
            self._guess = x.duplicate()
        x.copy(self._guess)
        try:
            return self._reused.solve(rhs, x)
        except SolverError:
            self._set_up(self._system_beta)
            self._guess.copy(x)
            return self.solver.solve(rhs, x)

    def _set_up(self, beta: float) -> None:
        """A new set-up of the solver for the operators at ``beta`` (their current β)."""
        if self._reused is not None:
            self._reused.destroy()
            self._reused = None
        coeffs = SCHEME_COEFFICIENTS[self.scheme]
        self.solver.destroy()
        self.solver = BlockSolver(self._operators, coeffs.mass, coeffs.operator * self.dt,
                                  self._solver_settings, self._overrides,
                                  name=f"{self.scheme} step")
        self.setups += 1
        self._setup_beta = beta

    def _system_at(self, beta: float) -> None:
        """Make the next solve one of ``a (I ⊗ M) + b τ A(beta)``.

        A new set-up when the operator has changed by more than :data:`BETA_SETUP_RATIO` since
        the last one; otherwise FGMRES on the current operator preconditioned by the last set-up.
        """
        operators = self._operators
        operators.set_beta(beta)
        if beta == self._system_beta:
            return
        if self._reused is not None:
            self._reused.destroy()
            self._reused = None
        coeffs = SCHEME_COEFFICIENTS[self.scheme]
        if operators.change_factor(beta, self._setup_beta) > BETA_SETUP_RATIO:
            self._set_up(beta)
        elif beta != self._setup_beta:
            self._reused = ReusedSetupSolver(self.solver, operators, coeffs.mass,
                                             coeffs.operator * self.dt, self._solver_settings,
                                             name=f"{self.scheme} step")
        self._system_beta = beta

    def _local_mass(self, v: PETSc.Vec) -> float:
        """This rank's share of ``Σ_g ∫v_g`` (the diagnostics' mass)."""
        blocks = v.array_r.reshape(self.layout.num_blocks, -1)
        return float(np.sum(blocks @ self._mass_row_sums))

    def _restore_mass(self, x: PETSc.Vec, target: float) -> None:
        """Scale the densities to the total mass ``target`` (summed over ranks).

        The correction is the size of the solve's mass error (rounding times ``τ‖A‖‖ρ‖``),
        so it is no larger than the error of the solution it corrects.
        """
        local = np.array([target, self._local_mass(x)])
        total = np.empty_like(local)
        self._comm.Allreduce(local, total, op=MPI.SUM)
        if total[1] != 0.0 and is_mass_rounding(total[0], total[1]):
            x.scale(total[0] / total[1])

    def with_dt(self, dt: float) -> TimeStepper:
        stepper = TimeStepper(self.model, self._operators, self.scheme, dt,
                              self._solver_settings, self._overrides, self.schedule)
        stepper.falls_back = self.falls_back
        return stepper

    def more_robust(self) -> tuple[TimeStepper, str] | None:
        # Only a solver that ``auto`` chose gives way: a type the user set is kept (and a
        # failed step is halved as before).
        if not self.falls_back:
            return None
        kind = more_robust_type(self.solver.kind, self.layout.num_blocks,
                                self.layout.size_global, self.model.mesh.topology.dim)
        if kind is None:
            return None
        # "auto" scalar solves: the new type chooses its own (LU or AMG).
        settings = dataclasses.replace(self._solver_settings, type=kind, inner="auto")
        robust = TimeStepper(self.model, self._operators, self.scheme, self.dt, settings,
                             self._overrides, self.schedule)
        robust.falls_back = True
        return robust, kind

    def history(self) -> History:
        if self._previous is None:
            return History(self.dt)
        return History(self.dt, {"previous": self._previous.array_r.copy()})

    def restore(self, x: PETSc.Vec, history: History) -> None:
        previous = history.vectors.get("previous")
        if previous is None or not self.scheme.multistep or not math.isclose(
                history.dt, self.dt, rel_tol=1e-12):
            # ρ^{n-1} of another step size is no BDF2 history: restart with implicit Euler.
            if self._previous is not None:
                self._previous.destroy()
            self._previous = None
            return
        if self._previous is None:
            self._previous = x.duplicate()
        self._previous.array[:] = previous

    def history_after(self, start: PETSc.Vec, substeps: History) -> History:
        if not self.scheme.multistep:
            return History(self.dt)
        return History(self.dt, {"previous": start.array_r.copy()})

    def solver_stats(self) -> dict[str, int]:
        return {"steps": self.steps_taken, "linear_iterations": self.linear_iterations}

    @property
    def solver_options(self) -> dict:
        return {**self.solver.options, **(self._overrides or {})}

    def _predict(self, x: PETSc.Vec, t: float) -> None:
        """Replace ``x`` = ρ^n by ``2ρ^n − ρ^{n−1}`` if ρ^{n−1} (kept from the previous call)
        is one ``dt`` back; keep ρ^n for the next call.

        An O(dt²) guess instead of O(dt): the first Krylov residual is smaller by about the
        relative change per step, which saves iterations at the same tolerance. After a
        retried step, a restart or a change of ``dt`` the times do not match and ρ^n is the
        guess.
        """
        if self._last is None:
            self._last, self._spare = x.duplicate(), x.duplicate()
        x.copy(self._spare)
        if self._last_time is not None and math.isclose(self._last_time + self.dt, t,
                                                          rel_tol=1e-9, abs_tol=1e-12):
            x.axpby(-1.0, 2.0, self._last)  # x = 2 x − ρ^{n−1}
        self._last, self._spare = self._spare, self._last
        self._last_time = t

    def forget_guess(self) -> None:
        """Start the next Krylov solve from ρ^n, not from an extrapolation of earlier calls."""
        self._last_time = None

    def _startup_solver(self) -> BlockSolver:
        if self._startup is not None and self._startup_beta != self._operators.beta:
            self._startup.destroy()  # BDF2 starts again (another step) at another β
            self._startup = None
        if self._startup is None:
            self._startup_beta = self._operators.beta
            self._startup = BlockSolver(self._operators, 1.0, self.dt, self._solver_settings,
                                        self._overrides, name="bdf2 start step")
        return self._startup

    def destroy(self) -> None:
        self.solver.destroy()
        for obj in (self._reused, self._guess, self.mass_matrix, self.operator_matrix,
                    self._rhs, self._work, self._source_new, self._source_old, self._previous,
                    self._startup, self._last, self._spare):
            if obj is not None:
                obj.destroy()
