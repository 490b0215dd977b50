"""Per-vertex wells from a data file: ``V_g = depth[g]·|x − (cx[g], cy[g])|²``.

Every vertex operator differs, so neither iterative solver is exact: the vertex-block solver
(exact blocks, the graph coupling left to FGMRES) and ``auto`` must reach the monolithic
direct solution. The potential separates (five assemblies for all vertices), so the vertex
solver's outer products run matrix-free on all vertices at once with laplacian coupling, and
on the assembled matrix where the coupling loops over edges (nodal gibbs rates).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import SolverError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.solvers import block

COMM = MPI.COMM_WORLD
WELLS = "depth[g]*((x[0] - cx[g])**2 + (x[1] - cy[g])**2)"


@pytest.fixture(scope="module")
def wells_csv(tmp_path_factory) -> str:
    """Eight wells, centres in [0.3, 0.7]², depths in [0.5, 2] (seeded)."""
    path = None
    if COMM.rank == 0:
        rng = np.random.default_rng(3)
        rows = [f"{g},{cx!r},{cy!r},{d!r}" for g, (cx, cy, d) in enumerate(zip(
            rng.uniform(0.3, 0.7, 8).tolist(), rng.uniform(0.3, 0.7, 8).tolist(),
            rng.uniform(0.5, 2.0, 8).tolist(), strict=True))]
        path = tmp_path_factory.mktemp("wells") / "wells.csv"
        path.write_text("vertex,cx,cy,depth\n" + "\n".join(rows) + "\n")
    return COMM.bcast(str(path) if path is not None else None)


def run(data: str, solver: dict, **model) -> tuple[np.ndarray, list[int], Simulation]:
    config = make_config(
        mesh={"cells": [5, 5]},
        graph={"kind": "hypercube", "dim": 3, "n": 8, "weight": 2.0},
        model={"coupling": "laplacian", "beta": 0.5, "data": data, "potential": WELLS,
               "initial": "1 + 0.5*cos(pi*x[0])*cos(g)", **model},
        time={"scheme": "implicit-euler", "dt": 0.05, "t_end": 0.1},
        solver=solver)
    sim = Simulation(settings_from_dict(config))
    history = sim.run()
    return sim.state.array_r.copy(), [d.ksp_iterations for d in history[1:]], sim


_REFERENCES: dict[str, np.ndarray] = {}


def direct(data: str, **model) -> np.ndarray:
    """The monolithic direct solution (computed once per model)."""
    key = repr(sorted(model.items()))
    if key not in _REFERENCES:
        _REFERENCES[key], _, sim = run(data, {"type": "direct"}, **model)
        sim.destroy()
    return _REFERENCES[key]


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return COMM.allreduce(float(np.abs(a - b).max(initial=0.0)), op=MPI.MAX)


@pytest.mark.parametrize(("model", "matrix_free"), [
    ({}, True),
    ({"coupling": "gibbs", "gibbs_rates": "nodal"}, False),
], ids=["laplacian", "gibbs-nodal"])
def test_vertex_solver_reaches_the_direct_solution(wells_csv, model, matrix_free):
    reference = direct(wells_csv, **model)
    state, iterations, sim = run(wells_csv, {"type": "vertex", "rtol": 1e-11}, **model)
    solver = sim.stepper.solver
    assert solver.kind == "vertex"
    # Matrix-free only where the shell applies every vertex at once.
    assert (solver.matrix.getType() == PETSc.Mat.Type.PYTHON) is matrix_free
    # Factorized blocks are solved by their factors directly, not through a KSP.
    factors = solver.vertex_preconditioner.factors
    assert factors and all(factor is not None for factor in factors)
    sim.destroy()
    assert 1 <= max(iterations) <= 20, iterations
    scale = COMM.allreduce(float(np.abs(reference).max()), op=MPI.MAX)
    assert max_difference(state, reference) <= 1e-8 * scale


def test_auto_takes_the_spectral_solver_for_wells_a_few_beta_apart(wells_csv, monkeypatch):
    # "Large" for auto, so that it decides between the iterative solvers by the spread.
    monkeypatch.setattr(block, "AUTO_DIRECT_MAX", 0)
    reference = direct(wells_csv)
    state, iterations, sim = run(wells_csv, {"type": "auto", "rtol": 1e-11})
    spread = sim.solver_options["potential_spread"]
    kind = sim.solver_options["type"]
    sim.destroy()
    assert 1.0 < spread < block.AUTO_SPREAD_MAX and kind == "spectral"
    assert max(iterations) <= 20, iterations
    scale = COMM.allreduce(float(np.abs(reference).max()), op=MPI.MAX)
    assert max_difference(state, reference) <= 1e-8 * scale


class _FailingFactor:
    def solve(self, b, x):
        raise PETSc.Error(76)  # what a solve phase running out of memory raises


def test_a_block_solve_failing_on_one_rank_fails_the_preconditioner_on_every_rank(wells_csv):
    config = make_config(
        mesh={"cells": [4, 4]}, graph={"kind": "hypercube", "dim": 3, "n": 8},
        model={"coupling": "laplacian", "beta": 0.5, "data": wells_csv, "potential": WELLS},
        time={"scheme": "implicit-euler", "dt": 0.05, "t_end": 0.05},
        solver={"type": "vertex"})
    sim = Simulation(settings_from_dict(config))
    try:
        factors = sim.stepper.solver.vertex_preconditioner.factors
        kept = factors[0]
        if COMM.rank == COMM.size - 1:
            factors[0] = _FailingFactor()
        r, x = sim.state.duplicate(), sim.state.duplicate()
        r.set(1.0)
        with pytest.raises(SolverError, match=r"vertex-block solver: the block of vertex \d+ "
                                              r"did not solve"):
            sim.stepper.solver.vertex_preconditioner.apply(None, r, x)
        factors[0] = kept
        for vec in (r, x):
            vec.destroy()
    finally:
        sim.destroy()
