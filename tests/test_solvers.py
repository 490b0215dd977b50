"""Every block solver gives the direct solver's solution (to its tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

CASES = {
    # laplacian, one potential for all vertices: the spectral solve is exact.
    "laplacian-equal": {"coupling": "laplacian", "beta": 0.5,
                        "potential": "(x[0] - 0.3)**2 + 0.5*x[1]"},
    "laplacian-unequal": {"coupling": "laplacian", "beta": 0.5,
                          "potential": "(g + 1)/4*((x[0] - 0.5)**2 + (x[1] - 0.5)**2)"},
    "gibbs-unequal": {"coupling": "gibbs", "beta": 0.5,
                      "potential": "(g + 1)/4*((x[0] - 0.5)**2 + (x[1] - 0.5)**2) + 0.1*g"},
}


def final_state(model: dict, solver: dict, scheme: str = "implicit-euler"):
    data = make_config(
        mesh={"cells": [12, 12]},
        graph={"kind": "edges", "n": 4,
               "edges": [[0, 1, 3.0], [1, 2, 0.5], [2, 3, 2.0], [0, 3, 1.0]]},
        model={**model, "initial": "1 + 0.5*cos(pi*x[0])*(g - 1.5) + 0.1*x[1]"},
        time={"scheme": scheme, "dt": 0.1, "t_end": 0.3},
        solver=solver,
    )
    sim = Simulation(settings_from_dict(data))
    history = sim.run()
    state = sim.state.array_r.copy()
    iterations = [d.ksp_iterations for d in history[1:]]
    sim.destroy()
    return state, history, iterations


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "solver",
    [
        {"type": "spectral", "inner": "lu"},
        {"type": "spectral", "inner": "lu", "scalar_layout": "distributed"},
        {"type": "spectral", "inner": "amg"},
        {"type": "spectral", "inner": "amg", "scalar_layout": "per-rank"},
        {"type": "fieldsplit"},
        {"type": "krylov", "ksp_type": "gmres", "pc_type": "bjacobi"},
        {"type": "vertex", "inner": "lu"},
        {"type": "vertex", "inner": "amg"},
    ],
    ids=["spectral-lu", "spectral-lu-distributed", "spectral-amg", "spectral-amg-per-rank",
         "fieldsplit", "krylov", "vertex-lu", "vertex-amg"],
)
def test_solver_matches_direct(case, solver):
    reference, ref_history, _ = final_state(CASES[case], {"type": "direct"})
    solver = {**solver, "rtol": 1e-11}
    state, history, iterations = final_state(CASES[case], solver)
    scale = MPI.COMM_WORLD.allreduce(np.abs(reference).max(initial=0.0), op=MPI.MAX)
    error = MPI.COMM_WORLD.allreduce(np.abs(state - reference).max(initial=0.0), op=MPI.MAX)
    assert error <= 1e-8 * scale, error / scale
    masses = np.array([d.vertex_masses for d in history])
    assert np.allclose(masses, [d.vertex_masses for d in ref_history], rtol=1e-9)
    if solver["type"] == "spectral" and case == "laplacian-equal" and solver["inner"] == "lu":
        assert max(iterations) == 1  # exact: one factorized solve per mode


@pytest.mark.parametrize("scheme", ["crank-nicolson", "bdf2"])
def test_spectral_with_every_scheme(scheme):
    reference, _, _ = final_state(CASES["gibbs-unequal"], {"type": "direct"}, scheme)
    state, _, iterations = final_state(CASES["gibbs-unequal"],
                                       {"type": "spectral", "inner": "amg", "rtol": 1e-11}, scheme)
    scale = MPI.COMM_WORLD.allreduce(np.abs(reference).max(initial=0.0), op=MPI.MAX)
    error = MPI.COMM_WORLD.allreduce(np.abs(state - reference).max(initial=0.0), op=MPI.MAX)
    assert error <= 1e-8 * scale
    assert max(iterations) <= 30


def test_spectral_preconditioner_is_exact_for_constant_potential_offsets():
    """gibbs with V_g = V + c_g: the averaged chain is the true one; GMRES needs ~1 step."""
    model = {"coupling": "gibbs", "beta": 0.5, "potential": "x[0]**2 + 0.3*g"}
    _, _, iterations = final_state(model, {"type": "spectral", "inner": "lu", "rtol": 1e-10})
    assert max(iterations) <= 2


def test_auto_factorizes_small_systems_only():
    import rdgraph.solvers.block as solvers
    from rdgraph.discretization.operators import BlockOperators
    from rdgraph.solvers.block import AUTO_DIRECT_MAX, BlockSolver

    data = make_config(mesh={"cells": [6, 6]}, model={"coupling": "laplacian"},
                       solver={"type": "auto"})
    sim = Simulation(settings_from_dict(data))
    assert sim.stepper.solver.kind == "direct"
    ops: BlockOperators = sim.operators
    small = sim.settings.solver

    original = solvers.AUTO_DIRECT_MAX
    try:
        solvers.AUTO_DIRECT_MAX = 10  # pretend the system is large
        solver = BlockSolver(ops, 1.0, 0.1, small, name="test")
        assert solver.kind == "spectral"
        solver.destroy()
    finally:
        solvers.AUTO_DIRECT_MAX = original
    assert AUTO_DIRECT_MAX == original
    sim.destroy()


def test_clusters_of_shifts():
    from rdgraph.solvers.spectral import _clusters

    assert _clusters([1.0, 1.2, 1.5, 1.6, 3.0, 100.0], 1.5) == [[0, 1, 2], [3], [4], [5]]
    assert _clusters([1.0, 1.2], 1.0) == [[0], [1]]  # span 1: nothing shared


def assert_run_matches_direct(sim: Simulation, data: dict) -> None:
    """Run ``sim`` (built from ``data``) and compare its final state with the direct solver's;
    destroys ``sim``."""
    sim.run()
    state = sim.state.array_r.copy()
    sim.destroy()
    sim = Simulation(settings_from_dict({**data, "solver": {"type": "direct"}}))
    sim.run()
    scale = MPI.COMM_WORLD.allreduce(np.abs(sim.state.array_r).max(initial=0.0), op=MPI.MAX)
    error = MPI.COMM_WORLD.allreduce(np.abs(state - sim.state.array_r).max(initial=0.0),
                                     op=MPI.MAX)
    sim.destroy()
    assert error <= 1e-8 * scale


# Path graph, 6 vertices: shifts 1 + dt λ, λ = 0, 0.27, 1, 2, 3, 3.73; dt = 0.9 gives
# {1, 1.24}, {1.9, 2.8}, {3.7, 4.36} under the span 1.5.
@pytest.mark.parametrize("dt, hierarchies", [(1e-3, 1), (0.9, 3)])
def test_amg_hierarchies_are_shared_by_close_modes(dt, hierarchies):
    """Exact spectral solve (equal potentials) with AMG: one hierarchy per cluster of shifts,
    and still the direct solver's answer."""
    model = CASES["laplacian-equal"]
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": 6},
                       model={**model, "initial": "1 + 0.5*cos(pi*x[0])*sin(g + 1)"},
                       time={"dt": dt, "t_end": 2 * dt},
                       solver={"type": "spectral", "inner": "amg", "rtol": 1e-11})
    sim = Simulation(settings_from_dict(data))
    preconditioner = sim.stepper.solver.preconditioner
    shared = {id(h) for h in preconditioner._shared}
    singles = [k for k in preconditioner.solvers if k.getPC().getType() != "python"]
    assert len(shared) + len(singles) == hierarchies
    assert_run_matches_direct(sim, data)


# Potentials that differ by constants only: one stiffness, but gibbs rates that are not 1.
SHIFTED_GIBBS = {"coupling": "gibbs", "beta": 0.5,
                 "potential": "(x[0] - 0.3)**2 + 0.5*x[1] + 0.1*g"}


@pytest.mark.parametrize("case", ["laplacian-equal", "laplacian-unequal", "gibbs-shifted"])
@pytest.mark.parametrize("layout", ["per-rank", "distributed"])
def test_factorizations_are_shared_only_where_the_modes_are_preconditioned(case, layout):
    """Exact modes (one stiffness for all vertices) keep one factorization per eigenvalue;
    where the spectral solve preconditions (unequal potentials) close shifts share one, and
    the answer is still the direct solver's. ``auto`` counts what is kept."""
    from rdgraph.solvers.spectral import factorization_count, graph_modes

    model = SHIFTED_GIBBS if case == "gibbs-shifted" else CASES[case]
    dt = 1e-3
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": 6},
                       model={**model, "initial": "1 + 0.5*cos(pi*x[0])*sin(g + 1)"},
                       time={"dt": dt, "t_end": 2 * dt},
                       solver={"type": "spectral", "inner": "lu", "scalar_layout": layout,
                               "rtol": 1e-11})
    sim = Simulation(settings_from_dict(data))
    operators = sim.operators
    preconditioner = sim.stepper.solver.preconditioner
    groups = preconditioner.local_groups  # the 6 eigenvalues are distinct
    expected = min(len(groups), 1) if case == "laplacian-unequal" else len(groups)
    kept = len({id(k) for k in preconditioner.solvers})
    assert kept == expected
    counted = factorization_count(graph_modes(operators)[0], 1.0, dt, operators.same_stiffness)
    total = MPI.COMM_WORLD.allreduce(kept) if preconditioner.per_rank else kept
    assert counted <= total <= counted + MPI.COMM_WORLD.size - 1  # dealing may split one
    assert_run_matches_direct(sim, data)


def test_auto_counts_the_factorizations_the_preconditioner_keeps(monkeypatch):
    """Potentials that differ by constants share one ``K_g``, so the factorizations are one per
    eigenvalue, not one per cluster of shifts: the run and ``rdgraph info`` pass that count to
    ``resolve_solver`` (its 3-D and memory limits depend on it)."""
    import inspect

    import rdgraph.info as info
    import rdgraph.solvers.block as solvers
    from rdgraph.info import describe

    original = solvers.resolve_solver
    counted = []

    def spy(*args, **kwargs):
        bound = inspect.signature(original).bind(*args, **kwargs)
        counted.append(bound.arguments.get("factorizations"))
        return original(*args, **kwargs)

    monkeypatch.setattr(solvers, "resolve_solver", spy)
    monkeypatch.setattr(info, "resolve_solver", spy)
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": 6},
                       model={**SHIFTED_GIBBS, "initial": "1 + 0.5*cos(pi*x[0])*sin(g + 1)"},
                       time={"dt": 1e-3, "t_end": 2e-3}, solver={"type": "spectral"})
    settings = settings_from_dict(data)
    describe(settings)
    sim = Simulation(settings)
    preconditioner = sim.stepper.solver.preconditioner
    kept = len({id(k) for k in preconditioner.solvers})
    if preconditioner.per_rank:
        kept = MPI.COMM_WORLD.allreduce(kept)
    sim.destroy()
    assert kept == 6  # the chain's 6 distinct eigenvalues; their shifts are within 1.1
    assert counted == [kept, kept]


@pytest.mark.parametrize("layout", ["per-rank", "distributed"])
@pytest.mark.parametrize("package", [None, "petsc"])
def test_modes_sharing_a_factorization_are_solved_at_once(layout, package):
    """Modes that share a factorization are one batched solve (MUMPS's, unless a package is
    asked for), which gives what solving them one at a time gives, and the direct answer."""
    from rdgraph.solvers.petsc import direct_package
    from rdgraph.solvers.spectral import BATCHED_FACTORIZATION_MIN_MODES

    if package == "petsc" and layout == "distributed" and MPI.COMM_WORLD.size > 1:
        pytest.skip("PETSc's own LU is serial")
    N = 6 * MPI.COMM_WORLD.size  # enough modes per rank to batch
    # In double precision: batched and one-at-a-time single-precision solves round apart.
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": N},
                       model={**CASES["laplacian-unequal"],
                              "initial": "1 + 0.5*cos(pi*x[0])*sin(g + 1)"},
                       time={"dt": 1e-3, "t_end": 2e-3},
                       solver={"type": "spectral", "inner": "lu", "scalar_layout": layout,
                               "rtol": 1e-11, "factorization_precision": "double"})
    overrides = {} if package is None else {"spectral_pc_factor_mat_solver_type": package}
    sim = Simulation(settings_from_dict(data), MPI.COMM_WORLD, overrides)
    preconditioner = sim.stepper.solver.preconditioner
    local_modes = sorted(k for group in preconditioner.local_groups for k in group)
    assert len(local_modes) >= BATCHED_FACTORIZATION_MIN_MODES
    [(ksp, modes)] = preconditioner.batches  # tau*lambda_max << 1: one shared factorization
    assert sorted(modes) == local_modes
    expected = package or direct_package()
    assert ksp.getPC().getFactorSolverType() == expected

    r, batched, alone = (sim.state.duplicate() for _ in range(3))
    r.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).standard_normal(r.array.size)
    preconditioner.apply(None, r, batched)
    preconditioner.batches = [(ksp, [k]) for k in modes]
    preconditioner.apply(None, r, alone)
    assert np.allclose(batched.array, alone.array, rtol=1e-10, atol=1e-12 * alone.norm())
    preconditioner.batches = [(ksp, modes)]
    assert_run_matches_direct(sim, data)


@pytest.mark.parametrize("layout", ["per-rank", "distributed"])
@pytest.mark.parametrize("inner", ["lu", "amg"])
def test_one_cluster_of_modes_preconditions_every_vertex_alike(layout, inner):
    """When one factorization (or V-cycle) serves every mode, the preconditioner is
    ``I ⊗ A⁻¹`` with ``A`` at the geometric mean of all shifts, on every rank: apply skips the
    modal transforms and gives what the transforms give, and each vertex's block is A⁻¹ of it."""
    from rdgraph.compat import PETSc
    from rdgraph.solvers.petsc import direct_package
    from rdgraph.solvers.spectral import graph_modes

    comm = MPI.COMM_WORLD
    dt, N = 1e-3, 3 * comm.size
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": N},
                       model={**CASES["laplacian-unequal"],
                              "initial": "1 + 0.5*cos(pi*x[0])*sin(g + 1)"},
                       time={"dt": dt, "t_end": 2 * dt},
                       solver={"type": "spectral", "inner": inner, "scalar_layout": layout,
                               "rtol": 1e-11, "factorization_precision": "double"})
    sim = Simulation(settings_from_dict(data))
    preconditioner = sim.stepper.solver.preconditioner
    assert preconditioner.uniform and not preconditioner.identity
    if preconditioner.per_rank:  # ascending eigenvalues dealt in order: no reordering copy
        assert preconditioner.exchange.in_order

    r, skipped, transformed = (sim.state.duplicate() for _ in range(3))
    r.array[:] = np.random.default_rng(comm.rank).standard_normal(r.array.size)
    preconditioner.apply(None, r, skipped)
    preconditioner.uniform = False  # the transforms, around the same scalar solves
    preconditioner.apply(None, r, transformed)
    preconditioner.uniform = True
    assert np.allclose(skipped.array, transformed.array, rtol=0,
                       atol=1e-10 * transformed.norm())

    if inner == "lu":  # each vertex's block is the solve with A at the mean shift
        operators = sim.operators
        values = graph_modes(operators)[0]
        shift = np.sqrt((1 + dt * values.min()) * (1 + dt * values.max()))
        A = operators.pattern.matrix(shift * operators.mass
                                     + dt * operators.average_stiffness(), comm)
        ksp = PETSc.KSP().create(comm)
        ksp.setOperators(A)
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType(direct_package())
        b, x = A.createVecs()
        n = operators.layout.size_local
        for g in range(N):
            b.array[:] = r.array[g * n:(g + 1) * n]
            ksp.solve(b, x)
            assert np.allclose(skipped.array[g * n:(g + 1) * n], x.array, rtol=0,
                               atol=1e-10 * x.norm())
        for obj in (ksp, A, b, x):
            obj.destroy()
    assert_run_matches_direct(sim, data)


def test_factorization_count_follows_the_shift_clusters():
    from rdgraph.solvers.spectral import SHARED_FACTORIZATION_SPAN, factorization_count

    values = np.array([0.0, 1.0, 1.0, 3.0, 4.0])  # one repeated eigenvalue
    assert factorization_count(values, 1.0, 1e-3, per_eigenvalue=True) == 4  # one per eigenvalue
    assert factorization_count(values, 1.0, 1e-3, per_eigenvalue=False) == 1  # shifts 1 ... 1.004
    span = SHARED_FACTORIZATION_SPAN
    # shifts 1, 1 + b, 1 + 3b, 1 + 4b with b = span - 1: clusters {0, 1}, {3, 4}
    assert factorization_count(values, 1.0, span - 1.0, per_eigenvalue=False) == 2
    assert factorization_count(values, 1.0, 100.0, per_eigenvalue=False) == 4


def test_deal_groups_balances_modes_and_keeps_groups_whole():
    from rdgraph.solvers.mode_exchange import deal_groups

    assert deal_groups([1] * 16, 2) == [list(range(8)), list(range(8, 16))]
    assert deal_groups([1, 5], 2) == [[0], [1]]  # by the groups' midpoints
    assert deal_groups([1, 1, 1], 2) == [[0], [1, 2]]
    assert deal_groups([2, 1], 4) == [[], [0], [], [1]]  # more ranks than groups
    assert deal_groups([1, 1, 1], 1) == [[0, 1, 2]]


@pytest.mark.parametrize("in_order", [False, True])
def test_mode_exchange_round_trip(in_order):
    """Whole modal vectors arrive on their rank in global dof order, and come back, whether
    the modes are dealt in order (no reordering copy) or not."""
    from rdgraph.solvers.mode_exchange import ModeExchange, deal_groups

    comm = MPI.COMM_WORLD
    sizes = [3 + 2 * r for r in range(comm.size)]  # unequal owned sizes
    start, n = sum(sizes[: comm.rank]), sizes[comm.rank]
    N = 5
    if in_order:
        modes_of_rank = deal_groups([1] * N, comm.size)
    else:
        modes_of_rank = [[k for k in range(N) if k % comm.size == r] for r in range(comm.size)]
        modes_of_rank[0] = modes_of_rank[0][::-1]  # any order within a rank
    exchange = ModeExchange(comm, n, modes_of_rank)
    assert exchange.in_order == in_order
    modal = np.array([[1000.0 * k + start + i for i in range(n)] for k in range(N)])
    exchange.send(modal)
    whole = np.empty(sum(sizes))
    for k in exchange.modes:
        exchange.load(k, whole)
        assert np.array_equal(whole, 1000.0 * k + np.arange(sum(sizes)))
        exchange.store(k, -whole)
    back = np.zeros_like(modal)
    exchange.receive(back)
    assert np.array_equal(back, -modal)


def test_auto_deals_factorized_modes_to_ranks():
    data = make_config(mesh={"cells": [8, 8]}, graph={"kind": "path", "n": 4},
                       model=CASES["laplacian-equal"], solver={"type": "spectral"})
    sim = Simulation(settings_from_dict(data))
    described = sim.stepper.solver.options
    sim.destroy()
    assert described["inner"] == "lu"
    expected = "per-rank" if MPI.COMM_WORLD.size > 1 else "distributed"
    assert described["scalar_layout"] == expected


@pytest.mark.parametrize("graph, layout, package, strict", [
    ("path", "auto", None, False),  # one mode per solve (modes dealt to ranks on 2)
    ("path", "auto", None, True),
    ("complete", "per-rank", None, False),  # eigenvalues 0, 4, 4, 4: a batch (PETSc LU)
    ("complete", "per-rank", None, True),  # PETSc raises in the set-up
    ("complete", "per-rank", "mumps", False),
    ("complete", "distributed", "mumps", False),
])
def test_a_failing_factorization_fails_the_solve_on_every_rank(graph, layout, package, strict):
    """A singular scalar factorization, alone or serving a batch, is a SolverError on every
    rank: with modes dealt to ranks, a failure on one rank must not leave the others
    waiting."""
    from rdgraph.errors import SolverError

    data = make_config(mesh={"cells": [8, 8]}, graph={"kind": graph, "n": 4},
                       model=CASES["laplacian-equal"],
                       solver={"type": "spectral", "inner": "lu", "scalar_layout": layout})
    overrides = {} if package is None else {"spectral_pc_factor_mat_solver_type": package}
    if strict:
        overrides["spectral_ksp_error_if_not_converged"] = True
    sim = Simulation(settings_from_dict(data), MPI.COMM_WORLD, overrides)
    solver = sim.stepper.solver
    preconditioner = solver.preconditioner
    comm = MPI.COMM_WORLD
    ksp, modes = max(preconditioner.batches, key=lambda batch: len(batch[1]))
    # Modes dealt to ranks in equal shares: the three of eigenvalue 4 are cut 1 + 2.
    batch = 2 if preconditioner.per_rank else 3
    assert comm.allreduce(len(modes), op=MPI.MAX) == (1 if graph == "path" else batch)
    zero = None
    # A distributed factorization fails on all ranks; else only the last rank's.
    if comm.rank == comm.size - 1 or not preconditioner.per_rank:
        zero = ksp.getOperators()[0].duplicate()  # same pattern, no values
        zero.zeroEntries()
        zero.assemble()
        ksp.setOperators(zero)
    b = sim.state.duplicate()
    b.set(1.0)
    x = b.duplicate()
    with pytest.raises(SolverError, match=r"scalar mode \d+ did not converge \(reason DIVERGED_"):
        solver.solve(b, x)
    for obj in (b, x, zero):
        if obj is not None:
            obj.destroy()
    sim.destroy()


def test_residual_budgets_share_the_block_tolerance():
    from rdgraph.solvers.spectral import residual_budgets

    norms = np.array([3.0, 4.0, 0.0, 1e-12])
    budgets = residual_budgets(norms, 1e-6, 1e-50)
    allowed = 1e-6 * np.linalg.norm(norms)
    assert np.sum(budgets**2) == pytest.approx(allowed**2, rel=1e-12)
    assert budgets[3] > norms[3]  # a negligible mode needs no iteration
    assert budgets[1] >= allowed / (np.sqrt(2) * len(norms) ** 0.25)
    zero = residual_budgets(np.zeros(4), 1e-6, 1e-30)
    assert np.allclose(zero, 1e-30 / 2)


def _exact_amg_solver(rtol):
    data = make_config(mesh={"cells": [12, 12]}, graph={"kind": "path", "n": 6},
                       model={**CASES["laplacian-equal"],
                              "initial": "1 + 0.5*cos(pi*x[0])*sin(g + 1)"},
                       time={"dt": 0.05, "t_end": 0.05},
                       solver={"type": "spectral", "inner": "amg", "rtol": rtol})
    return Simulation(settings_from_dict(data))


def _relative_residual(solver, b, x) -> float:
    """``|b − A x| / |b|`` with the block operator itself."""
    r = b.duplicate()
    solver.matrix.mult(x, r)
    r.aypx(-1.0, b)
    ratio = r.norm() / b.norm()
    r.destroy()
    return ratio


def test_exact_iterative_spectral_solve_meets_the_block_tolerance():
    """Σ_k ‖r_k‖² ≤ (rtol ‖b‖)²: the true block residual, checked with the block operator."""
    rtol = 1e-6
    sim = _exact_amg_solver(rtol)
    solver = sim.stepper.solver
    b = sim.state.duplicate()
    b.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).random(b.getLocalSize())
    x = b.duplicate()
    x.zeroEntries()
    solver.solve(b, x)
    ratio = _relative_residual(solver, b, x)
    for v in (b, x):
        v.destroy()
    sim.destroy()
    assert ratio <= rtol * (1 + 1e-9)
    assert ratio >= 1e-3 * rtol  # not solved to round-off either: the budget is used


def test_exact_spectral_solve_corrects_a_good_guess():
    """No outer Krylov: it solves A δ = b − A x to the same absolute tolerance rtol·|b|."""
    rtol = 1e-8
    sim = _exact_amg_solver(rtol)
    solver = sim.stepper.solver
    assert solver.takes_initial_guess
    b = sim.state.duplicate()
    b.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).random(b.getLocalSize())
    x = b.duplicate()
    x.zeroEntries()
    from_zero = solver.solve(b, x)
    # A guess 1e-4 away from the solution: the modes have four orders less to reduce.
    x.array[:] *= 1 + 1e-4 * np.random.default_rng(7 + MPI.COMM_WORLD.rank).random(
        x.getLocalSize())
    from_guess = solver.solve(b, x)
    ratio = _relative_residual(solver, b, x)
    for v in (b, x):
        v.destroy()
    sim.destroy()
    assert ratio <= rtol * (1 + 1e-9)
    assert from_guess < from_zero


def test_modes_without_right_hand_side_take_no_iterations():
    """The same right-hand side on every vertex lives in the graph's constant mode only."""
    from rdgraph.solvers.spectral import graph_modes

    sim = _exact_amg_solver(1e-8)
    solver = sim.stepper.solver
    layout = sim.operators.layout
    b = sim.state.duplicate()
    block = np.random.default_rng(MPI.COMM_WORLD.rank).random(layout.size_local)
    b.array[:] = np.tile(block, layout.num_blocks)
    x = b.duplicate()
    solver.solve(b, x)
    counts = solver.preconditioner.mode_iterations
    values, _, _ = graph_modes(sim.operators)
    constant = int(np.argmin(np.abs(values)))
    others = max((n for k, n in counts.items() if k != constant), default=0)
    busiest = MPI.COMM_WORLD.allreduce(max(counts.values(), default=0), op=MPI.MAX)
    for v in (b, x):
        v.destroy()
    sim.destroy()
    assert MPI.COMM_WORLD.allreduce(others, op=MPI.MAX) == 0
    assert busiest > 0


def test_exact_amg_accepts_another_krylov_method():
    """-rd_spectral_ksp_type replaces the per-mode FGMRES, e.g. by CG."""
    from rdgraph.solvers.block import BlockSolver

    sim = _exact_amg_solver(1e-10)
    reference = sim.stepper.solver
    solver = BlockSolver(sim.operators, 1.0, 0.05, sim.settings.solver,
                         {"spectral_ksp_type": "cg"}, name="test")
    b = sim.state.duplicate()
    b.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).random(b.getLocalSize())
    x, y = b.duplicate(), b.duplicate()
    solver.solve(b, x)
    reference.solve(b, y)
    assert solver.preconditioner.solvers[0].getType() == "cg"
    error = (x - y).norm() / y.norm()
    for v in (b, x, y):
        v.destroy()
    solver.destroy()
    sim.destroy()
    assert error < 1e-8


def test_a_failed_factorization_says_why():
    """A singular matrix: the error names the factorization's failure, not only the KSP's."""
    from rdgraph.compat import PETSc
    from rdgraph.errors import SolverError
    from rdgraph.solvers.block import LinearSolver, _lu

    comm = MPI.COMM_WORLD
    A = PETSc.Mat().createAIJ(((2, None), (2, None)), nnz=1, comm=comm)
    start = A.getOwnershipRange()[0]
    A.setValue(start, start, 1.0)  # the second row of every rank stays empty: singular
    A.setValue(start + 1, start + 1, 0.0)
    A.assemble()
    solver = LinearSolver(A, _lu(), prefix="singular_", name="test solve")
    b, x = A.createVecs()
    b.set(1.0)
    with pytest.raises(SolverError, match=r"test solve: .*FACTOR_"):
        solver.solve(b, x)
    for obj in (solver, A, b, x):
        obj.destroy()


def _gibbs_steps(predict: bool):
    """Eight gibbs steps with the spectral AMG solver, with or without the predicted guess."""
    from rdgraph.timestepping.linear import TimeStepper

    data = make_config(
        mesh={"cells": [12, 12]}, graph={"kind": "path", "n": 4},
        model={**CASES["gibbs-unequal"], "initial": "1 + 0.5*cos(pi*x[0])*(g - 1.5)"},
        time={"dt": 0.02, "t_end": 0.16}, solver={"type": "spectral", "inner": "amg"})
    sim = Simulation(settings_from_dict(data))
    original = TimeStepper._predict
    try:
        if not predict:  # every solve starts from zero, as without the prediction
            TimeStepper._predict = lambda self, x, t: x.zeroEntries()
        iterations = [d.ksp_iterations for d in sim.run()[1:]]
    finally:
        TimeStepper._predict = original
    state = sim.state.array_r.copy()
    sim.destroy()
    return state, iterations


def test_krylov_solves_start_from_the_extrapolated_state():
    """2ρ^n − ρ^{n−1} starts closer than zero: fewer iterations, same tolerance."""
    state, predicted = _gibbs_steps(predict=True)
    reference, from_zero = _gibbs_steps(predict=False)
    scale = MPI.COMM_WORLD.allreduce(np.abs(reference).max(), op=MPI.MAX)
    error = MPI.COMM_WORLD.allreduce(np.abs(state - reference).max(), op=MPI.MAX)
    assert error <= 1e-9 * scale
    assert all(p <= z for p, z in zip(predicted, from_zero, strict=True))
    assert sum(predicted[2:]) < sum(from_zero[2:])  # extrapolating from the third step


def test_a_guess_worse_than_zero_is_not_used():
    data = make_config(mesh={"cells": [10, 10]}, graph={"kind": "path", "n": 3},
                       model={**CASES["laplacian-unequal"], "initial": "1 + x[0]*(g + 1)"},
                       solver={"type": "spectral", "inner": "amg", "rtol": 1e-10})
    sim = Simulation(settings_from_dict(data))
    try:
        solver = sim.stepper.solver
        assert solver.takes_initial_guess
        b = sim.state.duplicate()
        sim.stepper.mass_matrix.mult(sim.state, b)
        zero, far, exact = b.duplicate(), b.duplicate(), b.duplicate()
        zero.zeroEntries()
        from_zero = solver.solve(b, zero)
        far.array[:] = 1e6 * np.random.default_rng(MPI.COMM_WORLD.rank).random(far.getLocalSize())
        assert solver.solve(b, far) == from_zero  # dropped: the solve starts from zero
        far.axpy(-1.0, zero)
        assert far.norm() <= 1e-12 * zero.norm()
        zero.copy(exact)
        assert solver.solve(b, exact) <= 1  # a converged guess needs (next to) nothing
        for vec in (b, zero, far, exact):
            vec.destroy()
    finally:
        sim.destroy()


def _solver_for(case: str, solver: dict, overrides: dict | None = None, cells: int = 12):
    """A simulation of ``CASES[case]`` on a 4-vertex path and its block solver."""
    from rdgraph.solvers.block import BlockSolver

    data = make_config(mesh={"cells": [cells, cells]}, graph={"kind": "path", "n": 4},
                       model={**CASES[case], "initial": "1 + x[0]*(g + 1)"},
                       time={"dt": 0.05, "t_end": 0.05}, solver=solver)
    sim = Simulation(settings_from_dict(data))
    return sim, BlockSolver(sim.operators, 1.0, 0.05, sim.settings.solver, overrides,
                            name="test")


@pytest.mark.parametrize("solver", [
    {"type": "spectral", "inner": "amg"},
    {"type": "krylov", "ksp_type": "fgmres", "pc_type": "bjacobi"},
], ids=["spectral-amg", "krylov-fgmres"])
def test_right_preconditioned_solves_correct_the_guess(solver):
    """FGMRES tests the true residual: it solves for the correction to a guess, from the
    residual computed to judge that guess, to the same tolerance rtol·|b|."""
    rtol = 1e-8
    sim, block_solver = _solver_for("laplacian-unequal", {**solver, "rtol": rtol})
    ksp = block_solver._solver.ksp
    assert ksp.getType() == "fgmres"
    assert block_solver._corrects_guess and not ksp.getInitialGuessNonzero()
    b = sim.state.duplicate()
    b.array[:] = np.random.default_rng(MPI.COMM_WORLD.rank).random(b.getLocalSize())
    x = b.duplicate()
    x.zeroEntries()
    from_zero = block_solver.solve(b, x)
    assert _relative_residual(block_solver, b, x) <= rtol * (1 + 1e-9)
    x.array[:] *= 1 + 1e-4 * np.random.default_rng(7 + MPI.COMM_WORLD.rank).random(
        x.getLocalSize())
    from_guess = block_solver.solve(b, x)
    ratio = _relative_residual(block_solver, b, x)
    assert block_solver.solve(b, x) == 0  # a guess that meets the tolerance is kept as is
    for obj in (b, x, block_solver):
        obj.destroy()
    sim.destroy()
    assert ratio <= rtol * (1 + 1e-9)
    assert from_guess < from_zero


def _finest_smoother_max_it(pc) -> int:
    return pc.getMGSmoother(pc.getMGLevels() - 1).getTolerances()[3]


def test_options_read_at_set_up_reach_the_solver():
    """Level smoothers (and factorizations) read their options when the preconditioner is
    set up, after ``configure_ksp`` has cleaned the options database again."""
    from rdgraph.compat import PETSc

    database = PETSc.Options()
    before = database.getAll()
    solver = {"type": "krylov", "ksp_type": "gmres", "pc_type": "gamg"}
    sim, block_solver = _solver_for("laplacian-unequal", solver, {"mg_levels_ksp_max_it": 1},
                                    cells=24)
    pc = block_solver._solver.ksp.getPC()
    assert pc.getMGLevels() > 1 and _finest_smoother_max_it(pc) == 1
    block_solver.destroy()
    sim.destroy()

    solver = {"type": "spectral", "inner": "amg"}
    sim, block_solver = _solver_for("laplacian-equal", solver,
                                    {"spectral_mg_levels_ksp_max_it": 1}, cells=24)
    spectral = block_solver.preconditioner
    hierarchies = [ksp.getPC() for ksp in [*spectral._shared, *spectral.solvers]
                   if ksp.getPC().getType() == "gamg"]
    assert hierarchies and all(_finest_smoother_max_it(pc) == 1 for pc in hierarchies)
    # rdgraph's own level defaults (SOR) are read at set-up too.
    assert all(pc.getMGSmoother(pc.getMGLevels() - 1).getPC().getType() == "sor"
               for pc in hierarchies)
    block_solver.destroy()
    sim.destroy()

    if PETSc.Sys.hasExternalPackage("mumps"):  # read when the factorization is made
        sim, block_solver = _solver_for("laplacian-unequal", {"type": "direct"},
                                        {"mat_mumps_icntl_14": 77})
        factor = block_solver._solver.ksp.getPC().getFactorMatrix()
        assert factor.getMumpsIcntl(14) == 77
        block_solver.destroy()
        sim.destroy()

    # A block's own options win over the defaults of the fieldsplit blocks.
    sim, block_solver = _solver_for("laplacian-unequal", {"type": "fieldsplit"},
                                    {"fieldsplit_v1_pc_type": "jacobi"})
    blocks = block_solver._solver.ksp.getPC().getFieldSplitSubKSP()
    assert [ksp.getPC().getType() for ksp in blocks] == ["lu", "jacobi", "lu", "lu"]
    block_solver.destroy()
    sim.destroy()
    assert database.getAll() == before  # and the options database is left as found


SHELL_CASES = {
    # model, graph, solver; and whether the vertex blocks are applied as shared parts
    "equal": ({"potential": "(x[0] - 0.3)**2"}, {}, {}, True),
    "separable": ({"potential": "(g + 1)/4*(x[0] - 0.3)**2 + g*x[1]"}, {}, {}, True),
    "per-vertex": ({"potential": "sin((g + 1)*x[0]) + x[1]"}, {}, {}, False),
    "dense-graph": ({"potential": "(g + 1)*x[0]"}, {"kind": "complete"}, {}, True),
    "gibbs-per-edge": ({"coupling": "gibbs", "potential": "(g + 1)*x[0]"}, {},
                       {"gibbs_coupling": "per-edge"}, False),
}


@pytest.mark.parametrize("case", list(SHELL_CASES))
@pytest.mark.parametrize("coefficients", [(1.0, 0.05), (1.0, 0.0), (0.0, 1.0), (0.7, 3.0)])
def test_matrix_free_shell_equals_assembled_matrix(case, coefficients):
    from conftest import shell_mismatch

    model, graph, solver, shared = SHELL_CASES[case]
    data = make_config(graph={"kind": "path", "n": 4, **graph},
                       model={"coupling": "laplacian", "beta": 0.5, **model},
                       solver={"type": "spectral", **solver})
    sim = Simulation(settings_from_dict(data))
    try:
        assert shell_mismatch(sim.operators, *coefficients) <= 1e-13
        shell = sim.stepper.solver.matrix.getPythonContext()
        assert (shell.first is not None) == shared  # the representation under test
    finally:
        sim.destroy()


@pytest.mark.parametrize("scheme", ["accelerated", "jko"])
def test_newton_options_reach_the_factorization_and_leave_no_trace(scheme):
    """The SNES sets its linear solver up in its first solve: options read only then (MUMPS
    ICNTLs) must reach it, and none may stay in PETSc's database for the next simulation."""
    from rdgraph.compat import PETSc
    from rdgraph.solvers.petsc import direct_package

    if direct_package() != "mumps":
        pytest.skip("needs MUMPS")
    database = PETSc.Options()
    before = database.getAll()
    if scheme == "accelerated":
        data = make_config(time={"scheme": "accelerated", "dt": 0.1, "t_end": 0.2},
                           solver={"petsc_options": {"acc_mat_mumps_icntl_14": 77}})
    else:
        data = make_config(model={"coupling": "gibbs", "beta": 0.5, "potential": "x[0]*g"},
                           time={"scheme": "jko", "dt": 0.1, "t_end": 0.2},
                           solver={"petsc_options": {"mat_mumps_icntl_14": 77}})
    sim = Simulation(settings_from_dict(data))
    try:
        sim.advance()
        stepper = sim.stepper
        snes = stepper.problem.solver if scheme == "accelerated" else stepper.solver.snes
        assert snes.getKSP().getPC().getFactorMatrix().getMumpsIcntl(14) == 77
    finally:
        sim.destroy()
    assert database.getAll() == before


def test_newton_solvers_alive_together_keep_their_own_options():
    """Two simulations built before either solves: each factorization gets its own ICNTL, and
    an option already in the database (as from the command line) is kept."""
    from rdgraph.compat import PETSc
    from rdgraph.solvers.petsc import direct_package

    if direct_package() != "mumps":
        pytest.skip("needs MUMPS")
    database = PETSc.Options()
    database.setValue("rd_mat_mumps_icntl_14", "33")
    sims = []
    try:
        for value in (77, 55):
            data = make_config(model={"coupling": "gibbs", "beta": 0.5, "potential": "x[0]*g"},
                               time={"scheme": "jko", "dt": 0.1, "t_end": 0.2},
                               solver={"petsc_options": {"mat_mumps_icntl_14": value}})
            sims.append(Simulation(settings_from_dict(data)))
        for sim, value in zip(sims, (77, 55), strict=True):
            sim.advance()
            factor = sim.stepper.solver.snes.getKSP().getPC().getFactorMatrix()
            assert factor.getMumpsIcntl(14) == value
        assert database.getString("rd_mat_mumps_icntl_14") == "33"
    finally:
        for sim in sims:
            sim.destroy()
        database.delValue("rd_mat_mumps_icntl_14")
