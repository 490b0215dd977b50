"""The solver benchmark's measuring functions run (timings themselves are not tested)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_module

from rdgraph.compat import MPI

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark_solvers.py"


@pytest.fixture(scope="module")
def benchmark():
    return load_module(SCRIPT)


@pytest.mark.parametrize("differ", [False, True])
def test_lower_bound_and_spectral_cases_run(benchmark, differ):
    case = {"dim": 2, "cells": 8, "coupling": "laplacian", "dt": 1e-2, "steps": 2,
            "rtol": 1e-8, "N": 3, "differ": differ}
    comm = MPI.COMM_WORLD
    bound = benchmark._run_lower_bound({**case, "kind": "lb"}, comm)
    assert set(bound) == {"cg_gamg", "mumps", "serial_lu_dealt"}
    for row in bound.values():
        assert row["step"] > 0 and row["setup"] > 0
    run = benchmark._run_rdgraph({**case, "kind": "rd", "solver": {"type": "spectral",
                                                                   "rtol": 1e-8}}, comm)
    assert run["unknowns"] == 3 * 81
    assert len(run["iterations"]) == 2 and run["memory_mb"] > 0
    if not differ:
        assert run["iterations"] == [1, 1]  # exact: one factorized solve per mode


def test_complete_graph_gibbs_case_runs_with_either_coupling(benchmark):
    case = {"dim": 2, "cells": 8, "coupling": "gibbs", "dt": 1e-2, "steps": 2, "rtol": 1e-8,
            "N": 4, "differ": True, "graph": "complete", "kind": "rd"}
    runs = [benchmark._run_rdgraph({**case, "solver": {"type": "spectral", "rtol": 1e-8,
                                                       "gibbs_coupling": storage}},
                                   MPI.COMM_WORLD)
            for storage in ("quadrature", "per-edge")]
    for run in runs:
        assert run["unknowns"] == 4 * 81 and run["memory_mb"] > 0
    assert runs[0]["iterations"] == runs[1]["iterations"]  # the same operator


def test_repeated_runs_keep_the_median_of_each_timing(benchmark):
    runs = [{"setup": 3.0, "first_step": 1.0, "step": 0.5, "iterations": [4]},
            {"setup": 1.0, "first_step": 2.0, "step": 0.7, "iterations": [5]},
            {"setup": 2.0, "first_step": 9.0, "step": 0.3, "iterations": [6]}]
    result = benchmark.median_result(runs)
    assert (result["setup"], result["first_step"], result["step"]) == (2.0, 2.0, 0.5)
    assert result["iterations"] == [4] and len(result["repeats"]) == 3


@pytest.mark.parametrize("variant", [{}, {"hypercube": 4}, {"degree": 2, "beta": 0.05}])
def test_architecture_search_cases_run(benchmark, variant):
    case = {"toy": True, "cells": 6, "dt": 0.05, "steps": 2, "rtol": 1e-8, **variant}
    comm = MPI.COMM_WORLD
    bound = benchmark._run_lower_bound({**case, "kind": "lb"}, comm)
    assert bound["mumps"]["step"] > 0
    run = benchmark._run_rdgraph({**case, "kind": "rd", "solver": {"type": "vertex",
                                                                   "rtol": 1e-8}}, comm)
    assert len(run["iterations"]) == 2 and max(run["iterations"]) <= 30
    assert run["unknowns"] == 2 ** variant.get("hypercube", 3) * (
        6 * variant.get("degree", 1) + 1) ** 2
