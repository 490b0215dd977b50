"""The end-of-run table and summary.json: step-0 values after a resume, Gibbs masses per
component of a disconnected graph, F_∞ of the Gibbs state, and the messages around them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_config, write_config

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

COMM = MPI.COMM_WORLD
POTENTIAL = "(x[0] - 0.3*g)**2 + 0.2*g"


def _table(text: str) -> dict[int, list[float]]:
    """The rows of the end table: vertex -> [min V, mass(0), mass(T), share, Gibbs mass]
    (the Gibbs share that follows is left out)."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0].isdigit():
            rows[int(fields[0])] = [float(f.rstrip("%")) for f in fields[1:6]]
    return rows


def _free_energy_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("free energy:"))


def test_resumed_run_reports_step_zero(shared_tmp, capsys):
    config = write_config(shared_tmp / "c.toml", make_config(
        model={"coupling": "gibbs", "beta": 0.5, "potential": POTENTIAL,
               "initial": "1 + g*x[0]"},
        time={"dt": 0.02, "t_end": 0.2}, output={"checkpoint_every": 2}))
    full, part = shared_tmp / "full", shared_tmp / "part"
    assert main(["run", config, "--out", str(full)]) == 0
    whole = capsys.readouterr().out
    assert main(["run", config, "--out", str(part), "--quiet", "--set", "time.t_end=0.1"]) == 0
    assert main(["run", config, "--resume", str(part)]) == 0
    resumed = capsys.readouterr().out
    if COMM.rank == 0:
        a, b = _table(whole), _table(resumed)
        assert sorted(a) == [0, 1, 2]
        for g in a:  # mass(0) and the Gibbs masses are those of step 0, not of the resume
            assert b[g][1] == pytest.approx(a[g][1], rel=1e-4)
            assert b[g][4] == pytest.approx(a[g][4], rel=1e-4)
        assert _free_energy_line(resumed).split(",")[0] == _free_energy_line(whole).split(",")[0]
        s, r = (json.loads((d / "summary.json").read_text()) for d in (full, part))
        assert r["resumed_from_step"] == 5
        for key in ("initial_mass", "initial_free_energy", "gibbs_free_energy"):
            assert r[key] == pytest.approx(s[key], rel=1e-9), key


def test_gibbs_free_energy_is_the_limit_of_f(shared_tmp):
    """F(t) − F_∞ = β H(ρ | ρ_π) on a connected graph, and a long run reaches F_∞."""
    beta = 0.5
    config = write_config(shared_tmp / "c.toml", make_config(
        mesh={"shape": "interval", "cells": [32]},
        model={"coupling": "gibbs", "beta": beta, "potential": POTENTIAL, "initial": "1 + g"},
        time={"dt": 0.5, "t_end": 40.0}))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    if COMM.rank == 0:
        summary = json.loads((out / "summary.json").read_text())
        rows = np.loadtxt(out / "diagnostics.csv", delimiter=",", skiprows=1)
        free, entropy = rows[:, 6], rows[:, 7]
        limit = summary["gibbs_free_energy"]
        # The identity, to the mass drift of the direct solver.
        assert np.allclose(free - limit, beta * entropy, rtol=0, atol=1e-10)
        assert np.all(free > limit) and free[0] - limit > 0.1
        # What remains at the end is the space error: the discrete stationary state is not
        # exactly the Gibbs state (H(ρ|ρ_π) stalls at O(h²)).
        assert free[-1] - limit < 1e-6 * (free[0] - limit)


def _disconnected(shared_tmp, **model):
    edges = shared_tmp / "edges.csv"
    if COMM.rank == 0:
        # 0-1-2 and 3-4, and vertex 5 alone: the typo '5,9' of the issue, in small.
        edges.write_text("# n = 6\n0,1,1\n1,2,1\n3,4,1\n")
    COMM.Barrier()
    data = make_config(
        mesh={"shape": "interval", "cells": [16]},
        graph={"kind": "file", "file": str(edges)},
        model={"coupling": "gibbs", "beta": 0.5, "potential": POTENTIAL,
               "initial": "1 + g", **model},
        time={"dt": 0.5, "t_end": 60.0})
    del data["graph"]["n"]
    if data["model"]["potential"] is None:
        del data["model"]["potential"]
    return data


def test_disconnected_graph_warns_and_shares_per_component(shared_tmp, capsys):
    config = write_config(shared_tmp / "c.toml", _disconnected(shared_tmp))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    if COMM.rank == 0:
        assert "not connected: 3 components {0, 1, 2}; {3, 4}; {5}" in captured.err
        summary = json.loads((out / "summary.json").read_text())
        rows = np.loadtxt(out / "diagnostics.csv", delimiter=",", skiprows=1)
        initial, final = rows[0, 3:9], rows[-1, 3:9]
        gibbs = np.array(summary["gibbs_vertex_fractions"]) * summary["initial_mass"]
        for component in ([0, 1, 2], [3, 4], [5]):
            # Each component keeps its mass, and the run reaches the per-component shares.
            assert gibbs[component].sum() == pytest.approx(initial[component].sum(), rel=1e-12)
            assert final[component] == pytest.approx(gibbs[component], rel=1e-3)
        table = _table(captured.out)
        assert [table[g][4] for g in range(6)] == pytest.approx(gibbs, rel=1e-4)
        # F_∞ of the per-component Gibbs state, reached up to the space error.
        excess = summary["final_free_energy"] - summary["gibbs_free_energy"]
        assert 0 < excess < 1e-5 * (summary["initial_free_energy"] - summary["gibbs_free_energy"])


def test_potentials_of_the_wrong_length_name_the_largest_vertex_index(shared_tmp):
    settings = settings_from_dict(_disconnected(
        shared_tmp, potential=None, potentials=["x[0]"] * 5))
    with pytest.raises(InputError, match=r"model.potentials has 5 entries but the graph has 6 "
                       r"vertices \(the largest vertex index in graph.file .* is 4: vertices "
                       r"0..4, and '# n = 6' or graph.n adds vertices\)"):
        Simulation(settings)
    data = make_config(graph={"kind": "edges", "edges": [[0, 1], [1, 7]]},
                       model={"potentials": ["x[0]"] * 3})
    del data["graph"]["n"]
    with pytest.raises(InputError, match=r"has 3 entries but the graph has 8 vertices \(the "
                       r"largest vertex index in graph.edges is 7\)"):
        Simulation(settings_from_dict(data))
