"""Adaptive time steps and runs to equilibrium.

Every test runs serially and under ``mpiexec -n 2`` (the meshes are distributed).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import assert_refused, cut_run, make_config

from rdgraph.compat import MPI
from rdgraph.errors import InputError, SolverError
from rdgraph.output.plots import read_diagnostics
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation, run
from rdgraph.timestepping.adaptive import AdaptiveStepper
from rdgraph.timestepping.linear import TimeStepper

CELLS = 40
BETA, WEIGHT = 0.05, 0.7


def cosine_config(tolerance: float, *, t_end: float = 1.0, lumping: bool = False,
                  scheme: str = "implicit-euler", **time) -> dict:
    """V = 0, laplacian on a path of 2 vertices: ρ_g = 1 + a_g cos(πx) e^{-(β μ_h + 2w) t}."""
    return make_config(
        mesh={"shape": "interval", "cells": [CELLS], "lower": [0.0], "upper": [1.0]},
        space={"lumping": lumping},
        graph={"kind": "path", "n": 2, "weight": WEIGHT},
        model={"coupling": "laplacian", "beta": BETA,
               "initials": ["1 + 0.5*cos(pi*x[0])", "1 - 0.5*cos(pi*x[0])"]},
        time={"scheme": scheme, "dt": 1e-3, "t_end": t_end, "adaptive": True,
              "tolerance": tolerance, **time},
    )


def semi_discrete_error(sim: Simulation) -> float:
    """Largest nodal error against the exact solution of the space-discrete system.

    On a uniform P1 mesh the nodal cos(πx_i) is an eigenvector of M⁻¹K (consistent or
    lumped mass, natural boundary conditions included), with eigenvalue μ_h below: the only
    error left is the time error.
    """
    h = 1.0 / CELLS
    c = math.cos(math.pi * h)
    mu = (2 - 2 * c) / h**2 if sim.settings.space.lumping else 6 * (1 - c) / (h**2 * (2 + c))
    decay = math.exp(-(BETA * mu + 2 * WEIGHT) * sim.t)
    x = sim.model.V.tabulate_dof_coordinates()[: sim.model.num_owned, 0]
    local = 0.0
    for g, u in enumerate(sim.functions):
        exact = 1 + (1 - 2 * g) * 0.5 * np.cos(np.pi * x) * decay
        local = max(local, float(np.abs(u.x.array[: sim.model.num_owned] - exact).max()))
    return MPI.COMM_WORLD.allreduce(local, op=MPI.MAX)


def simulate(data: dict) -> tuple[Simulation, list]:
    sim = Simulation(settings_from_dict(data))
    return sim, sim.run()


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson"])
def test_controller_reaches_the_prescribed_accuracy_on_the_cosine_mode(scheme):
    """The global error follows the tolerance (about proportionally), the run ends at t_end
    exactly, and takes far fewer steps than a fixed step of the same accuracy would."""
    errors, steps = [], []
    for tolerance in (1e-3, 1e-5):
        sim, history = simulate(cosine_config(tolerance, scheme=scheme))
        assert sim.t == 1.0
        assert isinstance(sim.stepper, AdaptiveStepper)
        errors.append(semi_discrete_error(sim))
        steps.append(sim.step_index)
        masses = np.array([d.mass for d in history])
        assert np.abs(masses - masses[0]).max() < 1e-12 * masses[0]
        sim.destroy()
    assert errors[0] < 10 * 1e-3 and errors[1] < 10 * 1e-5, errors
    assert errors[1] < errors[0] / 10, errors
    assert steps[0] < steps[1] < 400, steps


def test_rejected_steps_are_redone_smaller_and_are_no_error():
    """A first step far too long for the tolerance is rejected (not an error), redone on a
    lower rung, and the run still meets the tolerance; the rung set-ups are counted."""
    sim, history = simulate(cosine_config(1e-6, dt=0.5, t_end=1.0))
    try:
        stepper = sim.stepper
        assert stepper.rejected >= 1
        assert stepper.accepted == sim.step_index
        assert history[1].t < 0.5  # the first accepted step is shorter than the first try
        assert semi_discrete_error(sim) < 1e-5
        # Every step is a rung dt·2^k, but the last, which ends the run at t_end.
        dts = np.diff([d.t for d in history])[:-1]
        k = np.log2(dts / 0.5)
        assert np.allclose(k, np.round(k), atol=1e-9)
        # Set-ups: one per rung tried (the rejected ones on the way down included) and the
        # last step's two, not one per step.
        assert sim.guard.setups == stepper.setups
        assert stepper.setups <= 12 < sim.step_index / 4, (stepper.setups, sim.step_index)
    finally:
        sim.destroy()


def test_a_step_rejected_at_dt_min_is_a_solver_error_on_every_rank():
    sim = Simulation(settings_from_dict(cosine_config(1e-12, dt=0.1, dt_min=0.05)))
    try:
        start = sim.state.array_r.copy()
        with pytest.raises(SolverError, match="rejected at time.dt_min"):
            sim.advance()
        assert np.array_equal(sim.state.array_r, start)  # the last good state is kept
    finally:
        sim.destroy()


def test_the_dt_column_is_appended_and_summary_counts_setups(shared_tmp):
    out = shared_tmp / "run"
    result = run(settings_from_dict(cosine_config(1e-4, t_end=0.5)), out_dir=out, quiet=True,
                 comm=MPI.COMM_WORLD)
    data = read_diagnostics(out / "diagnostics.csv")
    with open(out / "diagnostics.csv") as f:
        header = f.readline().strip().split(",")
    assert header[-1] == "dt" and header[:3] == ["step", "t", "mass"]
    assert np.allclose(np.cumsum(data["dt"]), data["t"], rtol=1e-12, atol=1e-14)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver_setups"] >= 2
    assert summary["adaptive"]["accepted_steps"] == summary["steps"] == result.final.step
    assert summary["t_end"] == 0.5


def test_resume_in_the_middle_of_an_adaptive_run_is_bit_for_bit(shared_tmp):
    """A run stopped after its checkpoint at step 10 and resumed ends with the same state,
    the same steps and the same CSV rows as the uninterrupted run (serially: bit for bit)."""
    comm = MPI.COMM_WORLD
    base = shared_tmp / "resume"
    data = cosine_config(1e-4, t_end=1.0)
    data["output"] = {"fields_every": 5, "checkpoint_every": 10}
    whole = run(settings_from_dict(data), out_dir=f"{base}-whole", quiet=True, comm=comm)
    cut = f"{base}-cut"
    cut_run(data, f"{base}-whole", cut, steps=10)
    rows = np.loadtxt(f"{base}-whole/diagnostics.csv", delimiter=",", skiprows=1)
    resumed = run(settings_from_dict(data), resume=cut, quiet=True, comm=comm)
    again = np.loadtxt(f"{cut}/diagnostics.csv", delimiter=",", skiprows=1)
    assert again.shape == rows.shape
    assert resumed.summary["steps"] == whole.summary["steps"]
    a = np.load(f"{base}-whole/final.npz")["rho"]
    b = np.load(f"{cut}/final.npz")["rho"]
    if comm.size == 1:
        assert np.array_equal(a, b)
        assert np.array_equal(again[:, 1], rows[:, 1])  # the times, bit for bit
    else:
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
        assert np.allclose(again[:, 1], rows[:, 1], rtol=1e-10)


def gibbs_config(**time) -> dict:
    return make_config(
        mesh={"shape": "interval", "cells": [24], "lower": [-1.0], "upper": [1.0]},
        graph={"kind": "path", "n": 3},
        model={"coupling": "gibbs", "beta": 0.5, "potential": "(x[0] - 0.3*g)**2",
               "initial": "1 + 0.25*cos(pi*x[0])*(g + 1)"},
        time={"scheme": "implicit-euler", "dt": 0.01, **time},
    )


@pytest.mark.parametrize("adaptive", [True, False])
def test_run_until_equilibrium_stops_below_the_tolerance(shared_tmp, adaptive):
    # H of the discrete stationary state is 1e-5 on this mesh (the space error): the
    # tolerance lies above it.
    time = {"t_end": "equilibrium", "t_max": 200.0, "equilibrium_tolerance": 1e-4}
    if adaptive:
        time.update(adaptive=True, tolerance=1e-4)
    else:
        time.update(dt=0.5)
    out = shared_tmp / "eq"
    result = run(settings_from_dict(gibbs_config(**time)), out_dir=out, quiet=True,
                 comm=MPI.COMM_WORLD, keep_history=True)
    h = [d.rel_entropy for d in result.history]
    assert h[-1] < 1e-4 <= h[-2]
    assert result.final.t < 200.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["equilibrium"]["reached"] is True
    m = summary["milestones"]
    e = m["entropy_times"]
    assert e["0.01"] < e["0.0001"] == result.final.t and e["1e-06"] is None
    # The first time H < 1e-4, read back from the history.
    assert e["0.0001"] == next(d.t for d in result.history if d.rel_entropy < 1e-4)
    s = m["share_times"]
    assert all(v is not None for v in s.values())


def test_equilibrium_not_reached_by_t_max_ends_with_status_0_and_says_so(shared_tmp, capsys):
    time = {"t_end": "equilibrium", "t_max": 0.05, "equilibrium_tolerance": 1e-12}
    out = shared_tmp / "tmax"
    result = run(settings_from_dict(gibbs_config(**time)), out_dir=out, comm=MPI.COMM_WORLD)
    assert result.final.t == pytest.approx(0.05)
    assert result.summary["equilibrium"]["reached"] is False
    if MPI.COMM_WORLD.rank == 0:
        assert "not reached by t_max = 0.05" in capsys.readouterr().out


REFUSED = [
    ({"adaptive": True, "dt_min": 0.1, "dt_max": 0.01}, "dt_min = 0.1 is larger than"),
    ({"adaptive": True, "tolerance": 0.0}, "time.tolerance = 0.0: must be > 0"),
    ({"adaptive": True, "tolerance": -1e-3}, "time.tolerance = -0.001: must be > 0"),
    ({"adaptive": True, "tolerance": float("nan")}, "time.tolerance"),
    ({"adaptive": "yes"}, "time.adaptive = 'yes': expected true or false"),
    ({"adaptive": True, "dt": 1.0, "dt_max": 0.1}, "time.dt = 1 .the first adaptive step"),
    ({"dt_min": 1e-3}, "time.dt_min is only used with time.adaptive = true"),
    ({"t_end": "equilibrium"}, "needs time.t_max"),
    ({"t_end": "forever"}, "expected a number or 'equilibrium'"),
    ({"t_end": "equilibrium", "t_max": -1.0}, "time.t_max = -1.0: must be > 0"),
    ({"t_max": 3.0}, "time.t_max is only used with time.t_end = 'equilibrium'"),
    ({"t_end": "equilibrium", "t_max": 1.0, "equilibrium_tolerance": 0.0},
     "time.equilibrium_tolerance"),
    ({"adaptive": True, "scheme": "bdf2"}, "needs a one-step scheme"),
    ({"adaptive": True, "scheme": "accelerated"}, "needs a one-step scheme"),
    ({"dt_max": 1.0}, "time.dt_max is only used with time.adaptive = true"),
    ({"adaptive": True, "dt": 1e-9, "dt_min": 1e-6}, "time.dt = 1e-09 .the first adaptive"),
    ({"adaptive": True, "dt_min": -1e-3}, "time.dt_min = -0.001: must be > 0"),
    ({"adaptive": True, "dt_max": float("nan")}, "time.dt_max = nan: must be finite"),
    ({"t_end": "equilibrium", "t_max": float("inf")}, "time.t_max = inf: must be finite"),
    ({"t_end": "equilibrium", "t_max": 1.0, "equilibrium_tolerance": float("nan")},
     "time.equilibrium_tolerance = nan: must be finite"),
]


@pytest.mark.parametrize(("time", "message"), REFUSED)
def test_refused_time_settings(time, message):
    with pytest.raises(InputError, match=message):
        settings_from_dict(make_config(time=time))


@pytest.mark.parametrize(("overrides", "message"), [
    (["time.adaptive=true", "time.tolerance=0"], "time.tolerance = 0"),
    (["time.adaptive=true", "time.dt_min=0.1", "time.dt_max=0.01"], "is larger than"),
    (["time.t_end='equilibrium'"], "needs time.t_max"),
])
def test_refused_time_settings_exit_2_on_the_command_line(shared_tmp, capsys, overrides,
                                                         message):
    out = shared_tmp / "refused"
    args = ["run", "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert_refused(capsys, args, message, out)


def test_adaptive_run_over_a_barrier_takes_long_steps_and_keeps_the_mass():
    """Six tilted double wells (the benchmark's problem on a coarser mesh): the winner's Gibbs
    mass lies across a barrier crossed at a rate of 0.01. The controller grows the step
    from 1e-3 to hundreds of time units, the run stops at equilibrium in few steps, and
    the total mass stays to 1e-13 (9e-12 before each step restored it)."""
    wells = ["0.4*(x[0]**2 - 1)**2 - 0.1*x[0]",
             *(f"0.4*(x[0]**2 - 1)**2 + 0.08*x[0] + {0.17 + 0.05 * g:.2f}" for g in range(1, 6))]
    data = make_config(
        mesh={"shape": "interval", "cells": [100], "lower": [-2.0], "upper": [2.0]},
        graph={"kind": "path", "n": 6},
        model={"coupling": "gibbs", "beta": 0.1, "potentials": wells,
               "initial": "exp(-(x[0] + 1)**2 / 0.05)"},
        time={"scheme": "implicit-euler", "dt": 1e-3, "adaptive": True, "tolerance": 1e-3,
              "t_end": "equilibrium", "t_max": 5000.0, "equilibrium_tolerance": 1e-4},
    )
    sim, history = simulate(data)
    try:
        masses = np.array([d.vertex_masses for d in history])
        total = masses.sum(axis=1)
        assert np.abs(total - total[0]).max() <= 1e-13 * total[0]
        gibbs = sim.model.gibbs_masses(masses[0])
        assert np.argmax(gibbs) == 0 and gibbs[0] > 0.8 * total[0]
        assert masses[-1, 0] > 0.99 * gibbs[0]  # H < 1e-4: the winner holds its share
        # The barrier is slow: at t = 40 the winner is still far from it.
        at_40 = next(m for d, m in zip(history, masses, strict=True) if d.t >= 40)
        assert at_40[0] < 0.75 * gibbs[0]
        assert 200 < sim.t < 1000
        dts = np.diff([d.t for d in history])
        assert dts.max() > 50 and sim.step_index < 80, (dts.max(), sim.step_index)
    finally:
        sim.destroy()


def test_adaptive_stepper_builds_rungs_from_the_schemes_stepper():
    sim = Simulation(settings_from_dict(cosine_config(1e-4, t_end=0.5)))
    try:
        assert isinstance(sim.stepper.base, TimeStepper)
        sim.run()
        stats = sim.guard.solver_stats()
        assert stats["accepted_steps"] == sim.step_index
        assert stats["linear_iterations"] > 0
    finally:
        sim.destroy()
