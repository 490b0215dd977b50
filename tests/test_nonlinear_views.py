"""The nonlinear views (upwind coupling, JKO scheme) on varied problems, and their Newton.

Both must run to the Gibbs state from a positive start on problems whose wells differ in depth,
width and centre between vertices, in 1-D and 2-D, on star, cycle and path graphs, for β from
0.1 to 1: every step converges, mass is conserved, and at large t the potentials
``Φ_g = β log ρ_g + V_g`` are one constant (the discrete Gibbs state, nodal ρ_g ∝ exp(−V_g/β)).
"""

from __future__ import annotations

import numpy as np
import pytest

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import SolverError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.solvers.nonlinear import NewtonSolver, newton_options
from rdgraph.timestepping.upwind import upwind_flux

# Wells of different widths, depths and centres on [-1.5, 1.5]: the problem on which the
# smoothed upwind exchange made Newton stall (the densities of two vertices at one point
# differ by up to e^80 here).
STAR_WELLS = ["2*(x[0]+0.8)**2", "8*(x[0]-0.2)**2 - 1.0", "4*(x[0]-0.9)**2 - 2.0",
              "16*(x[0]+0.3)**2 - 1.5"]


def _wells(dim: int, n: int) -> list[str]:
    """``a_g |x − c_g|² − d_g`` with width, depth and centre depending on g."""
    out = []
    for g in range(n):
        a, depth = 1.0 + 1.5 * (g % 3), 0.2 * ((g * 7) % 5)
        centre = [0.6 * np.cos(2.1 * g + 0.3 * k) for k in range(dim)]
        out.append(" + ".join(f"{a}*(x[{k}] - ({c:.4f}))**2" for k, c in enumerate(centre))
                   + f" - {depth:.3f}")
    return out


def _config(view: str, dim: int, kind: str, n: int, beta: float, dt: float, t_end: float,
            potentials: list[str], cells=None, lower=-1.0, upper=1.0) -> dict:
    return {
        "mesh": {"shape": "interval" if dim == 1 else "rectangle",
                 "cells": cells or ([60] if dim == 1 else [8, 8]),
                 "lower": [lower] * dim, "upper": [upper] * dim},
        "space": {"degree": 1},
        "graph": {"kind": kind, "n": n, "weight": 1.0},
        "model": {"coupling": "upwind" if view == "upwind" else "gibbs", "beta": beta,
                  "potentials": potentials, "initial": "1 + 0.4*x[0]"},
        "time": {"scheme": "implicit-euler" if view == "upwind" else "jko", "dt": dt,
                 "t_end": t_end},
        "solver": {"max_retries": 0},
        "output": {"fields_every": 0},
    }


def _gibbs_distance(sim: Simulation) -> tuple[float, np.ndarray]:
    """The lumped relative entropy ``Σ_g Σ_i m_i ρ_gi log(ρ_gi / ρ∞_gi)`` per unit mass, and the
    vertex fractions of ``ρ∞``, the discrete Gibbs state of the same mass (nodal
    ``ρ∞_g ∝ exp(−V_g/β)``, where ``Φ`` is one constant). Collective."""
    n, beta, comm = sim.layout.size_local, sim.settings.model.beta, sim.comm
    m = sim.operators.mass_row_sums()
    shift = comm.allreduce(min(float(sim.model.potential_nodal(g)[:n].min())
                               for g in range(sim.graph.n)), op=MPI.MIN)
    pi = [np.exp(-(sim.model.potential_nodal(g)[:n] - shift) / beta) for g in range(sim.graph.n)]
    weights = np.array([comm.allreduce(float(m @ p), op=MPI.SUM) for p in pi])
    rho = [sim.layout.block(sim.state, g) for g in range(sim.graph.n)]
    mass = comm.allreduce(sum(float(m @ r) for r in rho), op=MPI.SUM)
    local = sum(float(m @ (r * np.log(r * weights.sum() / (mass * p))))
                for r, p in zip(rho, pi, strict=True))
    return comm.allreduce(local, op=MPI.SUM) / mass, weights / weights.sum()


CASES = [  # dim, graph, n, β, dt, t_end
    (1, "star", 4, 0.25, 5.0, 400.0),
    (1, "cycle", 5, 1.0, 2.0, 60.0),
    (2, "path", 3, 0.5, 2.0, 80.0),
    (1, "path", 3, 0.1, 10.0, 1500.0),
]


@pytest.mark.parametrize("view", ["upwind", "jko"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[1]}-beta{c[3]}")
def test_runs_to_the_gibbs_state(view, case):
    dim, kind, n, beta, dt, t_end = case
    sim = Simulation(settings_from_dict(_config(view, dim, kind, n, beta, dt, t_end,
                                                _wells(dim, n))), MPI.COMM_WORLD)
    try:
        start = sim.diagnostics()
        assert _gibbs_distance(sim)[0] > 0.1  # far from equilibrium at the start
        for _ in range(sim.num_steps):  # no retries allowed: every step converges
            sim.advance()
        end = sim.diagnostics()
        distance, gibbs = _gibbs_distance(sim)
        # Gibbs rates exp(ΔV/2β) reach e^40 at β = 0.1 here: the exchange cancels to round-off
        # of that size, step after step (measured: 4e-11 on 1 rank, 1.1e-10 on 2).
        assert abs(end.mass - start.mass) <= 1e-9 * start.mass
        assert distance < 1e-6
        assert np.allclose(end.vertex_masses / end.mass, gibbs, rtol=1e-3, atol=1e-6)
    finally:
        sim.destroy()


def test_upwind_regression_star_wells_refined():
    """The 300-cell star problem failed at step 6–10 with the smoothed exchange."""
    config = _config("upwind", 1, "star", 4, 0.25, 0.1, 2.0, STAR_WELLS, cells=[300],
                     lower=-1.5, upper=1.5)
    config["model"]["initial"] = "1 + 0.5*x[0]**2"
    sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
    try:
        mass = sim.diagnostics().mass
        for _ in range(sim.num_steps):
            assert sim.advance() <= 15  # Newton iterations
        assert abs(sim.diagnostics().mass - mass) <= 1e-12 * mass
    finally:
        sim.destroy()


def test_upwind_exchange_is_exact_upwind_and_monotone():
    w = 1.5
    phi_g, phi_h = np.array([1.0, 0.0, 0.3]), np.array([0.0, 1.0, 0.3])
    rho_g, rho_h = np.array([2.0, 2.0, 2.0]), np.array([5.0, 5.0, 5.0])
    flux = upwind_flux(w, phi_g, phi_h, rho_g, rho_h)[0]
    # Φ_g > Φ_h: g's density moves; Φ_g < Φ_h: h's; equal potentials: nothing moves.
    assert flux == pytest.approx([w * 2.0, -w * 5.0, 0.0], abs=1e-15)
    assert np.allclose(upwind_flux(w, phi_h, phi_g, rho_h, rho_g)[0], -flux, atol=1e-15)
    # For fixed densities the exchange never decreases as Φ_g − Φ_h grows, even when the
    # densities differ by many orders of magnitude (a smoothed switch does not have this).
    z = np.linspace(-1e-2, 1e-2, 4001)
    for rho_g, rho_h in ((1e-8, 1.0), (1.0, 1e-8)):
        values = upwind_flux(w, z, np.zeros_like(z), np.full_like(z, rho_g),
                             np.full_like(z, rho_h))[0]
        assert np.all(np.diff(values) >= 0)
    # One-sided derivatives against central differences away from Φ_g = Φ_h.
    d = 1e-7
    for args in ([w, np.array([0.2]), np.array([0.1]), np.array([1.3]), np.array([0.7])],
                 [w, np.array([0.1]), np.array([0.2]), np.array([1.3]), np.array([0.7])]):
        derivatives = upwind_flux(*args)[1:]
        for k, exact in zip(range(1, 5), derivatives, strict=True):
            plus, minus = list(args), list(args)
            plus[k], minus[k] = args[k] + d, args[k] - d
            numeric = (upwind_flux(*plus)[0] - upwind_flux(*minus)[0]) / (2 * d)
            assert exact == pytest.approx(numeric, rel=1e-6, abs=1e-12)


def _diagonal_problem(scale: float, shift: float):
    """``F(x) = scale (x² − shift)`` per entry, a diagonal Jacobian (2 rows per rank)."""
    comm = MPI.COMM_WORLD
    J = PETSc.Mat().createAIJ(((2, None), (2, None)), nnz=1, comm=comm)
    start, end = J.getOwnershipRange()
    for i in range(start, end):
        J.setValue(i, i, 1.0)
    J.assemble()

    def residual(x, f):
        f.array[:] = scale * (x.array_r ** 2 - shift)

    def jacobian(x, A):
        diagonal = A.createVecLeft()
        diagonal.array[:] = 2 * scale * x.array_r
        A.setDiagonal(diagonal)
        diagonal.destroy()

    return J, residual, jacobian


def test_newton_accepts_stagnation_at_the_roundoff_floor():
    # The root √2 is not representable, so F never reaches 0: with entries of size 1e12 the
    # residual cannot fall below ~1e12 ε ≈ 1e-4, far above atol. (The step-size test is off,
    # so that the floor is what ends the solve.)
    J, residual, jacobian = _diagonal_problem(1e12, 2.0)
    options = newton_options({"snes_atol": 1e-13, "snes_stol": 0.0})
    solver = NewtonSolver(residual, jacobian, J, options, prefix="test_floor_",
                          name="floor test")
    x = J.createVecRight()
    x.set(1.0)
    try:
        solver.solve(x)
        assert np.allclose(x.array_r, np.sqrt(2.0), rtol=1e-15)
        assert solver.stagnated == 1
    finally:
        for obj in (solver, J, x):
            obj.destroy()


def test_newton_without_a_root_still_fails():
    J, residual, jacobian = _diagonal_problem(1.0, -1.0)  # x² + 1 = 0: no real root
    solver = NewtonSolver(residual, jacobian, J, newton_options({"snes_max_it": 20}),
                          prefix="test_noroot_", name="no-root test")
    x = J.createVecRight()
    x.set(0.5)
    try:
        with pytest.raises(SolverError, match="no-root test"):
            solver.solve(x)
        assert solver.stagnated == 0
    finally:
        for obj in (solver, J, x):
            obj.destroy()
