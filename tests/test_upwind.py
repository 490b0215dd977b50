"""The upwind coupling: mass, energy decrease, Gibbs state stationary and attracting."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.timestepping.upwind import smoothed_upwind_flux

POTENTIALS = ["(x[0] - 0.3)**2 + x[1]", "2*(x[1] - 0.6)**2", "x[0]*x[1]"]


def _config(**model):
    return make_config(
        mesh={"cells": [6, 6]},
        model={"coupling": "upwind", "beta": 0.3, "potentials": POTENTIALS, **model},
        time={"scheme": "implicit-euler", "dt": 0.05, "t_end": 0.5},
    )


def test_smoothed_flux_is_upwind_and_antisymmetric():
    phi_g, phi_h = np.array([1.0, 0.0, 0.3]), np.array([0.0, 1.0, 0.3])
    rho_g, rho_h = np.array([2.0, 2.0, 2.0]), np.array([5.0, 5.0, 5.0])
    flux = smoothed_upwind_flux(1.5, phi_g, phi_h, rho_g, rho_h, 1e-4)[0]
    # Φ_g > Φ_h: g's density moves; Φ_g < Φ_h: h's; equal potentials: nothing moves.
    assert flux == pytest.approx([1.5 * 2.0, -1.5 * 5.0, 0.0], abs=1e-14)
    back = smoothed_upwind_flux(1.5, phi_h, phi_g, rho_h, rho_g, 1e-4)[0]
    assert np.allclose(back, -flux, atol=1e-15)
    # Derivatives against central differences.
    d = 1e-7
    args = [1.0, np.array([0.2]), np.array([0.2003]), np.array([1.3]), np.array([0.7]), 1e-3]
    value, d_pg, d_ph, d_rg, d_rh = smoothed_upwind_flux(*args)
    for k, exact in zip(range(1, 5), (d_pg, d_ph, d_rg, d_rh)):
        plus, minus = list(args), list(args)
        plus[k], minus[k] = args[k] + d, args[k] - d
        numeric = (smoothed_upwind_flux(*plus)[0] - smoothed_upwind_flux(*minus)[0]) / (2 * d)
        assert exact == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_mass_conserved_energy_decreases_positive():
    sim = Simulation(settings_from_dict(_config(
        initials=["1e-4 + exp(-30*(x[0]-0.2)**2)", "1 + 0.5*cos(pi*x[1])", "0.1"])),
        MPI.COMM_WORLD)
    try:
        prev = sim.diagnostics()
        mass0 = prev.mass
        for _ in range(sim.num_steps):
            new = sim.diagnostics(sim.advance())
            assert new.mass == pytest.approx(mass0, rel=1e-11)
            assert new.free_energy < prev.free_energy
            assert new.min_density > 0
            assert 1 <= new.ksp_iterations <= 15
            prev = new
    finally:
        sim.destroy()


def test_gibbs_state_is_stationary():
    beta = 0.3
    sim = Simulation(settings_from_dict(_config(
        initials=[f"2*exp(-({v})/{beta})" for v in POTENTIALS])), MPI.COMM_WORLD)
    try:
        start = sim.state.array_r.copy()
        for _ in range(3):
            sim.advance()
        assert np.allclose(sim.state.array_r, start, rtol=1e-12, atol=0)
    finally:
        sim.destroy()


def test_converges_to_gibbs_state():
    config = _config(initial="1")
    config["time"].update({"dt": 1.0, "t_end": 60.0})
    sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
    try:
        for _ in range(sim.num_steps):
            sim.advance()
        # Φ = β log ρ + V is constant at the discrete equilibrium: ρ_g ∝ exp(−V_g/β) nodally.
        n, beta = sim.layout.size_local, 0.3
        phi = np.concatenate([beta * np.log(sim.layout.block(sim.state, g))
                              + sim.model.potential_nodal(g)[:n] for g in range(3)])
        spread = (sim.comm.allreduce(float(phi.max()), op=MPI.MAX)
                  - sim.comm.allreduce(float(phi.min()), op=MPI.MIN))
        assert spread < 1e-6
        # Vertex masses: the lumped (vertex-quadrature) Gibbs weights Σ_i m_i exp(−V_g,i/β).
        m = sim.operators.mass_row_sums()
        weights = np.array([sim.comm.allreduce(float(m @ np.exp(-sim.model.potential_nodal(g)[:n]
                                                                / beta)), op=MPI.SUM)
                            for g in range(3)])
        d = sim.diagnostics()
        fractions = d.vertex_masses / d.vertex_masses.sum()
        assert np.allclose(fractions, weights / weights.sum(), rtol=1e-6)
    finally:
        sim.destroy()


def test_refused_combinations():
    for time in ({"scheme": "crank-nicolson"}, {"scheme": "bdf2"}, {"scheme": "jko"}):
        with pytest.raises(InputError, match="upwind"):
            settings_from_dict(make_config(model={"coupling": "upwind"}, time=time))
    with pytest.raises(InputError, match="degree = 1"):
        settings_from_dict(make_config(model={"coupling": "upwind"}, space={"degree": 2}))
    with pytest.raises(InputError, match="source"):
        settings_from_dict(make_config(model={"coupling": "upwind", "source": "1"}))
    with pytest.raises(InputError, match="positive initial"):
        Simulation(settings_from_dict(make_config(model={"coupling": "upwind",
                                                         "initial": "x[0]"})), MPI.COMM_WORLD)
