"""Temperature schedules (annealing): ``model.beta`` as an expression in t or a table.

Every test runs serially and under ``mpiexec -n 2`` (the meshes are distributed).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import assert_refused, cut_run, make_config

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import load_settings, settings_from_dict
from rdgraph.problem.schedule import BetaSchedule
from rdgraph.problem.validation import check_schedule
from rdgraph.simulation import Simulation, run
from rdgraph.timestepping import linear

CELLS, WEIGHT = 40, 0.7


def cosine_config(beta, scheme: str = "implicit-euler", t_end: float = 1.0,
                  dt: float = 0.05) -> dict:
    """V = 0, laplacian on a path of 2 vertices: the mode (1, −1) ⊗ cos(πx) decays at the rate
    ``λ(t) = β(t) μ_h + 2w``, every scheme's step a scalar recursion (``mode_decay``)."""
    return make_config(
        mesh={"shape": "interval", "cells": [CELLS], "lower": [0.0], "upper": [1.0]},
        graph={"kind": "path", "n": 2, "weight": WEIGHT},
        model={"coupling": "laplacian", "beta": beta,
               "initials": ["1 + 0.5*cos(pi*x[0])", "1 - 0.5*cos(pi*x[0])"]},
        time={"scheme": scheme, "dt": dt, "t_end": t_end},
        output={"fields_every": 0, "checkpoint_every": 0, "plots": False},
    )


def mode_amplitude(sim: Simulation) -> np.ndarray:
    """The cos(πx) amplitude of each vertex's density (exact for a pure mode)."""
    x = sim.model.V.tabulate_dof_coordinates()[: sim.model.num_owned, 0]
    blocks = sim.nodal_values()
    # ρ_g − 1 = a_g cos(πx) at every node: least squares over all nodes of all ranks.
    c = np.cos(np.pi * x)
    local = np.array([float((b - 1.0) @ c) for b in blocks] + [float(c @ c)])
    total = np.empty_like(local)
    MPI.COMM_WORLD.Allreduce(local, total, op=MPI.SUM)
    return total[:-1] / total[-1]


def largest_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a − b| / max |b|`` over every rank (the same on all: asserts stay collective)."""
    local = np.array([float(np.abs(a - b).max(initial=0.0)), float(np.abs(b).max(initial=0.0))])
    total = np.empty_like(local)
    MPI.COMM_WORLD.Allreduce(local, total, op=MPI.MAX)
    difference, scale = total
    return difference / scale


def mu_h(cells: int = CELLS) -> float:
    """The eigenvalue of M⁻¹K for the nodal cos(πx) on a uniform P1 mesh (consistent mass)."""
    h = 1.0 / cells
    c = math.cos(math.pi * h)
    return 6 * (1 - c) / (h**2 * (2 + c))


def gibbs_toy(beta, cells: int = 8, **time) -> dict:
    """The built-in toy (8 architectures, gibbs) on a coarse mesh."""
    data = {
        "mesh": {"cells": [cells, cells]},
        "model": {"beta": beta},
        "time": {"dt": 0.1, "t_end": 1.0, **time},
        "output": {"fields_every": 0, "checkpoint_every": 0, "plots": False},
    }
    settings = load_settings(None, [f"{s}.{k}={json.dumps(v)}" for s, d in data.items()
                                    for k, v in d.items()])
    return settings


# -- the schedule itself ------------------------------------------------------------------


def test_a_table_is_geometric_between_its_points_and_constant_beyond():
    b = BetaSchedule([[1.0, 0.4], [3.0, 0.1]])
    assert b(0.0) == 0.4 and b(1.0) == 0.4 and b(3.0) == 0.1 and b(10.0) == 0.1
    assert b(2.0) == pytest.approx(math.sqrt(0.4 * 0.1), rel=1e-14)  # the geometric mean
    assert b.values(np.array([1.5]))[0] == pytest.approx(0.4 * 0.25**0.25, rel=1e-14)
    flat = BetaSchedule([[0, 0.05], [1, 0.05], [2, 0.2]])
    assert all(flat(t) == 0.05 for t in np.linspace(0, 1, 11))  # exactly, not exp(log β)
    assert not BetaSchedule([[0, 0.3]]).varies and BetaSchedule([[0, 0.3]])(5.0) == 0.3
    e = BetaSchedule("0.5*exp(-t/20) + 0.02")
    assert e.varies and e(20.0) == pytest.approx(0.5 / math.e + 0.02, rel=1e-14)


# -- which β a step uses ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson", "bdf2"])
def test_each_scheme_takes_beta_where_its_recursion_says(scheme):
    """The cosine mode's amplitude against its scalar recursion computed by hand:
    implicit Euler and BDF2 take ``λ(t_{n+1})``, Crank–Nicolson ``λ(t_n)`` on the right and
    ``λ(t_{n+1})`` on the left. The schedule moves β by more and by less than the set-up
    ratio per step, so both new set-ups and reused ones are exercised."""
    expression = "0.02 + 0.03*exp(-3*t)"
    beta = BetaSchedule(expression)
    dt, steps = 0.05, 20
    sim = Simulation(settings_from_dict(cosine_config(expression, scheme, t_end=dt * steps,
                                                      dt=dt)))
    try:
        rate = [beta(n * dt) * mu_h() + 2 * WEIGHT for n in range(steps + 1)]
        a = [0.5]
        previous = None
        for n in range(steps):
            sim.advance()
            if scheme == "implicit-euler" or (scheme == "bdf2" and previous is None):
                following = a[-1] / (1 + dt * rate[n + 1])
            elif scheme == "crank-nicolson":
                following = a[-1] * (1 - 0.5 * dt * rate[n]) / (1 + 0.5 * dt * rate[n + 1])
            else:  # 3/2 a^{n+1} + τ λ a^{n+1} = 2 a^n − a^{n−1}/2
                following = (2 * a[-1] - 0.5 * previous) / (1.5 + dt * rate[n + 1])
            previous = a[-1]
            a.append(following)
            amplitude = mode_amplitude(sim)
            assert amplitude[0] == pytest.approx(a[-1], rel=1e-9, abs=1e-12)
            assert amplitude[1] == pytest.approx(-a[-1], rel=1e-9, abs=1e-12)
        assert sim.stepper.setups >= 2  # β fell by a factor 2.4: set up again on the way
    finally:
        sim.destroy()


def test_a_constant_stretch_of_a_schedule_is_the_constant_run_bit_for_bit():
    """On ``[0, 0.5]`` the table is flat at β = 0.05: the same steps as at model.beta = 0.05,
    bit for bit serially (on 2 ranks two MUMPS factorizations of one matrix already differ
    in the last bits)."""
    serial = MPI.COMM_WORLD.size == 1
    table = [[0.0, 0.05], [0.5, 0.05], [1.0, 0.2]]
    scheduled = Simulation(gibbs_toy(table))
    constant = Simulation(gibbs_toy(0.05))
    try:
        for _ in range(5):
            scheduled.advance()
            constant.advance()
            difference = largest_difference(scheduled.nodal_values(), constant.nodal_values())
            a, b = scheduled.diagnostics(), constant.diagnostics()
            if serial:
                assert difference == 0.0
                assert a.free_energy == b.free_energy and a.rel_entropy == b.rel_entropy
            else:
                assert difference < 1e-13
                assert a.rel_entropy == pytest.approx(b.rel_entropy, rel=1e-12)
        assert scheduled.t == 0.5
    finally:
        scheduled.destroy()
        constant.destroy()


def test_a_step_down_in_beta_is_a_run_restarted_by_hand_at_the_new_beta():
    """β = 0.3 up to t = 0.5, then 0.1: the run at 0.3 to t = 0.5, continued by a new run at
    model.beta = 0.1 from its state (operators assembled afresh at 0.1), to round-off."""
    table = [[0.0, 0.3], [0.5, 0.3], [0.55, 0.1]]
    scheduled = Simulation(gibbs_toy(table))
    first, second = Simulation(gibbs_toy(0.3)), Simulation(gibbs_toy(0.1))
    try:
        scheduled.run()
        for _ in range(5):
            first.advance()
        second.nodal_values()[:] = first.nodal_values()
        for _ in range(5):
            second.advance()
        assert largest_difference(scheduled.nodal_values(), second.nodal_values()) < 1e-10
        # H and F refer to the Gibbs state at the current β: that of the run at 0.1.
        da, db = scheduled.diagnostics(), second.diagnostics()
        assert da.rel_entropy == pytest.approx(db.rel_entropy, rel=1e-9)
        assert da.free_energy == pytest.approx(db.free_energy, rel=1e-9)
        assert np.allclose(scheduled.model.gibbs_fractions, second.model.gibbs_fractions,
                           rtol=1e-12)
    finally:
        for sim in (scheduled, first, second):
            sim.destroy()


@pytest.mark.parametrize("gibbs_coupling", ["per-edge", "quadrature", "nodal"])
def test_operators_at_a_new_beta_equal_operators_assembled_there(gibbs_coupling):
    """``set_beta`` (β S added to stored arrays, gibbs rates made again) against operators
    assembled at that β, for every form of the gibbs coupling, both matrix kinds."""
    extra = ({"model.gibbs_rates": "nodal"} if gibbs_coupling == "nodal"
             else {"solver.gibbs_coupling": gibbs_coupling})
    def settings(beta):
        s = gibbs_toy(beta)
        for key, value in extra.items():
            section, name = key.split(".")
            data = s.to_dict()
            data[section][name] = value
            s = settings_from_dict(data)
        return s

    moved = Simulation(settings([[0, 0.4], [1, 0.08]]))
    fresh = Simulation(settings(0.08))
    try:
        moved.operators.set_beta(0.08)
        A, B = moved.operators.matrix(1.0, 0.1), fresh.operators.matrix(1.0, 0.1)
        S, T = moved.operators.shell(1.0, 0.1), fresh.operators.shell(1.0, 0.1)
        x, y = A.createVecs()
        x.setRandom()
        z = y.duplicate()
        for first, second in ((A, B), (S, T)):
            first.mult(x, y)
            second.mult(x, z)
            z.axpy(-1.0, y)
            assert z.norm() <= 1e-12 * y.norm()
        for obj in (A, B, S, T, x, y, z):
            obj.destroy()
    finally:
        moved.destroy()
        fresh.destroy()


def test_a_reused_setup_solves_the_current_operator():
    """Between set-ups the old factorization preconditions FGMRES on the current operator:
    the same states as a run that sets up at every change of β."""
    table = [[0.0, 0.1005], [1.0, 0.1]]  # an operator change below the set-up ratio in all
    reused = Simulation(gibbs_toy(table))
    ratio = linear.BETA_SETUP_RATIO
    linear.BETA_SETUP_RATIO = 1.0 + 1e-15  # a new set-up at every step
    try:
        rebuilt = Simulation(gibbs_toy(table))
    finally:
        linear.BETA_SETUP_RATIO = ratio
    try:
        reused.run()
        linear.BETA_SETUP_RATIO = 1.0 + 1e-15
        try:
            rebuilt.run()
        finally:
            linear.BETA_SETUP_RATIO = ratio
        assert reused.operators.change_factor(0.1, 0.1005) < linear.BETA_SETUP_RATIO
        assert reused.stepper.setups == 1 and rebuilt.stepper.setups == 11
        assert largest_difference(reused.nodal_values(), rebuilt.nodal_values()) < 1e-9
        masses = reused.recorder.vertex_masses(reused.state)
        assert abs(masses.sum() - 1.0) < 1e-12
    finally:
        reused.destroy()
        rebuilt.destroy()


# -- outputs ---------------------------------------------------------------------------


def test_the_beta_column_and_summary_of_a_scheduled_adaptive_run(shared_tmp):
    out = shared_tmp / "anneal"
    expression = "0.05*exp(-t) + 0.02"
    data = cosine_config(expression, t_end=0.5)
    data["time"].update(adaptive=True, tolerance=1e-4, dt=0.01)
    result = run(settings_from_dict(data), out_dir=out, quiet=True, comm=MPI.COMM_WORLD)
    with open(out / "diagnostics.csv") as f:
        header = f.readline().strip().split(",")
    rows = np.loadtxt(out / "diagnostics.csv", delimiter=",", skiprows=1)
    assert header[:3] == ["step", "t", "mass"] and header[-2:] == ["dt", "beta"]
    assert np.allclose(rows[:, -1], BetaSchedule(expression).values(rows[:, 1]), rtol=1e-15)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["beta"] == pytest.approx(0.05 * math.exp(-0.5) + 0.02, rel=1e-15)
    assert summary["beta_schedule"]["schedule"] == expression
    assert summary["beta_schedule"]["initial"] == pytest.approx(0.07)
    assert result.final.t == 0.5
    constant = run(settings_from_dict(cosine_config(0.05, t_end=0.1)), out_dir=out,
                   overwrite=True, quiet=True, comm=MPI.COMM_WORLD)
    assert constant.summary["beta"] == 0.05 and "beta_schedule" not in constant.summary
    with open(out / "diagnostics.csv") as f:
        assert "beta" not in f.readline()


def test_resume_in_the_middle_of_a_schedule(shared_tmp):
    """Stopped at the checkpoint of step 4 and resumed: β is a function of t, so the run goes
    on at the right β (the resumed run sets its solver up afresh, the whole one reuses an
    older set-up: the same states to the solver's tolerance)."""
    comm = MPI.COMM_WORLD
    base = shared_tmp / "resume"
    data = cosine_config("0.02 + 0.03*exp(-3*t)", t_end=0.5)
    data["output"].update(checkpoint_every=4)
    run(settings_from_dict(data), out_dir=f"{base}-whole", quiet=True, comm=comm)
    cut = f"{base}-cut"
    cut_run(data, f"{base}-whole", cut, steps=4)
    run(settings_from_dict(data), resume=cut, quiet=True, comm=comm)
    rows = np.loadtxt(f"{base}-whole/diagnostics.csv", delimiter=",", skiprows=1)
    again = np.loadtxt(f"{cut}/diagnostics.csv", delimiter=",", skiprows=1)
    assert again.shape == rows.shape
    assert np.array_equal(again[:, -1], rows[:, -1])  # the beta column
    assert np.allclose(again, rows, rtol=1e-9, atol=1e-12)
    a = np.load(f"{base}-whole/final.npz")["rho"]
    b = np.load(f"{cut}/final.npz")["rho"]
    assert np.allclose(a, b, rtol=1e-10, atol=1e-12)


# -- refused input ---------------------------------------------------------------------


REFUSED = [
    ({"beta": "0.5 - t"}, {}, r"is 0 at t = 0\.5: beta must be a positive finite number on "
                              r"all of \[0, time\.t_end\] = \[0, 1\]"),
    ({"beta": "0.1*cos(t)"}, {"t_end": 2.0}, r"is -.* at t = .*: beta must be a positive"),
    ({"beta": "log(t - 0.5)"}, {}, r"is nan at t = 0: beta must be"),
    ({"beta": "1/(t - 0.25)"}, {}, r"model\.beta = '1/\(t - 0.25\)' is -4 at t = 0"),
    ({"beta": "0.2 - 0.001*t"}, {"t_end": "equilibrium", "t_max": 300.0},
     r"on all of \[0, time\.t_max\] = \[0, 300\]"),
    ({"beta": "0.3 + x[0]"}, {}, r"model\.beta '0\.3 \+ x\[0\]': 'x' is not allowed here "
                                 r"\(allowed: t\)"),
    ({"beta": "0.3 + g*t"}, {}, r"'g' is not allowed here"),
    ({"beta": []}, {}, r"model\.beta = \[\]: a table needs at least one \[t, beta\] point"),
    ({"beta": [[0, 0.5], [2, 0.1], [1, 0.05]]}, {},
     r"the table's times must increase strictly, but t = 1 follows t = 2"),
    ({"beta": [[0, 0.5], [0, 0.1]]}, {}, r"t = 0 follows t = 0"),
    ({"beta": [[0, 0.5], [1, -0.1]]}, {},
     r"table point \[1, -0\.1\]: beta must be a finite number > 0"),
    ({"beta": [[0, 0.5], [1, 0.0]]}, {}, r"beta must be a finite number > 0"),
    ({"beta": [[0, float("nan")]]}, {}, r"table point \[0, nan\]: beta must be a finite"),
    ({"beta": [[0, 0.5, 1]]}, {}, r"table point \[0, 0\.5, 1\] is not a pair"),
    ({"beta": 0.0}, {}, r"model\.beta = 0\.0: must be > 0"),
    ({"beta": float("nan")}, {}, r"model\.beta = nan: must be finite"),
    ({"beta": True}, {}, r"expected a number, an expression in t or a table"),
    ({"beta": "0.3*exp(-t)", "coupling": "upwind"}, {}, r"schedules take the linear schemes"),
    ({"beta": "0.3*exp(-t)"}, {"scheme": "jko"}, r"not time\.scheme = 'jko'"),
    ({"beta": "0.3*exp(-t)"}, {"scheme": "accelerated"}, r"not time\.scheme = 'accelerated'"),
]


def test_particles_refuse_a_schedule():
    from rdgraph.particles.sampler import ParticleProblem

    with pytest.raises(InputError, match=r"particle sampler takes model\.beta as a number"):
        ParticleProblem.from_settings(settings_from_dict(make_config(
            mesh={"shape": "rectangle", "cells": [8, 8]}, model={"beta": "0.3*exp(-t)"})))


@pytest.mark.parametrize(("model", "time", "message"), REFUSED)
def test_refused_schedules(model, time, message):
    with pytest.raises(InputError, match=message):
        # The schema's checks, then the schedule's (before any collective operation).
        check_schedule(settings_from_dict(make_config(model=model,
                                                      time={"dt": 0.1, "t_end": 1.0, **time})))


def test_a_refused_schedule_exits_with_status_2(shared_tmp, capsys):
    out = shared_tmp / "refused"
    assert_refused(capsys, ["run", "--out", str(out), "--set", "model.beta=0.5*exp(-t/20) - 0.1",
                            "--set", "time.t_end=50", "--set", "time.dt=0.5"],
                   "model.beta = '0.5*exp(-t/20) - 0.1' is", out)


def test_a_reused_setup_that_fails_is_replaced_by_a_new_one():
    """An FGMRES limit too low for the reused set-up: each such solve is set up again at its
    β and solved directly, so the run goes on (the same states) with more set-ups."""
    table = [[0.0, 0.1005], [1.0, 0.1]]
    reference = Simulation(gibbs_toy(table))
    data = gibbs_toy(table).to_dict()
    data["solver"]["max_it"] = 1  # no reused solve converges at rtol 1e-12 in one iteration
    limited = Simulation(settings_from_dict(data))
    try:
        reference.run()
        limited.run()
        assert limited.stepper.setups == 11  # one at the start, one per step
        assert largest_difference(limited.nodal_values(), reference.nodal_values()) < 1e-9
    finally:
        reference.destroy()
        limited.destroy()


def test_info_reports_the_schedule():
    from rdgraph.info import describe, format_info

    settings = gibbs_toy([[0.0, 0.5], [40.0, 0.02]], t_end=20.0, dt=0.5)
    text = format_info(describe(settings))
    assert ("temperature schedule: beta = [[0.0, 0.5], [40.0, 0.02]], from 0.5, between 0.1 "
            "and 0.5 over the run") in text
    assert "temperature: beta = 0.1" in format_info(describe(gibbs_toy(0.1)))


def test_crank_nicolson_with_the_quadrature_coupling_takes_both_ends_betas():
    """The quadrature gibbs coupling is applied from the operators' current state, not
    copied: Crank–Nicolson's right side must still see β(t_n). Against per-edge matrices."""
    runs = []
    for storage in ("quadrature", "per-edge"):
        data = gibbs_toy("0.3*exp(-t) + 0.05", scheme="crank-nicolson").to_dict()
        data["solver"]["gibbs_coupling"] = storage
        sim = Simulation(settings_from_dict(data))
        for _ in range(4):
            sim.advance()
        runs.append(sim)
    try:
        assert runs[0].operators.quadrature_coupling is not None
        assert runs[1].operators.quadrature_coupling is None
        assert largest_difference(runs[0].nodal_values(), runs[1].nodal_values()) < 1e-10
    finally:
        for sim in runs:
            sim.destroy()
