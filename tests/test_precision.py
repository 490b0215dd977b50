"""Single-precision factorizations where the spectral solver only preconditions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.solvers.precision import (
    SINGLE_PRECISION_MAX_CONDITION,
    condition_estimate,
    factorization_precision,
    mumps_single_precision,
)

UNEQUAL = {"coupling": "laplacian", "beta": 0.5,
           "potential": "(g + 1)/4*((x[0] - 0.5)**2 + (x[1] - 0.5)**2)"}
EQUAL = {"coupling": "laplacian", "beta": 0.5, "potential": "(x[0] - 0.3)**2 + 0.5*x[1]"}

needs_single = pytest.mark.skipif(not mumps_single_precision(),
                                  reason="this PETSc's MUMPS has no single precision")


def test_the_setting_resolves_as_documented():
    def resolve(setting, preconditions=True, condition=1e2, supported=True):
        return factorization_precision(setting, preconditions=preconditions,
                                       condition=condition, supported=supported)

    assert resolve("auto") == "single"
    assert resolve("auto", condition=2 * SINGLE_PRECISION_MAX_CONDITION) == "double"
    assert resolve("auto", supported=False) == "double"
    assert resolve("auto", preconditions=False) == "double"  # an exact solve stays exact
    assert resolve("single", condition=1e8) == "single"
    assert resolve("single", preconditions=False) == "double"
    assert resolve("double") == "double"
    with pytest.raises(InputError, match="factorization_precision = 'single'"):
        resolve("single", supported=False)


def _simulation(model: dict, dt: float, overrides: dict | None = None, modes_per_rank: int = 6,
                degree: int = 1, **solver):
    comm = MPI.COMM_WORLD
    N = modes_per_rank * comm.size  # 6: enough for one batched MUMPS factorization per rank
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": N},
                       space={"degree": degree},
                       # A density >= 0 at every node: the amplitude 0.5 g / N stays below 1.
                       model={**model, "initial": f"1 + 0.5*cos(pi*x[0])*g/{N}"},
                       time={"dt": dt, "t_end": 2 * dt},
                       solver={"type": "spectral", "inner": "lu", "rtol": 1e-10, **solver})
    return data, Simulation(settings_from_dict(data), comm, overrides or {})


def test_condition_estimate_bounds_the_scalar_problems():
    """The estimate is within a small factor of the true condition number of the worst scalar
    problem ``a M + b K̄`` (relative to ``M``), on any number of ranks."""
    comm = MPI.COMM_WORLD
    dt = 0.05
    data, sim = _simulation(EQUAL, dt)
    operators = sim.operators
    estimate = condition_estimate(operators, 1.0, dt)

    def dense(values):
        local = operators.pattern.matrix(values, comm).convert("dense").getDenseArray()
        return np.vstack(comm.allgather(local))

    M, K = dense(operators.mass), dense(operators.average_stiffness())
    eigenvalues = np.linalg.eigvals(np.linalg.solve(M, M + dt * K)).real
    true = eigenvalues.max() / eigenvalues.min()
    sim.destroy()
    assert true / 4 <= estimate <= 4 * true


def _relative_residual(ksp: PETSc.KSP) -> float:
    """|A x - b| / |b| of one solve with ``ksp`` (its own factorization)."""
    A = ksp.getOperators()[0]
    b, x = A.createVecs()
    b.array[:] = np.random.default_rng(0).standard_normal(b.array.size)
    ksp.solve(b, x)
    r = b.duplicate()
    A.mult(x, r)
    r.axpy(-1.0, b)
    residual = r.norm() / b.norm()
    for vec in (b, x, r):
        vec.destroy()
    return residual


@needs_single
@pytest.mark.parametrize("layout", ["per-rank", "distributed"])
def test_auto_factorizes_in_single_precision_where_it_only_preconditions(layout):
    """Differing potentials, small τ: the shared MUMPS factorization is single precision (its
    solve is that inexact), and FGMRES still meets the tolerance in as many iterations."""
    data, sim = _simulation(UNEQUAL, 1e-3, scalar_layout=layout)
    solver = sim.stepper.solver
    assert solver.options["factorization_precision"] == "single"
    [(ksp, _)] = solver.preconditioner.batches
    assert ksp.getPC().getFactorSolverType() == "mumps"
    assert 1e-9 < _relative_residual(ksp) < 1e-3
    history = sim.run()
    single_iterations = [d.ksp_iterations for d in history[1:]]
    state = sim.state.array_r.copy()
    sim.destroy()

    data, sim = _simulation(UNEQUAL, 1e-3, scalar_layout=layout,
                            factorization_precision="double")
    solver = sim.stepper.solver
    assert solver.options["factorization_precision"] == "double"
    [(ksp, _)] = solver.preconditioner.batches
    assert _relative_residual(ksp) < 1e-12
    history = sim.run()
    assert [d.ksp_iterations for d in history[1:]] == single_iterations
    comm = MPI.COMM_WORLD
    scale = comm.allreduce(np.abs(sim.state.array_r).max(initial=0.0), op=MPI.MAX)
    error = comm.allreduce(np.abs(state - sim.state.array_r).max(initial=0.0), op=MPI.MAX)
    sim.destroy()
    assert error <= 1e-8 * scale


@needs_single
@pytest.mark.parametrize("case", ["exact", "ill-conditioned", "quadratic", "petsc-option",
                                  "petsc-lu"])
def test_factorizations_stay_double_where_single_would_not_do(case):
    """An exact solve (equal potentials) has no outer iteration to correct a single-precision
    solve; a large τ/h² makes it too inexact; P2 has no estimate; a PETSc option wins over
    ``auto``; PETSc's own LU (2-D modes too few to batch, solved whole) has no single
    precision."""
    overrides = {}
    if case == "exact":
        data, sim = _simulation(EQUAL, 1e-3)
    elif case == "ill-conditioned":
        data, sim = _simulation(UNEQUAL, 50.0)
    elif case == "quadratic":
        data, sim = _simulation(UNEQUAL, 1e-3, degree=2)
        assert condition_estimate(sim.operators, 1.0, 1e-3) == float("inf")
    elif case == "petsc-lu":
        data, sim = _simulation(UNEQUAL, 1e-3, modes_per_rank=3, scalar_layout="per-rank")
        assert {k.getPC().getFactorSolverType() for k, _ in sim.stepper.solver.preconditioner
                .batches} == {"petsc"}
    else:
        overrides = {"spectral_pc_precision": "double"}
        data, sim = _simulation(UNEQUAL, 1e-3, overrides)
    solver = sim.stepper.solver
    assert solver.options["factorization_precision"] == "double"
    for ksp in {id(k): k for k, _ in solver.preconditioner.batches}.values():
        assert _relative_residual(ksp) < 1e-12
    sim.destroy()


def test_the_probe_answers_what_the_library_does():
    """Where MUMPS's single-precision solver is linked, the probe's answer is whether a
    factorization asked for single precision really solves that inexactly."""
    from rdgraph.solvers.precision import _links_single_precision_mumps

    if not PETSc.Sys.hasExternalPackage("mumps") or not _links_single_precision_mumps():
        assert not mumps_single_precision()
        return
    data, sim = _simulation(UNEQUAL, 1e-3, factorization_precision="single")
    [(ksp, _)] = sim.stepper.solver.preconditioner.batches
    single = _relative_residual(ksp) > 1e-9
    sim.destroy()
    assert mumps_single_precision() == single


def test_single_precision_without_mumps_support_is_an_input_error(monkeypatch):
    import rdgraph.solvers.precision as precision

    monkeypatch.setattr(precision, "mumps_single_precision", lambda: False)
    with pytest.raises(InputError, match="factorization_precision = 'single'"):
        _simulation(UNEQUAL, 1e-3, factorization_precision="single")
