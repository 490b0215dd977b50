"""The large-graph benchmark's measuring functions and the scalar lower bound run (timings
themselves are not tested)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_module

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.studies.lower_bound import scalar_lower_bound

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark_graphs.py"


@pytest.fixture(scope="module")
def benchmark():
    return load_module(SCRIPT)


def _case(**changes) -> dict:
    case = {"graph": {"kind": "hamming", "dim": 2, "choices": 3}, "cells": 4, "steps": 2,
            "dt": 0.05, "rtol": 1e-10, "solver": "spectral", "problem": "same"}
    return {**case, **changes}


def test_same_potential_case_runs_with_its_lower_bound(benchmark):
    comm = MPI.COMM_WORLD
    run = benchmark.run_rdgraph(_case(), comm)
    assert run["unknowns"] == 9 * 25 and run["vertices"] == 9 and run["edges"] == 18
    assert run["iterations"] == [1, 1]  # exact: one factorized solve per mode
    assert run["mass_drift"] < 1e-12
    assert len(run["memory_mb"]) == comm.size and min(run["memory_mb"]) > 0
    bound = run["lower_bound"]
    assert bound["rhs"] == 9 and sum(bound["rhs_per_rank"]) == 9
    assert bound["dofs"] == 25 and bound["residual"] < 1e-12 and bound["step"] > 0
    assert run["step_over_lb"] == pytest.approx(run["step"] / bound["step"])


def test_offsets_case_reads_its_data_file(benchmark, shared_tmp):
    data = shared_tmp / "losses.csv"
    if MPI.COMM_WORLD.rank == 0:
        benchmark.write_losses(data, 9)
    MPI.COMM_WORLD.Barrier()
    run = benchmark.run_rdgraph(_case(problem="offsets", data=str(data), solver="vertex"),
                                MPI.COMM_WORLD)
    assert run["unknowns"] == 9 * 25 and max(run["iterations"]) <= 20
    assert run["mass_drift"] < 1e-12


def test_lower_bound_batches_and_splits_the_right_hand_sides():
    settings = settings_from_dict({
        "mesh": {"shape": "rectangle", "cells": [4, 4]},
        "graph": {"kind": "path", "n": 7},
        "model": {"coupling": "laplacian", "potential": "(x[0] - 0.3)**2"},
        "time": {"dt": 0.1, "t_end": 0.1}})
    comm = MPI.COMM_WORLD
    # 25 dofs, 50 entries per batch: two columns a batch, and a narrower last one.
    bound = scalar_lower_bound(settings, comm, batch_entries=50, repeats=2)
    assert bound["batch"] == 2 and bound["rhs"] == 7
    assert bound["rhs_per_rank"] == [7 // comm.size + (r < 7 % comm.size)
                                     for r in range(comm.size)]
    assert bound["residual"] < 1e-12 and len(bound["steps"]) == 2
    assert scalar_lower_bound(settings, comm, num_rhs=100)["rhs"] == 100


def test_case_selection_and_table(benchmark):
    cases = benchmark.CASES
    assert {n for _, n in cases.values()} >= {64, 15625, 100_000}
    assert set(benchmark.select("hamming", cases, None)) == {
        "hamming_N64", "hamming_N1024", "hamming_N4096", "hamming_N15625"}
    assert list(benchmark.select("random_N100000,path", cases, 64)) == ["path_N64"]
    with pytest.raises(SystemExit, match="unknown lattice"):
        benchmark.select("lattice", cases, None)
    # The random graphs have mean degree about 8.
    graph, n = cases["random_N4096"]
    assert graph["p"] * (n - 1) == pytest.approx(benchmark.RANDOM_DEGREE)
    results = {"cases": {"a": {"n": 4, "result": {"error": "Traceback\nValueError: too big"}}}}
    (row,) = benchmark.table_rows(results)
    assert row["error"] == "ValueError: too big" and row["step"] is None
    assert np.isfinite(benchmark.OFFSET_SCALE)


def test_wells_case_reads_centres_and_depths_from_its_data_file(benchmark, shared_tmp):
    data = shared_tmp / "wells.csv"
    if MPI.COMM_WORLD.rank == 0:
        benchmark.write_wells(data, 9)
    MPI.COMM_WORLD.Barrier()
    header, *rows = data.read_text().splitlines()
    assert header == "vertex,cx,cy,depth" and len(rows) == 9
    values = np.array([[float(v) for v in row.split(",")[1:]] for row in rows])
    assert np.all((values[:, :2] >= 0.3) & (values[:, :2] <= 0.7))
    assert np.all((values[:, 2] >= 0.5) & (values[:, 2] <= 2.0))
    run = benchmark.run_rdgraph(_case(problem="wells", data=str(data), solver="vertex"),
                                MPI.COMM_WORLD)
    assert run["unknowns"] == 9 * 25 and max(run["iterations"]) <= 20
    assert run["mass_drift"] < 1e-12
