"""The spectral solver on product and large graphs: factor-wise transforms, the grouping of
modes, the product surrogate for gibbs, the per-vertex shifts of large graphs without
product structure, and auto's choice for many vertices. Every test runs serially and under
``mpiexec -n 2``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.problem import graph as graphs
from rdgraph.problem.config import SolverSettings, settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.solvers import spectral
from rdgraph.solvers.block import AUTO_DIRECT_MAX, krylov_restart, resolve_solver
from rdgraph.solvers.mode_exchange import deal_groups
from rdgraph.solvers.spectral import (
    DenseModes,
    DiagonalModes,
    ProductModes,
    coupling_modes,
    coupling_transform,
    factorization_count,
    main_effects,
)


def hamming_laplacian(dim: int, q: int) -> np.ndarray:
    """H(dim, q)'s Laplacian from its words (not by rdgraph)."""
    words = list(itertools.product(range(q), repeat=dim))
    L = np.array([[-float(sum(x != y for x, y in zip(a, b, strict=True)) == 1) for b in words]
                  for a in words])
    L[np.diag_indices(len(words))] = -L.sum(axis=1)
    return L


@pytest.mark.parametrize("merged", [1, 9, 32])
@pytest.mark.parametrize("graph", [graphs.hamming(3, 3),
                                   graphs.product([graphs.path(3), graphs.complete(4)])],
                         ids=["H(3,3)", "path3xK4"])
def test_factor_wise_transforms_equal_the_dense_ones(graph, merged, monkeypatch):
    # Factors applied one by one (1), merged in pairs (9), all in one (32).
    monkeypatch.setattr(spectral, "MERGED_FACTOR_SIZE", merged)
    transform = coupling_transform(graph, "laplacian")
    assert len(transform._factors) == {1: len(graph.product_spectrum().shape), 9: 2,
                                       32: 1}[merged]
    assert isinstance(transform, ProductModes) and transform.exact
    R = np.random.default_rng(1).standard_normal((graph.n, 6))
    modes = transform.to_modes(R, np.empty_like(R))
    L = graph.laplacian()
    # P Λ P⁻¹ = L, and P⁻¹ P = I, without an N × N matrix.
    back = transform.from_modes(transform.values[:, None] * modes, np.empty_like(R))
    assert np.abs(back - L @ R).max() < 1e-12
    assert np.abs(transform.from_modes(modes, np.empty_like(R)) - R).max() < 1e-13
    # The modes of the dense eigendecomposition's eigenvalues span the same spaces.
    values, Q = np.linalg.eigh(L)
    assert np.allclose(np.sort(transform.values), values, atol=1e-12)


def test_h65_groups_into_7_factorizations_without_dense_matrices():
    graph = graphs.hamming(6, 5)
    transform = coupling_transform(graph, "laplacian")
    assert isinstance(transform, ProductModes)
    assert factorization_count(transform.values, 1.0, 0.05, per_eigenvalue=True) == 7
    groups = spectral._group(np.asarray(transform.values))
    assert [len(g) for g in groups] == [1, 24, 240, 1280, 3840, 6144, 4096]
    # Dealt to 2 ranks in equal shares: the 6144-mode group is cut, one more factorization.
    split = spectral._split_at_shares(groups, 2)
    dealt = deal_groups([len(g) for g in split], 2)
    shares = [sum(len(split[i]) for i in owned) for owned in dealt]
    assert shares == [7812, 7813] and len(split) == 8


def test_gibbs_transforms_beyond_the_dense_limits(monkeypatch):
    graph = graphs.hamming(3, 3)
    offsets = np.linspace(0.0, 1.0, graph.n)
    integrals = np.exp(-offsets / 0.5)
    assert isinstance(coupling_transform(graph, "gibbs", integrals), DenseModes)
    monkeypatch.setattr(spectral, "DENSE_GIBBS_MAX", 8)
    surrogate = coupling_transform(graph, "gibbs", integrals)
    assert isinstance(surrogate, ProductModes) and not surrogate.exact
    # Equal integrals: the chain is the Laplacian, and the surrogate is exact.
    equal = coupling_transform(graph, "gibbs", np.ones(graph.n))
    assert np.allclose(np.sort(equal.values), np.sort(graph.eigenvalues()), atol=1e-12)
    monkeypatch.setattr(spectral, "DENSE_LIMIT", 8)
    path = graphs.path(12)
    per_vertex = coupling_transform(path, "laplacian")
    assert isinstance(per_vertex, DiagonalModes) and np.array_equal(per_vertex.values,
                                                                     path.degrees())


def test_main_effects_project_on_sums_of_one_function_per_factor():
    shape = (3, 4, 2)
    rng = np.random.default_rng(3)
    values = rng.standard_normal(shape).ravel()
    mean, effects = main_effects(values, shape)
    fitted = mean + sum(np.expand_dims(e, [j for j in range(3) if j != i])
                        for i, e in enumerate(effects))
    residual = values.reshape(shape) - fitted
    # Orthogonal to every function of one factor: zero means along all other axes.
    for i in range(3):
        assert np.abs(residual.mean(axis=tuple(j for j in range(3) if j != i))).max() < 1e-14
    additive = fitted.ravel()
    again_mean, again = main_effects(additive, shape)
    assert np.isclose(again_mean, mean) and all(np.allclose(a, e) for a, e in
                                                zip(again, effects, strict=True))


@pytest.mark.parametrize("graph", [graphs.hamming(3, 3),
                                   graphs.product([graphs.path(3), graphs.complete(4)])],
                         ids=["H(3,3)", "path3xK4"])
def test_gibbs_surrogate_is_exact_for_offsets_additive_over_the_factors(graph, monkeypatch):
    """log π̄ a sum of one function per factor: the product surrogate is the chain itself
    (checked against the dense eigendecomposition of the chain); other offsets: not."""
    monkeypatch.setattr(spectral, "DENSE_GIBBS_MAX", 4)
    shape = graph.product_spectrum().shape
    words = np.array(np.unravel_index(np.arange(graph.n), shape)).T
    rng = np.random.default_rng(2)
    additive = sum(rng.uniform(size=q)[words[:, i]] for i, q in enumerate(shape))
    R = rng.standard_normal((graph.n, 3))
    for offsets, exact in ((additive, True), (additive + rng.uniform(size=graph.n), False)):
        integrals = np.exp(-offsets / 0.3)
        transform = coupling_transform(graph, "gibbs", integrals)
        assert isinstance(transform, ProductModes) and not transform.exact
        values, P, P_inverse = coupling_modes(graph, "gibbs", integrals)
        chain = P @ np.diag(values) @ P_inverse
        modes = transform.to_modes(R, np.empty_like(R))
        assert np.abs(transform.from_modes(modes, np.empty_like(R)) - R).max() < 1e-12
        applied = transform.from_modes(transform.values[:, None] * modes, np.empty_like(R))
        error = np.abs(applied - chain @ R).max() / np.abs(chain @ R).max()
        assert (error < 1e-12) if exact else (error > 1e-3), error
        assert transform.values.min() >= 0.0


@pytest.mark.parametrize("graph", [graphs.hamming(3, 4),
                                   graphs.product([graphs.path(6), graphs.complete(4)])],
                         ids=["H(3,4)", "path6xK4"])
def test_an_indefinite_main_effects_surrogate_gives_way_to_the_mean_shift(graph, monkeypatch):
    """Offsets spread over 20 β: the main effects would make the surrogate indefinite (the
    chain never is), so only the mean excess is kept."""
    monkeypatch.setattr(spectral, "DENSE_GIBBS_MAX", 4)
    offsets = np.random.default_rng(5).uniform(0.0, 20.0, graph.n)  # in units of β
    integrals = np.exp(-offsets)
    shape = graph.product_spectrum().shape
    root = np.sqrt(integrals / integrals.max())
    excess = (graph.matrix @ root) / root - graph.degrees()
    mean, effects = main_effects(excess, shape)
    lowest = mean + sum(np.linalg.eigvalsh(factor.laplacian() + np.diag(effect))[0]
                        for factor, effect in zip(graph.factors, effects, strict=True))
    assert lowest < -0.01 * excess.max()  # the main-effects surrogate would be indefinite
    transform = coupling_transform(graph, "gibbs", integrals)
    expected = np.sort(graph.product_spectrum().values + mean)
    assert np.allclose(np.sort(transform.values), expected, rtol=1e-12, atol=1e-12)


def test_auto_never_factorizes_many_vertices_whole():
    auto = SolverSettings()
    assert resolve_solver(auto, 64, AUTO_DIRECT_MAX // 64, False)[0] == "direct"
    # The hypercube of dimension 10 on 8²: 83k unknowns, below AUTO_DIRECT_MAX.
    assert 1024 * 81 <= AUTO_DIRECT_MAX
    assert resolve_solver(auto, 1024, 81, True) == ("spectral", "lu")
    assert resolve_solver(auto, 100_000, 81, False)[0] == "spectral"


def test_krylov_restart_bounds_the_basis_memory():
    assert krylov_restart(10_000) == 100
    # H(6, 5) × 32² on 2 ranks: 8.5 M unknowns per rank, 68 MB per vector.
    restart = krylov_restart(15_625 * 545)
    assert restart == 10  # 1 GiB holds 7 iterations: the minimum wins
    assert krylov_restart(10**6) == 67
    assert krylov_restart(10**9) == 10


def h33_config(coupling: str, potential: str, dt: float, t_end: float, solver: dict) -> dict:
    return make_config(
        mesh={"shape": "rectangle", "cells": [4, 4]},
        graph={"kind": "hamming", "dim": 3, "choices": 3, "n": 27},
        model={"coupling": coupling, "beta": 0.5, "potential": potential,
               "initial": "1 + 0.5 * sin(3 * g) * x[0]"},
        time={"scheme": "implicit-euler", "dt": dt, "t_end": t_end},
        solver=solver,
    )


def test_laplacian_h33_spectral_masses_follow_the_graph_laplacian():
    dt = 0.05
    data = h33_config("laplacian", "(x[0] - 0.4)**2", dt, 0.15, {"type": "spectral"})
    sim = Simulation(settings_from_dict(data))
    assert isinstance(sim.stepper.solver.transform, ProductModes)
    assert sim.stepper.solver.exact
    m = np.array([d.vertex_masses for d in sim.run()])
    L = hamming_laplacian(3, 3)
    for k in range(1, len(m)):
        residual = (np.eye(27) + dt * L) @ m[k] - m[k - 1]
        assert np.abs(residual).max() <= 1e-11 * np.abs(m[k]).max(), (k, residual)
    sim.destroy()


@pytest.mark.parametrize("where", ["surrogate", "per-vertex"])
def test_gibbs_offsets_reach_the_gibbs_state_with_large_graph_transforms(monkeypatch, where):
    """The product surrogate (gibbs, forced beyond its limit) and the per-vertex shifts
    (forced on a complete graph) precondition FGMRES: the answer is the true operator's."""
    if where == "surrogate":
        monkeypatch.setattr(spectral, "DENSE_GIBBS_MAX", 8)
        data = h33_config("gibbs", "(x[0] - 0.3)**2 + 0.25 * sin(g)", 2.0, 60.0,
                          {"type": "spectral"})
        expected_type = ProductModes
    else:
        monkeypatch.setattr(spectral, "DENSE_LIMIT", 4)
        data = h33_config("gibbs", "(x[0] - 0.3)**2 + 0.25 * sin(g)", 2.0, 60.0,
                          {"type": "spectral"})
        data["graph"] = {"kind": "complete", "n": 9}
        expected_type = DiagonalModes
    sim = Simulation(settings_from_dict(data))
    solver = sim.stepper.solver
    assert isinstance(solver.transform, expected_type) and not solver.exact
    history = sim.run()
    first, last = history[0], history[-1]
    # The stationary correction leaves each preconditioned residual without mass.
    assert solver.preconditioner.coarse is not None
    assert abs(last.mass - first.mass) <= 1e-12 * first.mass
    assert max(d.ksp_iterations for d in history[1:]) <= 20
    fractions = last.vertex_masses / last.mass
    assert np.abs(fractions - sim.model.gibbs_fractions).max() < 1e-8
    sim.destroy()
    MPI.COMM_WORLD.Barrier()


def final_state(data: dict) -> tuple[np.ndarray, int, Simulation]:
    """The owned nodal values after running ``data``, the most iterations of a step, and the
    simulation (to destroy)."""
    sim = Simulation(settings_from_dict(data))
    history = sim.run()
    return sim.state.array_r.copy(), max(d.ksp_iterations for d in history[1:]), sim


@pytest.mark.parametrize("coupling", ["laplacian", "gibbs"])
def test_product_graph_spectral_steps_equal_the_direct_solves(monkeypatch, coupling):
    """H(3, 3) × 4²: the exact factor-wise solve (laplacian, one potential) and the product
    surrogate under FGMRES with the one-product coarse correction (gibbs with per-vertex
    offsets, forced beyond DENSE_GIBBS_MAX) give the direct solver's states; the exchange of
    modes out of eigenvalue order runs on 2 ranks."""
    monkeypatch.setattr(spectral, "DENSE_GIBBS_MAX", 8)
    potential = "(x[0] - 0.3)**2" + (" + 0.25 * sin(g)" if coupling == "gibbs" else "")
    dt = 2.0 if coupling == "gibbs" else 0.05
    states = {}
    for kind in ("spectral", "direct"):
        data = h33_config(coupling, potential, dt, 3 * dt, {"type": kind, "rtol": 1e-12})
        states[kind], iterations, sim = final_state(data)
        if kind == "spectral":
            solver = sim.stepper.solver
            assert isinstance(solver.transform, ProductModes)
            assert solver.exact == (coupling == "laplacian")
            # Exact: one pass; the surrogate with the coarse correction: few iterations.
            assert iterations <= (1 if coupling == "laplacian" else 25), iterations
        sim.destroy()
    scale = MPI.COMM_WORLD.allreduce(np.abs(states["direct"]).max(), op=MPI.MAX)
    error = MPI.COMM_WORLD.allreduce(np.abs(states["spectral"] - states["direct"]).max(),
                                     op=MPI.MAX)
    assert error <= 1e-9 * scale, error
