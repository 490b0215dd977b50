"""The accelerated (damped Hamiltonian) flow of F on Ω × G: ``[time] scheme = "accelerated"``.

Per vertex g, with the Onsager operator ``K(ρ)ψ = −∇·(ρ_g ∇ψ_g) + Σ_h θ_gh(ρ)(ψ_g − ψ_h)``,

    ∂_t ρ_g = −∇·(ρ_g ∇S_g) + Σ_h θ_gh(ρ)(S_g − S_h)                    (= ∂H/∂S_g)
    ∂_t S_g + γ S_g + ½|∇S_g|² + ½ Σ_h ∂_{ρ_g}θ_gh (S_g − S_h)² + β log ρ_g + V_g = 0

the Hamiltonian flow of ``H(ρ, S) = ½⟨S, K(ρ)S⟩ + F(ρ)`` with damping ``γ`` (a constant, or
``3/t`` with function-value restart). Discretization:

* unknowns ``u_g = log ρ_g`` (positivity by construction) and ``S_g``, Lagrange P1, held in one
  blocked space with ``2N`` components ``(u_0..u_{N-1}, S_0..S_{N-1})``;
* every integral with vertex quadrature (mass lumping), so that the semi-discrete system is the
  lattice Hamiltonian flow ``m_i ρ̇_i = ∂H_h/∂S_i``, ``m_i Ṡ_i = −∂H_h/∂ρ_i − γ m_i S_i`` of
  the discrete ``H_h``, written once as a UFL form; both equations are derived from it with
  ``ufl.derivative``, so the ``∂θ`` term is exact and cannot be forgotten;
* implicit midpoint in time (``γ`` at the midpoint), one PETSc SNES (Newton with line search,
  MUMPS LU) per step. Total mass is conserved to the Newton tolerance, and the energy law
  ``H^{n+1} − H^n + 2γΔt KE^{n+½} = O(Δt³)`` holds per step.

Cost: the blocked space couples all ``2N`` components at every mesh vertex, so the Jacobian
has ``(2N)²`` entries per scalar P1 entry, and the form holds one term per vertex and per
edge: meant for small graphs (N up to a few tens), not for the block solvers of the linear
schemes. Mobilities: ``coupling = "laplacian"`` uses the log-mean mobility
``θ_gh = (w_gh/β) Λ(ρ_g, ρ_h)`` (the metric in which the heat-flow coupling is the gradient
flow of F), ``coupling = "gibbs"`` the detailed-balance one
``θ_gh = (w_gh/β) sqrt(π_g π_h) Λ(ρ_g/π_g, ρ_h/π_h)``, ``π_g = exp(−V_g/β)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import ufl

from rdgraph.compat import MPI, PETSc, dolfinx
from rdgraph.errors import InputError, SolverError
from rdgraph.problem.config import Scheme, Settings
from rdgraph.solvers.petsc import options_in_database
from rdgraph.timestepping.base import History, Stepper

__all__ = [
    "ACCELERATED_COLUMNS",
    "DEFAULT_SNES_OPTIONS",
    "OPTIONS_PREFIX",
    "AcceleratedStepper",
    "sinhc",
]

fem = dolfinx.fem

#: PETSc options prefix of the Newton solver: ``-rd_acc_snes_monitor`` on the command line,
#: ``[solver] petsc_options = { acc_snes_monitor = "" }`` in a config.
OPTIONS_PREFIX = "rd_acc_"

DEFAULT_SNES_OPTIONS = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "bt",
    # On the scaled nodal equations (units 1/time, see _install_row_scaling).
    "snes_rtol": 1e-11,
    "snes_atol": 1e-13,
    "snes_stol": 1e-14,
    "snes_max_it": 30,
    "ksp_type": "preonly",
    "pc_type": "lu",
}
if PETSc.Sys.hasExternalPackage("mumps"):  # parallel LU; PETSc's own LU is serial only
    DEFAULT_SNES_OPTIONS["pc_factor_mat_solver_type"] = "mumps"

# The ρ equation's rows are divided by max(ρ_i^n, SCALE_FLOOR · max ρ^n): far tails keep a
# bounded weight instead of 1e-70 (measured: the same Newton counts for floors 1e-4..1e-20).
SCALE_FLOOR = 1e-8

#: Extra ``diagnostics.csv`` columns of accelerated runs, after the common ones.
ACCELERATED_COLUMNS = ("kinetic_energy", "hamiltonian", "restart", "newton_iterations")

# Below this |y| the series of sinh(y)/y is used: its first omitted term, y⁶/5040, is then
# under 1e-22, while sinh(y)/y itself loses digits to cancellation only for much smaller |y|.
_SERIES_BELOW = 1e-3


def sinhc(y):
    """``sinh(y)/y`` in UFL, by its series near 0 (a conditional, so both are differentiable)."""
    small = ufl.lt(abs(y), _SERIES_BELOW)
    safe = ufl.conditional(small, 1.0, y)
    y2 = y * y
    return ufl.conditional(small, 1 + y2 / 6 + y2 * y2 / 120, ufl.sinh(safe) / safe)


class AcceleratedStepper(Stepper):
    """Implicit-midpoint steps of the damped Hamiltonian flow (see the module docstring).

    The state is ``(log ρ, S)`` in its own blocked space: :meth:`step` advances it and writes
    the new densities into the block vector of the simulation. Its history
    (:meth:`history`) is ``S`` ("momentum"), ``log ρ`` ("log_density", exact where ρ
    underflows) and the damping clock; a failed step is retried by
    :class:`~rdgraph.timestepping.recovery.RobustStepper` like any other scheme's.

    Args:
        model: The model (mesh, graph, potentials, initial densities, β).
        settings: Validated settings with ``time.scheme = "accelerated"``.
        solver_overrides: PETSc options without the ``rd_`` prefix (e.g. from the command
            line); those starting with ``acc_`` apply to the Newton solver.
        mobility_derivative: Keep the ``∂_ρ θ`` term of the S equation. ``False`` drops it
            (an ablation for tests: the flow is then no longer Hamiltonian).
    """

    extra_columns = ACCELERATED_COLUMNS

    def __init__(self, model, settings: Settings, solver_overrides: dict | None = None, *,
                 mobility_derivative: bool = True):
        time = settings.time
        if time.method is not Scheme.ACCELERATED:
            raise ValueError(f"AcceleratedStepper runs scheme 'accelerated', not {time.scheme!r}")
        self.model = model
        self._settings, self._overrides = settings, solver_overrides
        self._mobility_derivative = mobility_derivative
        self.mesh = mesh = model.mesh
        self.comm = mesh.comm
        self.graph = graph = model.graph
        self.scheme = Scheme.ACCELERATED
        self.steps_taken = 0
        self.dt = time.dt
        self.nesterov = time.damping == "nesterov"
        self.gamma_constant = 0.0 if self.nesterov else float(time.damping)
        self.restart = time.restart
        self.clock = 0.0  # time since the start or the last restart, for γ = 3/t
        self.restarted = False  # the last step ended with a restart
        self.newton_iterations = 0  # of the last step
        self._linear_iterations = 0  # of the step in progress
        # Over all steps, for solver_stats().
        self._counts = {"nonlinear_iterations": 0, "linear_iterations": 0, "restarts": 0}
        self.last_gamma = 0.0
        self._destroyed = False
        n = self.n = graph.n
        beta = settings.model.beta

        # Vertex quadrature: the lumped mass of P1, exact for the P1 gradients in |∇S|².
        self.dx = ufl.Measure("dx", domain=mesh, metadata={
            "quadrature_rule": "vertex", "quadrature_degree": 1})
        self.W = fem.functionspace(mesh, ("Lagrange", 1, (2 * n,)))
        self.P = fem.functionspace(mesh, ("Lagrange", 1, (n,)))
        self.w = fem.Function(self.W, name="u_S")  # the unknown: state at t^{n+1}
        self.w0 = fem.Function(self.W, name="u_S_old")  # state at t^n
        self.potential = fem.Function(self.P, name="V")
        self._check_layout(model.V)
        self._bs = 2 * n
        owned_potentials = np.array([model.potential_nodal(g) for g in range(n)])
        self.potential.x.array[:] = owned_potentials.T.ravel()
        self._set_initial([model.initial_nodal(g) for g in range(n)])

        scalar = dolfinx.default_scalar_type
        self.beta = fem.Constant(mesh, scalar(beta))
        self.tau = fem.Constant(mesh, scalar(self.dt))
        self.gamma = fem.Constant(mesh, scalar(0.0))
        nu0 = fem.Constant(mesh, scalar(time.viscosity))
        rho_c = fem.Constant(mesh, scalar(time.viscosity_density))
        gibbs = settings.model.coupling == "gibbs"

        def theta(z, g, h, weight):
            """The mobility θ_gh with u = log ρ taken from z.

            Λ(e^a, e^b) = e^{(a+b)/2} sinhc((a − b)/2): log-mean with a, b = u_g, u_h; for
            gibbs sqrt(π_g π_h) Λ(ρ_g/π_g, ρ_h/π_h) = e^{(u_g+u_h)/2} sinhc((u_g − u_h + δ)/2)
            with δ = (V_g − V_h)/β, which never forms π itself (no overflow).
            """
            shift = (self.potential[g] - self.potential[h]) / self.beta if gibbs else 0
            return weight / self.beta * ufl.exp((z[g] + z[h]) / 2) * sinhc(
                (z[g] - z[h] + shift) / 2)

        def kinetic(z, zt):
            """½⟨S, K(ρ)S⟩ with ρ = e^u of z and the mobility evaluated at zt."""
            e = sum(0.5 * ufl.exp(z[g]) * ufl.inner(ufl.grad(z[n + g]), ufl.grad(z[n + g]))
                    for g in range(n))
            for g, h, weight in graph.edges:
                e = e + 0.5 * theta(zt, g, h, weight) * (z[n + g] - z[n + h]) ** 2
            return e

        def free(z):
            return sum(ufl.exp(z[g]) * (self.beta * z[g] + self.potential[g]) for g in range(n))

        dx = self.dx
        self.kinetic_form = fem.form(kinetic(self.w, self.w) * dx)
        self.free_form = fem.form(free(self.w) * dx)
        self._w_free = fem.Function(self.W)  # the frozen-mobility copy for the ablation
        mid = (self.w + self.w0) / 2
        self.midpoint_kinetic_form = fem.form(ufl.replace(kinetic(self.w, self.w) * dx,
                                                          {self.w: mid}))

        # The Hamiltonian at a placeholder state zm; its derivatives, then zm -> midpoint.
        zm = fem.Function(self.W)
        frozen = zm if mobility_derivative else self._w_free
        hamiltonian = (kinetic(zm, frozen) + free(zm)) * dx
        v = ufl.TestFunction(self.W)
        # Test direction (v_u/ρ, −v_S) at the midpoint: the u-rows become ∂H/∂ρ (vertex
        # quadrature makes it a nodal division), the S-rows −∂H/∂S.
        direction = ufl.as_vector([v[g] / ufl.exp(mid[g]) for g in range(n)]
                                  + [-v[n + g] for g in range(n)])
        dH = ufl.derivative(hamiltonian, zm, v)
        dH = ufl.replace(dH, {zm: mid, self._w_free: mid, v: direction})
        residual = dH
        for g in range(n):
            s_mid = mid[n + g]
            residual += (ufl.exp(self.w[g]) - ufl.exp(self.w0[g])) / self.tau * v[n + g] * dx
            residual += ((self.w[n + g] - self.w0[n + g]) / self.tau + self.gamma * s_mid) \
                * v[g] * dx
            if time.viscosity > 0:
                # ν ∇S: a dissipative term where ρ ≪ ρc (it is not part of the energy law).
                nu = nu0 * rho_c / (ufl.exp(mid[g]) + rho_c)
                residual += nu * ufl.inner(ufl.grad(s_mid), ufl.grad(v[g])) * dx
        options = dict(DEFAULT_SNES_OPTIONS)
        for source in (settings.solver.petsc_options, solver_overrides or {}):
            for key, value in source.items():
                if key.startswith("acc_"):
                    options[key[4:]] = "" if value is None else value
        self.options = {f"acc_{k}": v for k, v in options.items()}
        # The options go to the SNES here, not through NonlinearProblem: it would leave them
        # in PETSc's database for good (its clean-up misses them under a pushed prefix), and
        # the factorization reads some only inside a solve (see options_in_database).
        self.problem = fem.petsc.NonlinearProblem(residual, self.w,
                                                  petsc_options_prefix=OPTIONS_PREFIX)
        self._snes_options = options
        with options_in_database(options, OPTIONS_PREFIX):
            self.problem.solver.setFromOptions()
        self._install_row_scaling(v)
        self._saved = self.w.x.array.copy()
        self._energy_cache = None
        self._owned = model.V.dofmap.index_map.size_local

    def _install_row_scaling(self, v) -> None:
        """Newton on the equations divided by ``m_i`` and, for the ρ equation, by ``ρ_i^n``.

        The rows of ``m_i ρ̇_i = ∂H/∂S_i`` scale with ρ_i, which spans hundreds of orders of
        magnitude across a Gaussian's tails (``u = −160`` at the walls of test 1): unscaled,
        LU returns inaccurate updates for the tail unknowns and Newton stalls far above
        round-off. Scaled by a diagonal fixed for the step, the Jacobian stays exact and every
        row is a nodal equation in units of 1/time, so the SNES tolerances mean the same on
        any mesh.
        """
        problem = self.problem
        lumped = problem.b.duplicate()
        fem.petsc.assemble_vector(lumped, fem.form(sum(v[k] for k in range(2 * self.n))
                                                    * self.dx))
        lumped.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        self._lumped = lumped.array_r.copy()
        lumped.destroy()
        self._row_scale = problem.b.duplicate()
        residual_ctx = {"u": self.w, "residual": problem.F, "jacobian": problem.J, "bcs": []}
        jacobian_ctx = {"u": self.w, "jacobian": problem.J, "preconditioner": None, "bcs": []}

        def residual(snes, x, b):
            fem.petsc.assemble_residual(snes, x, b, **residual_ctx)
            b.pointwiseMult(b, self._row_scale)

        def jacobian(snes, x, J, P):
            fem.petsc.assemble_jacobian(snes, x, J, P, **jacobian_ctx)
            J.diagonalScale(L=self._row_scale)

        problem.solver.setFunction(residual, problem.b)
        problem.solver.setJacobian(jacobian, problem.A, problem.P_mat)

    def _update_row_scaling(self) -> None:
        """``1/m_i`` on the S equation's rows, ``1/(m_i ρ_i^n)`` (floored) on the ρ equation's."""
        owned = len(self._lumped) // self._bs
        scale = 1.0 / self._lumped.reshape(owned, self._bs)
        rho = np.exp(self.w0.x.array.reshape(-1, self._bs)[:owned, : self.n])
        top = self.comm.allreduce(float(np.max(rho, initial=0.0)), op=MPI.MAX)
        scale[:, self.n:] /= np.maximum(rho, SCALE_FLOOR * top)
        self._row_scale.array[:] = scale.ravel()

    # -- layout ------------------------------------------------------------------------------
    def _check_layout(self, V) -> None:
        """The blocked spaces must number the mesh vertices like the scalar space of the model."""
        owned = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
        same = all(
            space.dofmap.index_map.size_local + space.dofmap.index_map.num_ghosts == owned
            and np.allclose(space.tabulate_dof_coordinates(), V.tabulate_dof_coordinates())
            for space in (self.W, self.P)
        )
        if not self.comm.allreduce(same, op=MPI.LAND):
            raise RuntimeError("the blocked P1 space numbers its nodes unlike the scalar space")

    def _component(self, array: np.ndarray, k: int) -> np.ndarray:
        return array.reshape(-1, self._bs)[:, k]

    def _set_initial(self, densities: list[np.ndarray]) -> None:
        local = min((float(np.min(r, initial=np.inf)) for r in densities), default=np.inf)
        smallest = self.comm.allreduce(local, op=MPI.MIN)
        if not smallest > 0:
            raise InputError(
                f"time.scheme = 'accelerated' evolves log(rho): the initial densities must be "
                f"positive on the mesh (smallest nodal value {smallest:.3g})")
        values = self.w.x.array.reshape(-1, self._bs)
        values[:, : self.n] = np.log(np.array(densities)).T
        values[:, self.n:] = 0.0  # S(0) = 0
        self.w0.x.array[:] = self.w.x.array

    def densities(self) -> list[np.ndarray]:
        """Nodal ρ_g = exp(u_g) on local dofs (owned and ghost)."""
        return [np.exp(self._component(self.w.x.array, g)) for g in range(self.n)]

    def potentials_S(self) -> list[np.ndarray]:
        """Nodal S_g on local dofs."""
        return [self._component(self.w.x.array, self.n + g).copy() for g in range(self.n)]

    # -- the Stepper interface: history, restore, another dt ---------------------------------
    def _owned_blocks(self, first: int) -> np.ndarray:
        """Components ``first .. first + N`` on the owned dofs, in the block layout."""
        return self.w.x.array.reshape(-1, self._bs)[: self._owned, first:first + self.n].T.ravel()

    def history(self) -> History:
        return History(self.dt, {"momentum": self._owned_blocks(self.n),
                                 "log_density": self._owned_blocks(0)},
                       {"clock": self.clock})

    def restore(self, x: PETSc.Vec, history: History) -> None:
        """Continue from ρ = ``x`` with S, the clock and, if given, log ρ from ``history``.

        A history without ``log_density`` (a checkpoint of an older version) takes log ρ
        from ``x``, floored at the smallest positive double. Collective.
        """
        values = self.w.x.array.reshape(-1, self._bs)
        owned, n = self._owned, self.n
        log_rho = history.vectors.get("log_density")
        if log_rho is None:
            log_rho = np.log(np.maximum(x.array_r, np.finfo(float).tiny))
        values[:owned, :n] = np.asarray(log_rho).reshape(n, owned).T
        # "previous": the name S had in checkpoints of older versions.
        momentum = history.vectors.get("momentum", history.vectors.get("previous"))
        values[:owned, n:] = 0.0 if momentum is None else np.asarray(momentum).reshape(n, owned).T
        self.w.x.scatter_forward()
        self.w0.x.array[:] = self.w.x.array
        self.clock = float(history.values.get("clock", 0.0))
        self.restarted = False
        self._energy_cache = None

    def with_dt(self, dt: float) -> AcceleratedStepper:
        settings = dataclasses.replace(self._settings,
                                       time=dataclasses.replace(self._settings.time, dt=dt))
        return AcceleratedStepper(self.model, settings, self._overrides,
                                  mobility_derivative=self._mobility_derivative)

    def solver_stats(self) -> dict[str, int]:
        return {"steps": self.steps_taken, **self._counts}

    @property
    def solver_options(self) -> dict:
        return dict(self.options)

    # -- energies ----------------------------------------------------------------------------
    def _assemble(self, form) -> float:
        return self.comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM)

    def energies(self) -> tuple[float, float]:
        """Discrete kinetic energy ½⟨S, K(ρ)S⟩ and free energy F_h of the state (collective)."""
        if self._energy_cache is None:
            local = np.array([fem.assemble_scalar(self.kinetic_form),
                              fem.assemble_scalar(self.free_form)])
            self._energy_cache = tuple(float(e) for e in self.comm.allreduce(local, op=MPI.SUM))
        return self._energy_cache

    def hamiltonian(self) -> float:
        kinetic, free = self.energies()
        return kinetic + free

    def midpoint_kinetic_energy(self) -> float:
        """KE at the midpoint of the last step (its dissipation is ``2 γ Δt`` times this)."""
        return self._assemble(self.midpoint_kinetic_form)

    # -- time stepping -----------------------------------------------------------------------
    def _substep(self, dt: float) -> int:
        """One implicit-midpoint step of length dt from w (copied to w0); Newton iterations."""
        self.w0.x.array[:] = self.w.x.array
        self.tau.value = dt
        gamma = 3.0 / (self.clock + dt / 2) if self.nesterov else self.gamma_constant
        self.gamma.value = gamma
        self.last_gamma = gamma
        self._update_row_scaling()
        with options_in_database(self._snes_options, OPTIONS_PREFIX):
            self.problem.solve()
        snes = self.problem.solver
        reason = snes.getConvergedReason()
        iterations = snes.getIterationNumber()
        self._linear_iterations += snes.getLinearSolveIterations()
        if reason <= 0:
            raise SolverError(f"Newton (SNES) did not converge: reason {reason}, "
                              f"{iterations} iterations")
        if not math.isfinite(self.problem.x.norm(PETSc.NormType.NORM_1)):
            raise SolverError("the new state holds NaN or inf")
        self.clock += dt
        return iterations

    def step(self, x: PETSc.Vec, t: float) -> int:
        """Advance from ``t`` by ``dt``; write ρ^{n+1} into the block vector ``x``.

        With ``time.restart``, a step that raises the free energy ends with S = 0 and the
        damping clock restarted (function-value restart).

        Returns:
            The Krylov iterations of the step's Newton iterations (with the default LU, one
            per Newton iteration).

        Raises:
            SolverError: The Newton solve failed or the new state holds NaN or inf (on every
                rank); the state is then undefined until :meth:`restore`.
        """
        self.restarted = False
        self._linear_iterations = 0
        free_before = self.energies()[1] if self.restart else 0.0
        self._energy_cache = None
        newton = self._substep(self.dt)
        if self.restart and self.energies()[1] > free_before:
            # Function-value restart: drop the momentum and restart the damping clock.
            self.w.x.array.reshape(-1, self._bs)[:, self.n:] = 0.0
            self.clock = 0.0
            self.restarted = True
            self._energy_cache = None
            self._counts["restarts"] += 1
        self.newton_iterations = newton
        self._counts["nonlinear_iterations"] += newton
        self._counts["linear_iterations"] += self._linear_iterations
        self.steps_taken += 1
        owned = x.getLocalSize() // self.n
        rho = self.densities()
        x.array[:] = np.concatenate([r[:owned] for r in rho])
        return self._linear_iterations

    def extra_diagnostics(self, stats: dict[str, int]) -> list:
        """The values of :data:`ACCELERATED_COLUMNS` for the current state (collective).

        Args:
            stats: The solver counts of the last step alone (of this stepper or of the
                substeps that took it), see :meth:`solver_stats`.
        """
        kinetic, free = self.energies()
        return [kinetic, kinetic + free, int(stats.get("restarts", 0) > 0),
                stats.get("nonlinear_iterations", 0)]

    def destroy(self) -> None:
        """Free the SNES and its PETSc objects (collective; safe to call twice)."""
        if not self._destroyed:
            self._destroyed = True
            for obj in (self.problem.solver, self.problem.A, self.problem.b, self.problem.x,
                        self._row_scale):
                obj.destroy()
