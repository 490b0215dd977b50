"""``rdgraph sweep``: every combination, sweep.csv, restarts, failing cases, bad files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from conftest import make_config

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.studies.sweep import CASE_MARKER, load_sweep, parse_sweep

comm = MPI.COMM_WORLD
DT, STEPS = 0.05, 4


def base_config() -> dict:
    # Two vertices with masses 1 and 2 on (0, 1): the laplacian coupling exchanges them.
    return make_config(mesh={"shape": "interval", "cells": [8]},
                       graph={"kind": "path", "n": 2},
                       model={"coupling": "laplacian", "initial": "1 + g"},
                       time={"dt": DT, "t_end": DT * STEPS},
                       output={"checkpoint_every": 0})


def write(path, text_or_data) -> str:
    if comm.rank == 0:
        text = text_or_data if isinstance(text_or_data, str) else tomli_w.dumps(text_or_data)
        path.write_text(text)
    comm.Barrier()
    return str(path)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def exact_masses(weight: float) -> np.ndarray:
    """Implicit Euler on the vertex masses: (I + τL) m^{n+1} = m^n, whatever β."""
    L = weight * np.array([[1.0, -1.0], [-1.0, 1.0]])
    m = np.array([1.0, 2.0])
    for _ in range(STEPS):
        m = np.linalg.solve(np.eye(2) + DT * L, m)
    return m


@pytest.fixture
def sweep_file(shared_tmp):
    write(shared_tmp / "base.toml", base_config())
    return write(shared_tmp / "sweep.toml", """
base = "base.toml"
set = ["time.scheme='implicit-euler'"]
[parameters]
"model.beta" = [0.5, 1.0]
graph.weight = [1.0, 3.0]
""")


def test_two_by_two_sweep_and_restart(shared_tmp, sweep_file):
    out = shared_tmp / "out"
    assert main(["sweep", sweep_file, "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "sweep.csv")
    assert [r["case"] for r in rows] == ["beta=0.5_weight=1", "beta=0.5_weight=3",
                                         "beta=1_weight=1", "beta=1_weight=3"]
    for row in rows:
        assert row["status"] == "ok" and row["skipped"] == "false"
        assert float(row["wall_time"]) > 0 and int(row["steps"]) == STEPS
        masses = np.array([float(row["mass_0"]), float(row["mass_1"])])
        assert np.allclose(masses, exact_masses(float(row["graph.weight"])), rtol=1e-10)
        assert np.isclose(float(row["mass"]), 3.0)
        # Each case is an ordinary run directory.
        diag = read_csv(out / row["case"] / "diagnostics.csv")
        assert float(diag[-1]["free_energy"]) == pytest.approx(float(row["free_energy"]))
        assert float(row["rel_entropy"]) >= 0
    # The masses depend on the coupling strength and not on β: a real sweep, not one case.
    assert rows[0]["mass_0"] != rows[1]["mass_0"]
    stamps = {r["case"]: (out / r["case"] / "diagnostics.csv").stat().st_mtime_ns for r in rows}

    # Restarted with one more β: the four finished cases are skipped, two new ones run.
    text = (shared_tmp / "sweep.toml").read_text().replace("[0.5, 1.0]", "[0.5, 1.0, 2.0]")
    write(shared_tmp / "sweep.toml", text)
    assert main(["sweep", sweep_file, "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 6
    assert [r["skipped"] for r in rows] == ["true"] * 4 + ["false"] * 2
    for case, stamp in stamps.items():
        assert (out / case / "diagnostics.csv").stat().st_mtime_ns == stamp

    # A changed base config is not "finished": its cases run again.
    write(shared_tmp / "base.toml", make_config(**{**base_config(), "time": {
        "dt": DT, "t_end": DT * (STEPS + 1)}}))
    assert main(["sweep", sweep_file, "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "sweep.csv")
    assert all(r["skipped"] == "false" and int(r["steps"]) == STEPS + 1 for r in rows)


def test_failing_cases_are_recorded_and_the_sweep_goes_on(shared_tmp, capsys):
    base = base_config()
    base["solver"] = {"type": "krylov", "ksp_type": "cg", "pc_type": "jacobi",
                      "max_retries": 0}
    write(shared_tmp / "base.toml", base)
    sweep_file = write(shared_tmp / "fail.toml", """
base = "base.toml"
[parameters]
# log(x - 0.5) is a valid expression but NaN on half the mesh: found only while building.
"model.potential" = ["0", "log(x[0] - 0.5)"]
"solver.max_it" = [1, 200]   # one CG iteration cannot reach rtol = 1e-12
""")
    out = shared_tmp / "out"
    assert main(["sweep", sweep_file, "--out", str(out)]) == 3
    rows = {r["case"]: r for r in read_csv(out / "sweep.csv")}
    assert len(rows) == 4
    assert rows["potential=0_max_it=1"]["status"] == "solver-failure"
    assert rows["potential=0_max_it=200"]["status"] == "ok"
    for name in ("potential=log-x-0-0.5_max_it=1", "potential=log-x-0-0.5_max_it=200"):
        assert rows[name]["status"] == "input-error"
        assert "not finite" in rows[name]["message"]
        assert json.loads((out / name / CASE_MARKER).read_text())["status"] == "input-error"
    assert "ksp" in rows["potential=0_max_it=1"]["message"].lower() \
        or "diverged" in rows["potential=0_max_it=1"]["message"].lower()
    assert rows["potential=0_max_it=1"]["mass_0"] == ""
    if comm.rank == 0:
        assert "1 of 4 cases ok" in capsys.readouterr().out
    # Failed cases are not finished: a restart runs them again, and only them.
    assert main(["sweep", sweep_file, "--out", str(out), "--quiet"]) == 3
    skipped = {r["case"]: r["skipped"] for r in read_csv(out / "sweep.csv")}
    assert skipped == {name: str(name == "potential=0_max_it=200").lower() for name in rows}


def test_an_interrupted_case_continues_from_its_checkpoint(shared_tmp):
    base = write(shared_tmp / "base.toml", base_config())
    sweep_file = write(shared_tmp / "sweep.toml",
                       'base = "base.toml"\n[parameters]\n"graph.weight" = [1.0, 3.0]\n')
    out = shared_tmp / "out"
    # What a stopped sweep leaves: unfinished case folders with a checkpoint and no case.json.
    # The first fits its case (half of the steps done); the second was written for another
    # coupling strength, so it cannot be continued.
    for name, weight in (("weight=1", 1.0), ("weight=3", 2.0)):
        assert main(["run", base, "--out", str(out / name), "--quiet",
                     "--set", f"graph.weight={weight}",
                     "--set", f"time.t_end={DT * (STEPS // 2)}"]) == 0
    assert main(["sweep", sweep_file, "--out", str(out), "--quiet"]) == 0
    rows = {r["case"]: r for r in read_csv(out / "sweep.csv")}
    assert rows["weight=1"]["resumed_from_step"] == str(STEPS // 2)
    assert rows["weight=3"]["resumed_from_step"] == ""
    for name, weight in (("weight=1", 1.0), ("weight=3", 3.0)):
        row = rows[name]
        assert row["status"] == "ok" and int(row["steps"]) == STEPS
        masses = np.array([float(row["mass_0"]), float(row["mass_1"])])
        assert np.allclose(masses, exact_masses(weight), rtol=1e-10)
        steps = [int(r["step"]) for r in read_csv(out / name / "diagnostics.csv")]
        assert steps == list(range(STEPS + 1))  # continued, not duplicated or restarted


@pytest.mark.parametrize(
    "text, message",
    [
        ('base = "base.toml"\n[parameters]\n"model.beta" = []', "non-empty list"),
        ('base = "base.toml"\n[parameters]\n"model.bta" = [1.0]', "did you mean 'beta'"),
        ('base = "base.toml"\n[parameters]\n"model.beta" = [1.0, -1.0]',
         "1 of 2 cases are invalid"),
        ('base = "base.toml"\n[parameters]\n"model.beta" = [1, 1.0]', "same case folder"),
        ('base = "nowhere.toml"\n[parameters]\n"model.beta" = [1.0]', "does not exist"),
        ('base = "base.toml"\nsets = ["time.dt=1"]', "unknown entries sets"),
        ('base = "base.toml"\nset = ["time.dt=0.03"]', "whole number of steps"),
        ('base = "base.toml"\n[parameters]\n"graph.n" = [3, 0]', "graph.n"),
        ('[parameters]\n"model.beta" = [1.0]', "needs base"),
        ('base = "base.toml"\n[parameters\n', "not valid TOML"),
    ],
)
def test_bad_sweep_file_exits_2_before_running_anything(shared_tmp, capsys, text, message):
    write(shared_tmp / "base.toml", base_config())
    sweep_file = write(shared_tmp / "bad.toml", text)
    out = shared_tmp / "out"
    assert main(["sweep", sweep_file, "--out", str(out)]) == 2
    if comm.rank == 0:
        err = capsys.readouterr().err
        assert err.count("rdgraph: error:") == 1 and message in err
    assert not out.exists()


def test_inline_base_and_nested_parameters(tmp_path):
    data = {"base": base_config(), "parameters": {"graph": {"weight": [1.0, 2.0]},
                                                   "time.scheme": ["bdf2"]}}
    sweep = parse_sweep(data, source="inline", base_dir=tmp_path)
    cases = sweep.cases()
    assert [c.name for c in cases] == ["weight=1_scheme=bdf2", "weight=2_scheme=bdf2"]
    assert cases[1].settings.graph.weight == 2.0 and cases[1].settings.time.scheme == "bdf2"
    with pytest.raises(InputError, match="does not exist"):
        load_sweep(tmp_path / "missing.toml")


@pytest.mark.skipif(comm.size > 1, reason="launches its own processes")
def test_a_sweep_stopped_by_sigterm_resumes_where_it_stopped(tmp_path):
    """The batch-scheduler path: SIGTERM to the whole job, then the same command again."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    steps, dt = 300, 1e-3
    data = make_config(mesh={"cells": [8, 8]}, model={"initial": "1 + g"},
                       graph={"kind": "path", "n": 2}, time={"dt": dt, "t_end": steps * dt},
                       output={"checkpoint_every": 10})
    (tmp_path / "base.toml").write_text(tomli_w.dumps(data))
    (tmp_path / "s.toml").write_text('base = "base.toml"\n[parameters]\n'
                                     '"graph.weight" = [1.0, 2.0]\n')
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "mpiexec"), "-n", "2", sys.executable, "-m",
               "rdgraph", "sweep", str(tmp_path / "s.toml"), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    csv_path = out / "weight=1" / "diagnostics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if csv_path.exists() and csv_path.read_text().count("\n") > 40:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    # The way to continue is the sweep itself, not a resume of the case alone.
    assert "run the same rdgraph sweep command again" in err and "--resume" not in err, err
    assert not (out / "weight=1" / CASE_MARKER).exists()

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = {r["case"]: r for r in read_csv(out / "sweep.csv")}
    assert int(rows["weight=1"]["resumed_from_step"]) >= 10
    assert rows["weight=2"]["resumed_from_step"] == ""
    for name, weight in (("weight=1", 1.0), ("weight=2", 2.0)):
        L = weight * np.array([[1.0, -1.0], [-1.0, 1.0]])
        m = np.array([1.0, 2.0])
        for _ in range(steps):
            m = np.linalg.solve(np.eye(2) + dt * L, m)
        masses = [float(rows[name]["mass_0"]), float(rows[name]["mass_1"])]
        assert rows[name]["status"] == "ok" and np.allclose(masses, m, rtol=1e-9)
        column = [int(r["step"]) for r in read_csv(out / name / "diagnostics.csv")]
        assert column == list(range(steps + 1))
