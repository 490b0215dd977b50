"""The linearized JKO step: positivity, energy decrease, mass, Gibbs fixed point, order in τ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.studies.jko_study import jko_vs_implicit_euler
from rdgraph.timestepping.jko import log_mean, mobilities

POTENTIALS = ["(x[0] - 0.3)**2 + x[1]", "2*(x[1] - 0.6)**2", "x[0]*x[1]"]


def _run(config: dict, steps: int | None = None):
    sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
    try:
        history = [sim.diagnostics()]
        for _ in range(steps or sim.num_steps):
            history.append(sim.diagnostics(sim.advance()))
        return history, sim.state.array_r.copy()
    finally:
        sim.destroy()


def test_log_mean_is_stable_and_exact():
    a = np.array([1.0, 2.0, 1e-8, 3.0, 5.0])
    b = np.array([1.0, 1.0, 1.0, 3.0 * (1 + 1e-12), 5.0 * (1 - 1e-5)])
    direct = (a[1:3] - b[1:3]) / (np.log(a[1:3]) - np.log(b[1:3]))
    value = log_mean(a, b)
    assert value[0] == pytest.approx(1.0, rel=1e-15)
    assert np.allclose(value[1:3], direct, rtol=1e-13)
    # Close arguments, where the quotient cancels: Λ(a, b) ≈ (a + b)/2 to second order.
    assert value[3] == pytest.approx(3.0 * (1 + 0.5e-12), rel=1e-15)
    assert value[4] == pytest.approx(0.5 * (a[4] + b[4]), rel=1e-10)
    assert value[4] < 0.5 * (a[4] + b[4])  # Λ lies below the arithmetic mean
    # θ for gibbs equals (w/β) sqrt(π_g π_h) Λ(ρ_g/π_g, ρ_h/π_h).
    beta, rho_g, rho_h, v_g, v_h = 0.3, np.array([0.7]), np.array([0.2]), 0.4, -0.1
    pi_g, pi_h = np.exp(-v_g / beta), np.exp(-v_h / beta)
    expected = 2.0 / beta * np.sqrt(pi_g * pi_h) * log_mean(rho_g / pi_g, rho_h / pi_h)
    theta = mobilities(2.0, beta, np.log(rho_g), np.log(rho_h),
                       beta * np.log(rho_g) + v_g, beta * np.log(rho_h) + v_h)
    assert theta == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("coupling", ["gibbs", "laplacian"])
def test_positive_energy_decreasing_mass_conserved(coupling):
    potentials = POTENTIALS if coupling == "gibbs" else ["(x[0] - 0.3)**2"] * 3
    # Nearly vacuum in places: implicit Euler with consistent mass undershoots here.
    config = make_config(
        model={"coupling": coupling, "beta": 0.2, "potentials": potentials,
               "initials": ["1e-6 + exp(-40*(x[0]-0.2)**2)", "1e-6 + exp(-40*(x[1]-0.8)**2)",
                            "1e-6 + x[0]"]},
        time={"scheme": "jko", "dt": 0.02, "t_end": 0.2},
    )
    history, _ = _run(config)
    mass0 = history[0].mass
    for prev, new in itertools.pairwise(history):
        assert new.min_density > 0
        assert new.free_energy < prev.free_energy
        assert new.mass == pytest.approx(mass0, rel=1e-11)
        assert 1 <= new.ksp_iterations <= 10  # Newton iterations of the step
    assert history[-1].rel_entropy < 0.5 * history[0].rel_entropy


def test_gibbs_state_is_a_fixed_point():
    beta = 0.3
    config = make_config(
        model={"coupling": "gibbs", "beta": beta, "potentials": POTENTIALS,
               "initials": [f"2*exp(-({v})/{beta})" for v in POTENTIALS]},
        time={"scheme": "jko", "dt": 0.05, "t_end": 0.2},
    )
    sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
    try:
        start = sim.state.array_r.copy()
        for _ in range(sim.num_steps):
            sim.advance()
        assert np.allclose(sim.state.array_r, start, rtol=1e-12, atol=0)
    finally:
        sim.destroy()


def test_converges_to_gibbs_vertex_masses():
    config = make_config(
        mesh={"cells": [6, 6]},
        model={"coupling": "gibbs", "beta": 0.5, "potentials": POTENTIALS, "initial": "1"},
        time={"scheme": "jko", "dt": 0.5, "t_end": 20.0},
    )
    sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
    try:
        for _ in range(sim.num_steps):
            sim.advance()
        d = sim.diagnostics()
        fractions = d.vertex_masses / d.vertex_masses.sum()
        # Lumped vs. consistent quadrature of ∫π_g: agreement to O(h²).
        assert np.allclose(fractions, sim.model.gibbs_fractions, rtol=2e-2)
        assert d.rel_entropy < 1e-3
    finally:
        sim.destroy()


def test_refused_combinations():
    base = {"scheme": "jko", "dt": 0.01, "t_end": 0.02}
    with pytest.raises(InputError, match="degree = 1"):
        settings_from_dict(make_config(space={"degree": 2}, time=base))
    with pytest.raises(InputError, match="source"):
        settings_from_dict(make_config(model={"source": "1"}, time=base))
    with pytest.raises(InputError, match="same\\s+potential"):
        Simulation(settings_from_dict(make_config(
            model={"coupling": "laplacian", "potentials": POTENTIALS}, time=base)),
            MPI.COMM_WORLD)
    with pytest.raises(InputError, match="positive initial"):
        Simulation(settings_from_dict(make_config(model={"initial": "x[0]"}, time=base)),
                   MPI.COMM_WORLD)


def test_jko_and_implicit_euler_agree_at_first_order(shared_tmp):
    study = jko_vs_implicit_euler([5, 10, 20], t_end=0.2, cells_per_step=4)
    assert all(d > 0 for d in study.distance)
    if MPI.COMM_WORLD.rank == 0:
        study.write_csv(shared_tmp / "jko.csv")
        study.plot(shared_tmp / "jko.png")
        assert (shared_tmp / "jko.csv").read_text().count("\n") == 4
        assert (shared_tmp / "jko.png").stat().st_size > 0
        assert "| 0.01 | 80 |" in study.table()
    assert study.orders[-1] == pytest.approx(1.0, abs=0.2)
    assert study.orders[-2] == pytest.approx(1.0, abs=0.2)


def test_failed_newton_is_retried_with_halved_steps():
    # The first step of dt = 0.4 takes 6 Newton iterations, smaller steps fewer: with a cap of
    # 5 the step fails and succeeds as smaller steps (rdgraph.timestepping.recovery), keeping
    # the mass.
    config = make_config(
        model={"coupling": "gibbs", "beta": 0.2, "potentials": POTENTIALS,
               "initial": "1 + 0.9*cos(pi*x[0])"},
        time={"scheme": "jko", "dt": 0.4, "t_end": 0.4},
        solver={"petsc_options": {"snes_max_it": 5}, "max_retries": 3},
    )
    sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
    try:
        mass0 = sim.diagnostics().mass
        sim.advance()
        assert sim.guard.retries == 1
        assert sim.diagnostics().mass == pytest.approx(mass0, rel=1e-11)
    finally:
        sim.destroy()
