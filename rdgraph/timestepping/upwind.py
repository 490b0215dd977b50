"""The upwind coupling (Chow–Huang–Li–Zhou), ``coupling = "upwind"``: implicit Euler + Newton.

The flux from vertex g to h at a point is ``w_gh ρ_g [Φ_g − Φ_h]_+``, ``Φ = β log ρ + V``, so
the net exchange is ``w_gh (ρ_g [Φ_g − Φ_h]_+ − ρ_h [Φ_h − Φ_g]_+)``: the density on the side
of the larger potential moves. The unknowns are the nodal potentials ``Φ_g`` (P1),
``ρ_g = exp((Φ_g − V_g)/β)`` nodally (positive by construction); one implicit-Euler step
solves, for every vertex g,

    m ∘ (ρ_g − ρ_g^n) + τ ∫ ρ(Φ_g) ∇Φ_g·∇φ
        + τ m ∘ Σ_h w_gh (ρ_g [Φ_g − Φ_h]_+ − ρ_h [Φ_h − Φ_g]_+) = 0,

with ``m`` the lumped mass (vertex quadrature for the time derivative and the graph term) and
the drift–diffusion in its mobility form ``∇·(ρ ∇Φ) = ∇·(β∇ρ + ρ∇V)`` with
``ρ(Φ_g) = exp((Φ_g − V_g)/β)`` at quadrature points. The exchange is used as it is, not
smoothed: for fixed densities it is nondecreasing in ``Φ_g − Φ_h`` (slope ``w ρ_g`` on one
side, ``w ρ_h`` on the other), and Newton takes a one-sided slope (their mean where the
potentials are equal), a semismooth Newton method. A smoothed switch between the two upwind
densities would make Newton's Jacobian continuous, but where the densities of two vertices
differ by many orders of magnitude (wells of different depths at low β) it makes the exchange
non-monotone across the smoothing width, and Newton then stalls at points that are not
solutions. The step keeps, exactly,

* mass (the exchange is antisymmetric in g, h; ``1ᵀ`` annihilates the stiffness term),
* the Gibbs state as a fixed point (``Φ`` constant: every term vanishes),
* energy decrease of the lumped ``F``: the step dissipates
  ``τ (Σ_g ∫ρ_g|∇Φ_g|² + Σ_{g<h} m w_gh (Φ_g − Φ_h)² ρ_up) ≥ 0``.

The ``ksp_iterations`` column holds the Newton iterations of the step.
"""

from __future__ import annotations

import numpy as np
import ufl

from rdgraph.compat import PETSc, dolfinx
from rdgraph.discretization.model import Model
from rdgraph.discretization.operators import BlockOperators
from rdgraph.problem.config import Scheme, SolverSettings
from rdgraph.solvers.nonlinear import NewtonSolver, newton_options
from rdgraph.timestepping.potential_newton import PotentialNewtonStepper

__all__ = ["UpwindStepper", "upwind_flux"]

def upwind_flux(weight: float, phi_g: np.ndarray, phi_h: np.ndarray,
                rho_g: np.ndarray, rho_h: np.ndarray):
    """Net exchange g → h, ``w (ρ_g [Φ_g − Φ_h]_+ − ρ_h [Φ_h − Φ_g]_+)``, and its derivatives.

    ``ρ`` depends on ``Φ`` through ``dρ/dΦ = ρ/β``, which the caller applies: the
    derivatives returned are ``(∂/∂Φ_g, ∂/∂Φ_h, ∂/∂ρ_g, ∂/∂ρ_h)``, one-sided where
    ``Φ_g ≠ Φ_h`` and the mean of the two sides where they are equal.
    """
    z = phi_g - phi_h
    side = np.where(z > 0, 1.0, np.where(z < 0, 0.0, 0.5))  # 1: g upwind, 0: h upwind
    upwind = side * rho_g + (1.0 - side) * rho_h
    d_z = weight * upwind
    return weight * z * upwind, d_z, -d_z, weight * z * side, weight * z * (1.0 - side)


class UpwindStepper(PotentialNewtonStepper):
    """Implicit Euler for the upwind coupling, Newton (PETSc SNES) on the potentials Φ.

    A one-step :class:`~rdgraph.timestepping.base.Stepper` (no history), so retries with halved
    steps, checkpoints and diagnostics apply unchanged.

    Args:
        model: Forms and potentials.
        operators: The block operators (pattern, layout, lumped mass).
        scheme: Must be "implicit-euler".
        dt: The fixed time step τ.
        solver: The ``[solver]`` settings (its ``petsc_options`` reach the SNES).
        overrides: Command-line PETSc options (without the ``rd_`` prefix).

    Raises:
        InputError: An initial density that is not positive at every node.
    """

    def __init__(self, model: Model, operators: BlockOperators, scheme: str | Scheme, dt: float,
                 solver: SolverSettings, overrides: dict | None = None):
        if scheme != Scheme.IMPLICIT_EULER:
            raise ValueError(f"UpwindStepper runs implicit Euler, not {scheme!r}")
        super().__init__(model, operators, scheme, dt, solver, overrides)
        layout, graph = self.layout, model.graph
        self._n = n = layout.size_local
        model.check_positive_initial("model.coupling = 'upwind'")
        self._pattern = operators.pattern
        self._positions = operators.diagonal_positions()
        self._block_mass = np.tile(operators.mass_row_sums(), graph.n)
        self._potential = np.concatenate([model.potential_nodal(g)[:n] for g in range(graph.n)])
        # ∫ exp((Φ − V_g)/β) ∇Φ·∇φ and its Jacobian: compiled once, V_g via the vertex constant.
        self._phi = dolfinx.fem.Function(model.V, name="phi")
        v = ufl.TestFunction(model.V)
        mobility = ufl.exp((self._phi - model.potential_g) / model.beta)
        residual = mobility * ufl.inner(ufl.grad(self._phi), ufl.grad(v)) * model.dx
        self._residual_form = dolfinx.fem.form(residual)
        self._jacobian_form = dolfinx.fem.form(ufl.derivative(residual, self._phi))
        keys = [(g, g) for g in range(graph.n)]
        for g, h, _ in graph.edges:
            keys += [(g, h), (h, g)]
        self._keys = keys
        self._jacobian = layout.matrix(self._pattern, dict.fromkeys(keys, np.zeros(
            self._pattern.nnz)))
        self._rho_old = layout.create_vector()
        options = newton_options({**solver.petsc_options, **(overrides or {})})
        self.solver = NewtonSolver(self._residual, self._update_jacobian, self._jacobian,
                                   options, name="upwind implicit-Euler step")

    def _set_phi(self, phi: np.ndarray, g: int) -> None:
        n = self._n
        self._phi.x.array[:n] = phi[g * n:(g + 1) * n]
        self._phi.x.scatter_forward()
        self.model.set_vertex(g)

    def _residual(self, x: PETSc.Vec, f: PETSc.Vec) -> None:
        graph, n, tau = self.model.graph, self._n, self.dt
        phi = x.array_r
        rho = self._density(phi)
        out = self._block_mass * (rho - self._rho_old.array_r)
        for g in range(graph.n):
            self._set_phi(phi, g)
            b = dolfinx.fem.assemble_vector(self._residual_form)
            b.scatter_reverse(dolfinx.la.InsertMode.add)
            out[g * n:(g + 1) * n] += tau * b.array[:n]
        for g, h, w in graph.edges:
            sg, sh = slice(g * n, (g + 1) * n), slice(h * n, (h + 1) * n)
            flux = upwind_flux(w, phi[sg], phi[sh], rho[sg], rho[sh])[0]
            out[sg] += tau * self._block_mass[sg] * flux
            out[sh] -= tau * self._block_mass[sh] * flux
        f.array[:] = out

    def _update_jacobian(self, x: PETSc.Vec, J: PETSc.Mat) -> None:
        graph, n, tau, beta = self.model.graph, self._n, self.dt, self.beta
        phi = x.array_r
        rho = self._density(phi)
        mass, positions = self._block_mass, self._positions
        blocks = {key: np.zeros(self._pattern.nnz) for key in self._keys}
        for g in range(graph.n):
            self._set_phi(phi, g)
            blocks[g, g] = tau * self._pattern.assemble(self._jacobian_form)
            blocks[g, g][positions] += mass[g * n:(g + 1) * n] * rho[g * n:(g + 1) * n] / beta
        for g, h, w in graph.edges:
            sg, sh = slice(g * n, (g + 1) * n), slice(h * n, (h + 1) * n)
            _, d_phi_g, d_phi_h, d_rho_g, d_rho_h = upwind_flux(
                w, phi[sg], phi[sh], rho[sg], rho[sh])
            by_g = tau * mass[sg] * (d_phi_g + d_rho_g * rho[sg] / beta)
            by_h = tau * mass[sg] * (d_phi_h + d_rho_h * rho[sh] / beta)
            # Row g gets +flux, row h −flux (the lumped masses of g and h rows coincide).
            blocks[g, g][positions] += by_g
            blocks[g, h][positions] += by_h
            blocks[h, g][positions] -= by_g
            blocks[h, h][positions] -= by_h
        new = self.layout.matrix(self._pattern, blocks)
        new.copy(J, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        new.destroy()

    def step(self, x: PETSc.Vec, t: float) -> int:
        """Replace ``x`` = ρ^n by ρ^{n+1}; return the Newton iterations.

        Raises:
            SolverError: Newton diverged, on every rank.
        """
        x.copy(self._rho_old)
        with np.errstate(divide="ignore"):
            phi = self.beta * np.log(x.array_r) + self._potential
        return self._solve_potentials(x, phi)[0]

    def destroy(self) -> None:
        self.solver.destroy()
        for obj in (self._jacobian, self._rho_old):
            obj.destroy()
