"""The command-line and output contract of ``rdgraph run``."""

from __future__ import annotations

import csv
import json
import tomllib

import numpy as np
import pytest
from conftest import assert_refused, make_config, write_config

from rdgraph.cli import main
from rdgraph.compat import MPI


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_run_writes_the_contract_files(shared_tmp):
    data = make_config(
        graph={"kind": "path", "n": 3, "weight": 2.0},
        model={"coupling": "gibbs", "beta": 0.5, "potential": "(x[0] - 0.1*g)**2",
               "initial": "1 + x[1]"},
        time={"dt": 0.01, "t_end": 0.04},
        output={"fields_every": 2},
    )
    config = write_config(shared_tmp / "case.toml", data)
    out = shared_tmp / "run"
    status = main(["run", config, "--out", str(out), "--set", "time.t_end=0.05", "--quiet"])
    assert status == 0
    header, rows = read_csv(out / "diagnostics.csv")
    assert header == ["step", "t", "mass", "mass_0", "mass_1", "mass_2", "free_energy",
                      "rel_entropy", "min_density", "ksp_iterations"]
    assert rows.shape == (6, len(header))  # steps 0..5: the --set took effect
    assert np.array_equal(rows[:, 0], np.arange(6))
    assert np.allclose(rows[:, 1], 0.01 * np.arange(6))
    assert np.allclose(rows[:, 2], rows[:, 3:6].sum(axis=1))
    final = np.load(out / "final.npz")
    assert final["x"].shape == (81, 3)  # P1 on 8x8: the mesh vertices
    assert final["rho"].shape == (3, 81)
    order = np.lexsort((final["x"][:, 2], final["x"][:, 1], final["x"][:, 0]))
    assert np.array_equal(order, np.arange(81))
    summary = json.loads((out / "summary.json").read_text())
    for key in ("versions", "ranks", "dofs_per_vertex", "vertices", "wall_time",
                "time_per_step", "final_vertex_masses"):
        assert key in summary
    assert summary["ranks"] == MPI.COMM_WORLD.size
    assert np.allclose(summary["final_vertex_masses"], rows[-1, 3:6])
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["time"]["t_end"] == 0.05
    assert (out / "fields.bp").is_dir()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["time.dt=-1"], "time.dt"),
        (["graph.kind=hypercub"], "did you mean 'hypercube'"),
        (["model.potential=__import__('os')"], "__import__"),
        (["mesh.cels=[4, 4]"], "did you mean 'cells'"),
        (["space.degree=4"], "space.degree"),
    ],
)
def test_invalid_input_exits_2_without_a_run_directory(shared_tmp, capsys, overrides, message):
    out = shared_tmp / "never"
    args = ["run", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert_refused(capsys, args, message, out)


def test_existing_run_directory_is_not_overwritten(shared_tmp):
    data = make_config(time={"dt": 0.01, "t_end": 0.01})
    config = write_config(shared_tmp / "c.toml", data)
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    before = (out / "diagnostics.csv").read_text()
    assert main(["run", config, "--out", str(out), "--quiet", "--set", "time.t_end=0.02"]) == 2
    assert (out / "diagnostics.csv").read_text() == before
    assert main(["run", config, "--out", str(out), "--quiet", "--overwrite",
                 "--set", "time.t_end=0.02"]) == 0
    assert (out / "diagnostics.csv").read_text() != before


def test_petsc_options_on_the_command_line_reach_the_solver(shared_tmp):
    # A state that changes: a constant one is its own next step (the solve starts there).
    data = make_config(solver={"type": "krylov", "ksp_type": "cg", "pc_type": "jacobi"},
                       model={"initial": "1 + 0.3*cos(pi*x[0])*(g + 1)"},
                       time={"dt": 0.01, "t_end": 0.02})
    config = write_config(shared_tmp / "k.toml", data)
    out = shared_tmp / "k"
    # A 1-iteration cap cannot converge to 1e-12: the command-line option must win.
    assert main(["run", config, "--out", str(out), "--quiet", "-rd_ksp_max_it", "1"]) == 3
    assert main(["run", config, "--out", str(out / "ok"), "--quiet"]) == 0
    _, rows = read_csv(out / "ok" / "diagnostics.csv")
    assert rows[1:, -1].min() > 1  # a real Krylov solve
