"""The identities of docs/model.md that hold exactly (to solver tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI, PETSc
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

# Unequal weights and unequal potentials: the identities must not depend on either.
WEIGHTED_PATH = {"kind": "edges", "n": 3, "edges": [[0, 1, 2.0], [1, 2, 0.5]]}
UNEQUAL_POTENTIALS = ["x[0]**2", "2*(x[0] - 0.5)**2 + x[1]", "sin(3*x[1]) + x[0]"]
BUMPS = "1 + 0.5*cos(pi*x[0])*cos(2*pi*x[1]) + 0.2*g"


def simulate(data: dict, comm=MPI.COMM_WORLD):
    sim = Simulation(settings_from_dict(data), comm)
    history = sim.run()
    return sim, history


def masses(history) -> np.ndarray:
    return np.array([d.vertex_masses for d in history])


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson", "bdf2"])
@pytest.mark.parametrize("coupling", ["laplacian", "gibbs"])
def test_total_mass_is_conserved(scheme, coupling):
    data = make_config(
        graph=WEIGHTED_PATH,
        model={"coupling": coupling, "beta": 0.5, "potentials": UNEQUAL_POTENTIALS,
               "initial": BUMPS},
        time={"scheme": scheme, "dt": 0.05, "t_end": 0.5},
    )
    sim, history = simulate(data)
    total = masses(history).sum(axis=1)
    assert np.allclose(total, total[0], rtol=1e-11, atol=0)
    # Something did happen: the vertex masses moved.
    assert np.abs(masses(history)[-1] - masses(history)[0]).max() > 1e-3
    sim.destroy()


@pytest.mark.parametrize("coupling", ["laplacian", "gibbs"])
def test_operator_columns_sum_to_zero(coupling):
    """The identity behind mass conservation, on the assembled operator itself (the steppers
    put back rounding-size mass defects, so a run alone cannot show a conservation fault):
    ``Σ_g (M1)ᵀ(M⁻¹Aρ)_g = 1ᵀAρ = 0`` for every ρ."""
    data = make_config(
        graph=WEIGHTED_PATH,
        model={"coupling": coupling, "beta": 0.5, "potentials": UNEQUAL_POTENTIALS,
               "initial": BUMPS},
    )
    sim = Simulation(settings_from_dict(data), MPI.COMM_WORLD)
    A = sim.operators.matrix(0.0, 1.0)
    x, y = A.createVecs()
    x.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).random(x.getLocalSize())
    A.mult(x, y)
    column_sum = MPI.COMM_WORLD.allreduce(float(y.array_r.sum()), op=MPI.SUM)
    one = PETSc.NormType.NORM_1
    assert abs(column_sum) <= 1e-12 * A.norm(one) * x.norm(one)
    assert y.norm() > 1e-3 * x.norm()  # the operator does something
    for obj in (A, x, y):
        obj.destroy()
    sim.destroy()


def test_a_mass_defect_beyond_rounding_is_left_visible():
    """A step whose mass is off by more than rounding keeps its defect (a fault to be seen)."""
    data = make_config(model={"initial": BUMPS}, time={"dt": 0.05, "t_end": 0.05})
    sim = Simulation(settings_from_dict(data), MPI.COMM_WORLD)
    stepper = sim.stepper
    x = sim.state.copy()
    mass = MPI.COMM_WORLD.allreduce(stepper._local_mass(x), op=MPI.SUM)
    before = x.array.copy()
    stepper._restore_mass(x, stepper._local_mass(x) * (1 + 1e-6))
    assert np.array_equal(x.array, before)
    stepper._restore_mass(x, stepper._local_mass(x) * (1 + 1e-12))
    after = MPI.COMM_WORLD.allreduce(stepper._local_mass(x), op=MPI.SUM)
    assert after == pytest.approx(mass * (1 + 1e-12), rel=1e-15)
    x.destroy()
    sim.destroy()


# Six tilted double wells (gibbs, β = 0.1) on a fine interval: ‖A‖ ≈ β/h² = 250, and the
# assembled columns of A sum to zero only to rounding. Before each step restored the mass,
# three steps of 1000 changed it by 1e-11 .. 1e-10 (relative), with the same sign every
# step, with the direct solve.
DOUBLE_WELLS = ["0.4*(x[0]**2 - 1)**2 - 0.1*x[0]",
                *(f"0.4*(x[0]**2 - 1)**2 + 0.08*x[0] + {0.17 + 0.05 * g:.2f}" for g in range(1, 6))]


LONG_STEP_SOURCE = "1e-4*exp(-t/2000)*(1 + x[0]**2)"


@pytest.mark.parametrize(("scheme", "source"), [
    *((scheme, source) for scheme in ("implicit-euler", "crank-nicolson", "bdf2")
      for source in (None, LONG_STEP_SOURCE)),
    ("jko", None),  # Newton's tolerance and rounding (9e-11 before the mass was restored)
])
def test_total_mass_is_conserved_to_round_off_over_long_steps(scheme, source):
    """Steps of 1000 time units keep the total mass to 1e-14 (relative), and a source adds
    exactly the mass the scheme's own quadrature in time gives it."""
    dt = 1000.0
    data = make_config(
        mesh={"shape": "interval", "cells": [200], "lower": [-2.0], "upper": [2.0]},
        graph={"kind": "path", "n": 6},
        model={"coupling": "gibbs", "beta": 0.1, "potentials": DOUBLE_WELLS,
               "initial": "exp(-(x[0] + 1)**2 / 0.05)", "source": source},
        time={"scheme": scheme, "dt": dt, "t_end": 3 * dt},
    )
    sim, history = simulate(data)
    total = masses(history).sum(axis=1)
    expected = np.full_like(total, total[0])
    if source is not None:
        # ∫f_g = 1e-4 e^{-t/2000} (4 + 16/3) on (-2, 2), the same for all six vertices.
        rate = [6 * 1e-4 * np.exp(-d.t / 2000) * (4 + 16 / 3) for d in history]
        for n in range(1, len(total)):
            if scheme == "crank-nicolson":
                added = dt / 2 * (rate[n - 1] + rate[n])
                expected[n] = expected[n - 1] + added
            elif scheme == "bdf2" and n > 1:
                expected[n] = (2 * total[n - 1] - 0.5 * total[n - 2] + dt * rate[n]) / 1.5
            else:
                expected[n] = total[n - 1] + dt * rate[n]
    assert np.abs(total - expected).max() <= 1e-14 * total.max(), total - expected
    sim.destroy()


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson", "bdf2"])
def test_laplacian_vertex_mass_recursion(scheme):
    """m' = -L m holds exactly for the discrete vertex masses, whatever the V_g."""
    dt = 0.1
    data = make_config(
        graph=WEIGHTED_PATH,
        model={"coupling": "laplacian", "beta": 0.3, "potentials": UNEQUAL_POTENTIALS,
               "initials": ["1", "2 + x[0]", "exp(x[1])"]},
        time={"scheme": scheme, "dt": dt, "t_end": 1.0},
    )
    sim, history = simulate(data)
    L = sim.graph.laplacian()
    identity = np.eye(sim.graph.n)
    m = masses(history)
    for n in range(1, len(m)):
        if scheme == "implicit-euler" or (scheme == "bdf2" and n == 1):
            residual = (identity + dt * L) @ m[n] - m[n - 1]
        elif scheme == "crank-nicolson":
            residual = (identity + dt / 2 * L) @ m[n] - (identity - dt / 2 * L) @ m[n - 1]
        else:
            residual = (1.5 * identity + dt * L) @ m[n] - (2 * m[n - 1] - 0.5 * m[n - 2])
        assert np.abs(residual).max() <= 1e-10 * np.abs(m[n]).max(), (n, residual)
    sim.destroy()


def test_gibbs_stationary_vertex_masses_exact():
    """V_g = V + c_g: every vertex shares one density shape, masses tend to e^{-c_g/β}."""
    beta = 0.5
    offsets = np.array([0.0, 0.3, -0.2, 0.5])
    data = make_config(
        graph={"kind": "cycle", "n": 4, "weight": 1.5},
        model={
            "coupling": "gibbs",
            "beta": beta,
            "potentials": [f"(x[0] - 0.3)**2 + 0.5*x[1] + {c}" for c in offsets],
            "initials": ["1 + x[0]", "2", "1 + x[1]*x[0]", "0.5"],
        },
        time={"scheme": "implicit-euler", "dt": 5.0, "t_end": 400.0},
    )
    sim, history = simulate(data)
    expected = np.exp(-offsets / beta)
    expected *= history[0].mass / expected.sum()
    assert np.allclose(history[-1].vertex_masses, expected, rtol=1e-9)
    # The model's Gibbs fractions are the same numbers.
    assert np.allclose(sim.model.gibbs_fractions * history[0].mass, expected, rtol=1e-9)
    sim.destroy()


def test_gibbs_stationary_state_converges_with_h():
    """General V_g: the discrete stationary masses approach m ∫π_g / Σ∫π_h as h → 0."""
    errors = []
    for cells in (8, 16):
        data = make_config(
            mesh={"cells": [cells, cells]},
            graph=WEIGHTED_PATH,
            model={"coupling": "gibbs", "beta": 0.5, "potentials": UNEQUAL_POTENTIALS},
            time={"scheme": "implicit-euler", "dt": 10.0, "t_end": 500.0},
        )
        sim, history = simulate(data)
        final = history[-1]
        target = final.mass * sim.model.gibbs_fractions
        errors.append(np.abs(final.vertex_masses - target).max() / final.mass)
        # Converged in time: the last steps no longer move.
        assert np.abs(history[-1].vertex_masses - history[-2].vertex_masses).max() < 1e-12
        sim.destroy()
    assert errors[1] < 1e-2
    assert errors[0] / errors[1] > 3.0, errors  # second order in h


@pytest.mark.parametrize("degree", [1, 2])
def test_cosine_mode_solution(degree):
    """V = 0, laplacian: ρ_g = c + a_g cos(πx) cos(πy) e^{-(2βπ² + λ) t}, L a = λ a."""
    beta, w, t_end = 0.05, 0.7, 0.5
    lam, a = 2 * w, np.array([1.0, -1.0])  # path of 2 vertices
    initials = [f"1 + {a_g}*0.5*cos(pi*x[0])*cos(pi*x[1])" for a_g in a]
    data = make_config(
        mesh={"cells": [24, 24]},
        space={"degree": degree},
        graph={"kind": "path", "n": 2, "weight": w},
        model={"coupling": "laplacian", "beta": beta, "initials": initials},
        time={"scheme": "crank-nicolson", "dt": 0.005, "t_end": t_end},
    )
    sim, history = simulate(data)
    x = sim.model.V.tabulate_dof_coordinates()[: sim.model.num_owned]
    decay = np.exp(-(2 * beta * np.pi**2 + lam) * t_end)
    mode = np.cos(np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])
    local = 0.0
    for g, rho in enumerate(sim.nodal_values()):
        exact = 1 + a[g] * 0.5 * mode * decay
        local = max(local, np.abs(rho - exact).max())
    error = MPI.COMM_WORLD.allreduce(local, op=MPI.MAX)
    amplitude = 0.5 * decay
    assert error < (0.03 if degree == 1 else 0.003) * amplitude, error / amplitude
    sim.destroy()


@pytest.mark.parametrize("scheme", ["implicit-euler", "bdf2"])
def test_relative_entropy_and_free_energy_decrease_gibbs(scheme):
    data = make_config(
        mesh={"cells": [12, 12]},
        graph=WEIGHTED_PATH,
        model={"coupling": "gibbs", "beta": 0.5, "potentials": UNEQUAL_POTENTIALS,
               "initial": BUMPS},
        time={"scheme": scheme, "dt": 0.02, "t_end": 1.0},
    )
    sim, history = simulate(data)
    relative = np.array([d.rel_entropy for d in history])
    free = np.array([d.free_energy for d in history])
    assert np.all(np.diff(relative) <= 1e-12 * abs(relative[0]))
    assert np.all(np.diff(free) <= 1e-12 * abs(free[0]))
    assert relative[-1] < 0.5 * relative[0]
    assert min(d.min_density for d in history) > 0
    sim.destroy()


def test_relative_entropy_decreases_laplacian_equal_potentials():
    data = make_config(
        graph={"kind": "star", "n": 4, "weight": 2.0},
        model={"coupling": "laplacian", "beta": 0.4, "potential": "(x[0] - 0.2)**2 + x[1]",
               "initial": BUMPS},
        time={"scheme": "implicit-euler", "dt": 0.02, "t_end": 0.5},
    )
    sim, history = simulate(data)
    relative = np.array([d.rel_entropy for d in history])
    assert np.all(np.diff(relative) <= 1e-12 * abs(relative[0]))
    sim.destroy()


def test_same_diagnostics_on_every_rank_count():
    """COMM_WORLD (distributed) and COMM_SELF (each rank alone) give the same numbers."""
    data = make_config(
        mesh={"cells": [10, 7]},
        space={"degree": 2},
        graph=WEIGHTED_PATH,
        model={"coupling": "gibbs", "beta": 0.5, "potentials": UNEQUAL_POTENTIALS,
               "initial": BUMPS, "source": "0.1*sin(pi*x[0])*t*(g - 1)"},
        time={"scheme": "crank-nicolson", "dt": 0.05, "t_end": 0.25},
    )
    from rdgraph.output.io import gather_nodal_values

    results = []
    for comm in (MPI.COMM_WORLD, MPI.COMM_SELF):
        sim, history = simulate(data, comm)
        rows = np.array([d.row()[:-1] for d in history])  # all but ksp_iterations
        x, rho = gather_nodal_values(sim.model.V, sim.nodal_values())
        results.append((rows, x, rho))
        sim.destroy()
    (rows_w, x_w, rho_w), (rows_s, x_s, rho_s) = results
    assert np.allclose(rows_w, rows_s, rtol=1e-10, atol=1e-13)
    if MPI.COMM_WORLD.rank == 0:
        assert np.array_equal(x_w, x_s)
        assert np.allclose(rho_w, rho_s, rtol=1e-10, atol=1e-13)
