"""The upwind coupling: mass, energy decrease, Gibbs state stationary and attracting."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

POTENTIALS = ["(x[0] - 0.3)**2 + x[1]", "2*(x[1] - 0.6)**2", "x[0]*x[1]"]


def _config(**model):
    return make_config(
        mesh={"cells": [6, 6]},
        model={"coupling": "upwind", "beta": 0.3, "potentials": POTENTIALS, **model},
        time={"scheme": "implicit-euler", "dt": 0.05, "t_end": 0.5},
    )


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
