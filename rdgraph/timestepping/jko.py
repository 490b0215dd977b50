"""The linearized minimizing-movement (JKO) step, ``[time] scheme = "jko"``.

Cancès–Gallouët–Todeschi (arXiv:1907.08305): write the flow as
``∂_t ρ_g = ∇·(ρ_g ∇Φ_g) + Σ_h θ_gh(ρ)(Φ_h − Φ_g)`` with ``Φ_g = β log ρ_g + V_g``, freeze the
mobilities ``ρ_g`` and ``θ_gh`` at ``ρ^n`` and solve for the potentials ``Φ_g`` (P1):

    m ∘ (exp((Φ_g − V_g)/β) − ρ_g^n) + τ S_g(ρ^n) Φ_g + τ Σ_h m ∘ θ_gh(ρ^n) ∘ (Φ_g − Φ_h) = 0,
    ρ_g^{n+1} = exp((Φ_g − V_g)/β)  (nodally),

with ``S_g(ρ)`` the stiffness matrix weighted by ``ρ_g^n`` (consistent quadrature) and ``m``
the lumped (row-sum) mass: the exp term and the graph coupling are evaluated by vertex
quadrature. Lumping makes the nonlinearity diagonal, so the Jacobian
``τ A_n + diag(m exp((Φ − V)/β)/β)`` is symmetric positive definite (``A_n`` is a weighted
graph Laplacian ⊕ weighted stiffness, positive semi-definite): the problem is the Euler–Lagrange
equation of a strictly convex functional and Newton with backtracking converges from the
initial guess ``Φ^n = β log ρ^n + V``. Consequences, exact up to the Newton tolerance:

* positivity: ``ρ^{n+1} = exp(...) > 0`` by construction;
* mass: ``1ᵀ S_g = 0`` and the coupling is antisymmetric, so ``Σ_g mᵀ ρ_g`` is conserved
  (``m`` is also the row sum of the consistent mass, so the diagnostics' mass is exactly this);
* the Gibbs state ``ρ_g = c exp(−V_g/β)`` has constant ``Φ`` and is a fixed point.

Mobilities: ``θ_gh = (w_gh/β) sqrt(π_g π_h) Λ(ρ_g/π_g, ρ_h/π_h)`` (gibbs; ``π = exp(−V/β)``) and
``(w_gh/β) Λ(ρ_g, ρ_h)`` (laplacian, equal potentials only). With
``Λ(a, b) = sqrt(ab) sinh(s)/s``, ``s = (log a − log b)/2``, both are
``(w_gh/β) sqrt(ρ_g ρ_h) sinh(s)/s`` with ``s = (Φ_g − Φ_h)/(2β)``: evaluated in log space, with
a series for ``sinh(s)/s`` near ``s = 0`` (where ``(a − b)/(log a − log b)`` cancels).

The ``ksp_iterations`` column of the diagnostics holds the Newton iterations of the step (each
one LU solve). Time-dependent sources and degrees above 1 are refused in the config.
"""

from __future__ import annotations

import numpy as np
import ufl

from rdgraph.compat import MPI, PETSc, dolfinx
from rdgraph.discretization.model import Model
from rdgraph.discretization.operators import BlockOperators
from rdgraph.errors import InputError
from rdgraph.problem.config import Scheme, SolverSettings
from rdgraph.solvers.nonlinear import NewtonSolver, newton_options
from rdgraph.timestepping.potential_newton import PotentialNewtonStepper

__all__ = ["JKOStepper", "log_mean", "mobilities"]

_SERIES = 1e-3  # below this |s|, sinh(s)/s by its Taylor series (error < 1e-19)


def _log_sinhc(s: np.ndarray) -> np.ndarray:
    """``log(sinh(s)/s)``, stable for all real ``s``."""
    a = np.abs(s)
    out = np.empty_like(a)
    small = a < _SERIES
    s2 = a[small] ** 2
    out[small] = np.log1p(s2 / 6.0 + s2 * s2 / 120.0)
    big = a[~small]
    out[~small] = big + np.log1p(-np.exp(-2.0 * big)) - np.log(2.0 * big)
    return out


def log_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The logarithmic mean ``(a − b)/(log a − log b)`` (``a`` if equal) of positive arrays."""
    la, lb = np.log(a), np.log(b)
    return np.exp(0.5 * (la + lb) + _log_sinhc(0.5 * (la - lb)))


def mobilities(weight: float, beta: float, log_rho_g: np.ndarray, log_rho_h: np.ndarray,
               phi_g: np.ndarray, phi_h: np.ndarray) -> np.ndarray:
    """Nodal ``θ_gh = (w/β) sqrt(ρ_g ρ_h) sinh(s)/s``, ``s = (Φ_g − Φ_h)/(2β)``.

    Equal to ``(w/β) sqrt(π_g π_h) Λ(ρ_g/π_g, ρ_h/π_h)``, and to ``(w/β) Λ(ρ_g, ρ_h)`` when
    ``V_g = V_h``.
    """
    s = (phi_g - phi_h) / (2.0 * beta)
    return (weight / beta) * np.exp(0.5 * (log_rho_g + log_rho_h) + _log_sinhc(s))


class JKOStepper(PotentialNewtonStepper):
    """Advances the densities by one linearized JKO step (Newton on the potentials Φ).

    A one-step :class:`~rdgraph.timestepping.base.Stepper` (no history), so retries with halved
    steps and checkpoints apply.

    Args:
        model: Forms and potentials.
        operators: The assembled block operators (pattern, layout, lumped mass).
        scheme: Must be "jko".
        dt: The fixed time step τ.
        solver: The ``[solver]`` settings (its ``petsc_options`` reach the SNES).
        overrides: Command-line PETSc options (without the ``rd_`` prefix).

    Raises:
        InputError: laplacian coupling with potentials that differ between vertices (it is
            then not a gradient flow of F), a degree other than 1, or an initial density that
            is not positive at every node.
    """

    def __init__(self, model: Model, operators: BlockOperators, scheme: str | Scheme, dt: float,
                 solver: SolverSettings, overrides: dict | None = None):
        if scheme != Scheme.JKO:
            raise ValueError(f"JKOStepper runs scheme 'jko', not {scheme!r}")
        if model.V.element.basix_element.degree != 1:
            raise InputError("time.scheme = 'jko' needs space.degree = 1 (P1)")
        super().__init__(model, operators, scheme, dt, solver, overrides)
        graph, layout = model.graph, self.layout
        self._n = n = layout.size_local
        self._pattern = pattern = operators.pattern
        self._lumped_mass = operators.mass_row_sums()
        self._block_mass = np.tile(self._lumped_mass, graph.n)  # m for every block
        self._potential = np.concatenate(
            [model.potential_nodal(g)[:n] for g in range(graph.n)])
        if model.coupling == "laplacian":
            spread = max((float(np.max(np.abs(model.potential_nodal(g)[:n] -
                                                model.potential_nodal(0)[:n]), initial=0.0))
                          for g in range(graph.n)), default=0.0)
            spread = model.mesh.comm.allreduce(spread, op=MPI.MAX)
            scale = model.mesh.comm.allreduce(
                float(np.max(np.abs(model.potential_nodal(0)), initial=0.0)), op=MPI.MAX)
            if spread > 1e-12 * max(1.0, scale):
                raise InputError(
                    "time.scheme = 'jko' with model.coupling = 'laplacian' needs the same "
                    "potential on every vertex (otherwise laplacian is not the gradient flow "
                    "of F); use coupling = 'gibbs'")
        model.check_positive_initial("time.scheme = 'jko'")
        positions = operators.diagonal_positions()
        self._diagonal_positions = positions
        # The mobility-weighted stiffness ∫ ρ^n ∇Φ·∇φ: one compiled form for all vertices.
        self._mobility = dolfinx.fem.Function(model.V, name="mobility")
        u, v = ufl.TrialFunction(model.V), ufl.TestFunction(model.V)
        self._weighted_stiffness = dolfinx.fem.form(
            self._mobility * ufl.inner(ufl.grad(u), ufl.grad(v)) * model.dx)
        zero = np.zeros(pattern.nnz)
        keys = [(g, g) for g in range(graph.n)]
        for g, h, _ in graph.edges:
            keys += [(g, h), (h, g)]
        self._linear = layout.matrix(pattern, dict.fromkeys(keys, zero))
        self._jacobian = self._linear.duplicate()
        self._rho_old = layout.create_vector()
        options = newton_options({**solver.petsc_options, **(overrides or {})})
        self.solver = NewtonSolver(self._residual, self._update_jacobian, self._jacobian,
                                   options, name="jko step")
        self.last_iterations = (0, 0)  # (Newton, Krylov) of the last step

    # -- the nonlinear problem ----------------------------------------------------------------
    def _residual(self, x: PETSc.Vec, f: PETSc.Vec) -> None:
        self._linear.mult(x, f)
        f.array[:] += self._block_mass * (self._density(x.array_r) - self._rho_old.array_r)

    def _update_jacobian(self, x: PETSc.Vec, J: PETSc.Mat) -> None:
        self._linear.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        diagonal = J.createVecLeft()
        diagonal.array[:] = self._block_mass * self._density(x.array_r) / self.beta
        J.setDiagonal(diagonal, addv=PETSc.InsertMode.ADD_VALUES)
        diagonal.destroy()

    def _assemble_linear(self, log_rho: list[np.ndarray], phi: list[np.ndarray]) -> None:
        """``τ A_n``: mobility-weighted stiffness and lumped graph coupling at ρ^n."""
        graph, n, tau = self.model.graph, self._n, self.dt
        positions, mass = self._diagonal_positions, self._lumped_mass
        blocks: dict[tuple[int, int], np.ndarray] = {}
        for g in range(graph.n):
            self._mobility.x.array[:n] = np.exp(log_rho[g])
            self._mobility.x.scatter_forward()
            blocks[g, g] = tau * self._pattern.assemble(self._weighted_stiffness)
        for g, h, w in graph.edges:
            theta = tau * mass * mobilities(w, self.beta, log_rho[g], log_rho[h], phi[g], phi[h])
            for a, b in ((g, h), (h, g)):
                blocks[a, a][positions] += theta
                off = np.zeros(self._pattern.nnz)
                off[positions] = -theta
                blocks[a, b] = off
        new = self.layout.matrix(self._pattern, blocks)
        new.copy(self._linear, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        new.destroy()

    # -- stepping ---------------------------------------------------------------------------
    def step(self, x: PETSc.Vec, t: float) -> int:
        """Replace ``x`` = ρ^n by ρ^{n+1}; return the Newton iterations.

        Raises:
            InputError: ρ^n is not positive at every node (log ρ undefined), on every rank.
            SolverError: Newton diverged, on every rank.
        """
        graph, n, beta = self.model.graph, self._n, self.beta
        rho = x.array_r
        positive = self.layout.comm.allreduce(bool(np.all(rho > 0)), op=MPI.LAND)
        if not positive:
            raise InputError(
                "time.scheme = 'jko' needs a density > 0 at every node (Φ = β log ρ + V); "
                "give a positive initial density")
        x.copy(self._rho_old)
        log_rho = [np.log(rho[g * n:(g + 1) * n]) for g in range(graph.n)]
        phi = [beta * log_rho[g] + self._potential[g * n:(g + 1) * n] for g in range(graph.n)]
        self._assemble_linear(log_rho, phi)
        self.last_iterations = self._solve_potentials(x, np.concatenate(phi))
        return self.last_iterations[0]

    def destroy(self) -> None:
        self.solver.destroy()
        for obj in (self._linear, self._jacobian, self._rho_old):
            obj.destroy()
