"""Block solves on vertex operators that differ strongly (potentials many β apart).

The spectral solver preconditions with the mean vertex operator; on the default
architecture-search toy (neighbouring potentials up to 28β apart) it reaches its iteration
limit from 32² on. The vertex-block solver converges there in a few iterations, ``auto`` takes
it when the potentials differ by more than ``AUTO_SPREAD_MAX`` β, and a failed solve of a
solver ``auto`` chose is first retried with it before ``dt`` is halved.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import SolverError
from rdgraph.problem.config import SolverSettings, settings_from_dict
from rdgraph.problem.defaults import default_config
from rdgraph.simulation import Simulation, run
from rdgraph.solvers import block, vertex
from rdgraph.solvers.block import more_robust_type, resolve_solver

COMM = MPI.COMM_WORLD


def toy(cells: int, solver: dict, steps: int = 2) -> dict:
    data = default_config()
    data["mesh"]["cells"] = [cells, cells]
    data["time"]["t_end"] = steps * data["time"]["dt"]
    data["solver"] = solver
    data["output"] = {"fields_every": 0, "npz": False, "plots": False}
    return data


def wells_30_beta(solver: dict) -> dict:
    """Four vertices on a path whose neighbours' potentials differ by up to 30β."""
    return make_config(
        mesh={"cells": [16, 16]},
        graph={"kind": "path", "n": 4, "weight": 1.0},
        model={"coupling": "gibbs", "beta": 0.1,
               "potential": "1.5*(1 - cos(pi*g))*x[0] + 0.2*g*x[1]*(1 - x[1])",
               "initial": "1 + 0.5*cos(pi*x[0])*(g - 1.5)"},
        time={"scheme": "implicit-euler", "dt": 0.05, "t_end": 0.1},
        solver=solver,
    )


def final(data: dict) -> tuple[np.ndarray, list[int], Simulation]:
    sim = Simulation(settings_from_dict(data))
    history = sim.run()
    return sim.state.array_r.copy(), [d.ksp_iterations for d in history[1:]], sim


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return COMM.allreduce(float(np.abs(a - b).max(initial=0.0)), op=MPI.MAX)


def test_auto_takes_the_vertex_solver_for_potentials_far_apart():
    settings = SolverSettings()
    # Beyond the direct solver's size: spread decides.
    assert resolve_solver(settings, 8, 16641, False, spread=28.3)[0] == "vertex"
    assert resolve_solver(settings, 8, 16641, False, spread=0.5)[0] == "spectral"
    assert resolve_solver(settings, 8, 16641, True, spread=0.0)[0] == "spectral"
    assert resolve_solver(settings, 8, 1089, False, spread=28.3)[0] == "direct"
    assert resolve_solver(settings, 8, 16641, False, spread=28.3)[1] == "lu"


def test_retry_order_ends_with_direct_where_memory_allows():
    assert more_robust_type("spectral", 8, 16641) == "vertex"
    assert more_robust_type("vertex", 8, 16641, memory=64e9) == "direct"
    assert more_robust_type("vertex", 8, 16641, memory=1e8) is None  # too big to factorize
    assert more_robust_type("direct", 8, 16641) is None


@pytest.mark.parametrize("case", ["toy-32", "wells-30-beta"])
def test_vertex_solver_converges_where_spectral_fails(case):
    make = (lambda s: toy(32, s)) if case == "toy-32" else wells_30_beta
    reference, _, sim = final(make({"type": "direct"}))
    sim.destroy()
    # The old fast path: the spectral preconditioner does not converge.
    sim = Simulation(settings_from_dict(make({"type": "spectral", "max_it": 200,
                                              "max_retries": 0})))
    with pytest.raises(Exception, match="DIVERGED_MAX_IT"):
        sim.stepper.step(sim.state, 0.0)
    sim.destroy()
    state, iterations, sim = final(make({"type": "vertex", "rtol": 1e-11}))
    sim.destroy()
    assert max(iterations) <= 30, iterations
    scale = COMM.allreduce(float(np.abs(reference).max()), op=MPI.MAX)
    assert max_difference(state, reference) <= 1e-7 * scale


def test_auto_converges_on_potentials_30_beta_apart(monkeypatch):
    # Make the system "large" for auto, so that it decides between the iterative solvers.
    monkeypatch.setattr(block, "AUTO_DIRECT_MAX", 0)
    state, iterations, sim = final(wells_30_beta({"type": "auto"}))
    assert sim.solver_options["type"] == "vertex"
    assert 30.0 <= sim.solver_options["potential_spread"] <= 31.0
    sim.destroy()
    assert max(iterations) <= 30, iterations


def test_a_failed_solve_is_retried_with_a_more_robust_solver(tmp_path, monkeypatch):
    # auto chooses spectral (as it did on the toy before it judged the spread), which fails.
    monkeypatch.setattr(block, "AUTO_DIRECT_MAX", 0)
    monkeypatch.setattr(block, "AUTO_SPREAD_MAX", 1e9)
    out = COMM.bcast(str(tmp_path / "run") if COMM.rank == 0 else None)
    data = toy(32, {"type": "auto", "max_it": 50, "max_retries": 0})
    run(settings_from_dict(data), out_dir=out, quiet=True)
    summary = json.loads(open(f"{out}/summary.json").read())
    assert summary["steps"] == 2 and summary["retried_steps"] == 0
    assert [(f["from"], f["to"]) for f in summary["solver_fallbacks"]] == [("spectral", "vertex")]
    assert "DIVERGED_MAX_IT" in summary["solver_fallbacks"][0]["reason"]
    assert summary["solver_options"]["type"] == "vertex"


def test_a_solver_the_user_set_is_not_replaced():
    sim = Simulation(settings_from_dict(toy(32, {"type": "spectral", "max_it": 50})))
    assert sim.stepper.more_robust() is None
    sim.destroy()


@pytest.mark.skipif(COMM.size != 2, reason="the issue's case: 128² on 2 ranks (about 30 s)")
def test_auto_runs_the_toy_at_128_on_two_ranks():
    _, iterations, sim = final(toy(128, {"type": "auto"}))
    assert sim.solver_options["type"] == "vertex"
    sim.destroy()
    assert max(iterations) <= 30, iterations


def fail_vertex_setup_on_last_rank(monkeypatch, how: str) -> None:
    """Make the vertex blocks' set-up fail on the last rank only: a zero pivot (which PETSc
    records as the PC's failed reason) or an error raised during the factorization."""
    configure = vertex.configure_ksp

    def failing(ksp, options, prefix, *, set_up=False):
        if COMM.rank == COMM.size - 1:
            if how == "raises":
                raise PETSc.Error(55)  # PETSC_ERR_MEM
            options = {**options, "pc_factor_zeropivot": 1e300}  # every pivot is "zero"
        configure(ksp, options, prefix, set_up=set_up)

    monkeypatch.setattr(vertex, "configure_ksp", failing)


@pytest.mark.parametrize("how", ["zero-pivot", "raises"])
def test_a_vertex_block_failing_on_one_rank_fails_the_step_on_every_rank(
        tmp_path, monkeypatch, how):
    fail_vertex_setup_on_last_rank(monkeypatch, how)
    out = COMM.bcast(str(tmp_path / "run") if COMM.rank == 0 else None)
    why = "FACTOR_NUMERIC_ZEROPIVOT" if how == "zero-pivot" else "PETSc error 55"
    # A type set in the config is kept: the step fails (no halving here), on every rank.
    data = wells_30_beta({"type": "vertex", "max_retries": 0})
    with pytest.raises(SolverError, match=rf"vertex \d could not be set up \({why}\)"):
        run(settings_from_dict(data), out_dir=out, quiet=True)


def test_a_vertex_block_failing_on_one_rank_gives_way_to_direct(tmp_path, monkeypatch):
    monkeypatch.setattr(block, "AUTO_DIRECT_MAX", 0)
    fail_vertex_setup_on_last_rank(monkeypatch, "zero-pivot")
    out = COMM.bcast(str(tmp_path / "run") if COMM.rank == 0 else None)
    run(settings_from_dict(wells_30_beta({"type": "auto", "max_retries": 0})), out_dir=out,
        quiet=True)
    summary = json.loads(open(f"{out}/summary.json").read())
    assert [(f["step"], f["from"], f["to"]) for f in summary["solver_fallbacks"]] == [
        (1, "vertex", "direct")]
    assert "could not be set up (FACTOR_NUMERIC_ZEROPIVOT)" in summary["solver_fallbacks"][0][
        "reason"]
    assert summary["steps"] == 2 and summary["retried_steps"] == 0
