"""``scripts/compare_dynamics.py``: the comparison of the three dynamics on the NAS toy.

The script runs in this process (it is MPI-aware), so the tests run serially and on 2 ranks,
but the node ODE's, which has no MPI in it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import load_module, serial_only

from rdgraph.compat import MPI

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_dynamics.py"


@pytest.fixture(scope="module")
def script():
    return load_module(SCRIPT)


def test_lumped_gap_vanishes_at_the_discrete_gibbs_state(script):
    """F_h − min F_h is 0 at ρ_g = M exp(−V_g/β)/Z_h and positive at the uniform start."""
    sim = script.Simulation(script.settings_for("gradient flow", 8, 0.05, 0.05), MPI.COMM_WORLD)
    try:
        energy = script.LumpedEnergy(sim)
        mass, gap = energy.gap()
        assert mass == pytest.approx(1.0, rel=1e-12)
        assert gap > 0.1
        assert energy.fractions.sum() == pytest.approx(1.0)
        assert int(np.argmax(energy.fractions)) == script.BEST
        owned = sim.model.num_owned
        for g, rho in enumerate(sim.nodal_values()):
            v = sim.model.potential_nodal(g)[:owned]
            rho[:] = 0.5 * np.exp(-v / energy.beta - energy.log_z)
        mass, gap = energy.gap()
        assert mass == pytest.approx(0.5, rel=1e-12)
        assert abs(gap) < 1e-12
    finally:
        sim.destroy()


@serial_only  # scipy on one process: no MPI in it
def test_node_ode_vacuum(script):
    """The two-vertex node reaches vacuum for the toy's gap, not for a small one."""
    common = {"beta": 0.1, "weight": 2.0, "rho0": 1 / 128}
    gibbs = script.node_ode(2.83, mobility="gibbs", damping="nesterov", **common)
    logmean = script.node_ode(2.83, mobility="laplacian", damping="nesterov", **common)
    assert gibbs is not None and logmean is not None
    assert gibbs < 0.01 < logmean < 1.0  # the gibbs mobility is e^{δ/2}/δ times larger
    assert script.node_ode(0.3, mobility="laplacian", damping="nesterov", **common) is None


def test_quick_comparison_on_every_rank(script, shared_tmp, monkeypatch):
    """The script's own parallel parts: runs on the mesh distributed over the ranks, the node
    ODE's table made on rank 0 and sent to all, the outputs written once. One run, and a
    stand-in for the node ODE (the full comparison below checks the numbers, serially)."""
    out = shared_tmp / "dynamics"
    monkeypatch.setattr(script, "NODE_BETAS", ())
    monkeypatch.setattr(script, "node_ode", lambda *args, **kwargs: 0.25)
    argv = ["--quick", "--no-trials", "--t-end", "12", "--out", str(out),
            "--only", "gradient flow"]
    assert script.main(argv) == 0
    MPI.COMM_WORLD.Barrier()
    data = json.loads((out / "dynamics.json").read_text())
    assert data["meta"]["ranks"] == MPI.COMM_WORLD.size
    assert [row["time"] for row in data["node_ode"]["vacuum"]] == [0.25] * 6
    flow = data["runs"]["gradient flow"]
    assert flow["failure"] is None and flow["reached"] == pytest.approx(12.0)
    assert flow["concentration_time"] == pytest.approx(9.7)
    assert f"| {flow['concentration_time']:g} |" in (out / "dynamics.md").read_text()


@serial_only  # the dynamics' own parallel paths are tested above and in their own files
def test_quick_comparison_outputs(script, shared_tmp, monkeypatch):
    out = shared_tmp / "dynamics"
    runs = ["gradient flow", "JKO", "accelerated, gamma = 1, log-mean"]
    # The node ODE's table at the toy's β only: the hotter toys' rows take the same code
    # path and most of the time (each vacuum time is some 2000 Radau steps).
    monkeypatch.setattr(script, "NODE_BETAS", ())
    argv = ["--quick", "--no-trials", "--t-end", "12", "--out", str(out)]
    for name in runs:
        argv += ["--only", name]
    assert script.main(argv) == 0
    MPI.COMM_WORLD.Barrier()
    data = json.loads((out / "dynamics.json").read_text())
    assert (out / "dynamics.png").stat().st_size > 0
    table = (out / "dynamics.md").read_text()
    assert data["meta"]["ranks"] == MPI.COMM_WORLD.size
    assert list(data["runs"]) == runs

    flow, jko, acc = (data["runs"][name] for name in runs)
    for run in (flow, jko):
        assert run["failure"] is None and run["reached"] == pytest.approx(12.0)
        hit = run["concentration_time"]
        assert hit is not None and 0 < hit <= 12.0
        # Where the target is first met, and not one step earlier.
        series = run["series"]
        k = series["t"].index(hit)
        assert series["mass_best"][k] >= run["target_mass"] > series["mass_best"][k - 1]
        assert f"| {hit:g} |" in table
        assert all(math.isfinite(v) for v in series["gap"])
    # JKO keeps ρ > 0, so Gibbs' inequality makes its lumped gap nonnegative.
    assert min(jko["series"]["min_density"]) > 0
    assert min(jko["series"]["gap"]) >= -1e-12
    assert jko["series"]["gap"][-1] < 0.01 * jko["series"]["gap"][0]

    # The accelerated flow with the log-mean mobility stops at a Newton failure, early, and
    # no later than the node ODE's vacuum time for its damping.
    assert acc["failure"] is not None and "did not converge" in acc["failure"]
    assert acc["concentration_time"] is None and 0 < acc["reached"] < 1.0
    vacuum = {(row["beta"], row["mobility"], row["damping"]): row["time"]
              for row in data["node_ode"]["vacuum"]}
    assert acc["reached"] <= vacuum[(0.1, "log-mean", "1.0")]
    assert data["node_ode"]["dV"] == pytest.approx(2 * math.sqrt(2), rel=1e-3)
    assert "solver failure" in table


def test_accelerated_gibbs_fails_where_the_node_ode_reaches_vacuum(script):
    """The gibbs accelerated flow on the toy dies in the step that holds the vacuum time.

    The smallest log-density before the failure sits where the node ODE says (architecture 1
    at the corner (-2, -2)) and is near the ODE's value: the failure is the flow's, not
    Newton's.
    """
    settings = script.settings_for("accelerated, 3/t + restart, gibbs", 8, 1e-3, 0.01)
    settings.time.restart = False
    sim = script.Simulation(settings, MPI.COMM_WORLD)
    try:
        with pytest.raises(script.SolverError, match="did not converge"):
            for _ in range(10):
                sim.advance()
        reached = sim.t
        low = script.smallest_log_density(sim)
    finally:
        sim.destroy()
    node = {"beta": 0.1, "weight": 2.0, "rho0": 1 / 128}
    vacuum, (u1, u2) = script.node_ode(2 * math.sqrt(2), mobility="gibbs", damping="nesterov",
                                       at=reached, **node)
    assert reached < vacuum < reached + 1e-3
    assert low["vertex"] == 1 and low["x"] == pytest.approx([-2.0, -2.0])
    assert low["u"] < math.log(1 / 128) - 5  # far below the start, on the way to vacuum
    assert low["u"] == pytest.approx(u1, abs=0.5)
    assert low["u_all"][5] == pytest.approx(u2, abs=0.05)
