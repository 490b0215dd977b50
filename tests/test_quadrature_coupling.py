"""gibbs weighted-mass coupling applied from the quadrature points (no per-edge matrices)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config, shell_mismatch

from rdgraph.compat import MPI, dolfinx
from rdgraph.discretization.blocks import BlockLayout
from rdgraph.discretization.model import Model
from rdgraph.discretization.operators import BlockOperators
from rdgraph.discretization.quadrature_coupling import QuadratureCoupling, QuadratureNotApplicable
from rdgraph.errors import InputError
from rdgraph.problem import graph as graphs
from rdgraph.problem.config import ModelSettings, SpaceSettings, settings_from_dict

COMM = MPI.COMM_WORLD
# Potentials that differ in shape, so that every M[k_gh] is a different matrix.
POTENTIAL = "(g + 1)*x[0]**2 + sin(3*g*x[1]) + 0.2*g"


def _model(graph, dim=2, degree=1, cells=6, beta=0.3, potential=POTENTIAL, potentials=None,
           cell_type=dolfinx.mesh.CellType.triangle):
    if dim == 2:
        mesh = dolfinx.mesh.create_unit_square(COMM, cells, cells, cell_type=cell_type)
    else:
        mesh = dolfinx.mesh.create_unit_cube(COMM, cells, cells, cells)
    settings = ModelSettings(coupling="gibbs", beta=beta, potential=potential,
                             potentials=potentials)
    return Model(mesh, graph, settings, SpaceSettings(degree=degree))


def _per_edge_coupling(ops: BlockOperators, blocks: np.ndarray) -> np.ndarray:
    """``C X`` from the stored per-edge matrices (``diagonal − K`` and ``off_diagonal``)."""
    comm = ops.layout.comm
    out = np.zeros_like(blocks)
    products = [(g, g, ops.diagonal[g] - ops.stiffness[g]) for g in range(ops.graph.n)]
    products += [(g, h, values) for (g, h), values in ops.off_diagonal.items()]
    for g, h, values in products:
        matrix = ops.pattern.matrix(values, comm)
        x, y = matrix.createVecs()
        x.array[:] = blocks[h]
        matrix.mult(x, y)
        out[g] += y.array_r
        for obj in (matrix, x, y):
            obj.destroy()
    return out


@pytest.mark.parametrize("graph, dim, degree, cell_type", [
    (graphs.path(4), 2, 1, dolfinx.mesh.CellType.triangle),
    (graphs.complete(5), 2, 2, dolfinx.mesh.CellType.triangle),
    (graphs.cycle(4), 2, 2, dolfinx.mesh.CellType.quadrilateral),
    (graphs.hypercube(3), 3, 1, dolfinx.mesh.CellType.triangle),
], ids=["P1-path", "P2-complete", "Q2-cycle", "P1-3d-hypercube"])
def test_quadrature_coupling_equals_the_per_edge_matrices(graph, dim, degree, cell_type):
    """Same rule as the assembled forms: the two agree to round-off, serially and in parallel."""
    model = _model(graph, dim, degree, cells=4 if dim == 3 else 6, cell_type=cell_type)
    layout = BlockLayout(model.V, graph.n)
    ops = BlockOperators(model, layout, gibbs_coupling="per-edge")
    coupling = QuadratureCoupling(model, layout)
    try:
        blocks = np.random.default_rng(COMM.rank).standard_normal((graph.n, layout.size_local))
        expected = _per_edge_coupling(ops, blocks)
        got = coupling.apply(blocks)
        scale = COMM.allreduce(np.abs(expected).max(), op=MPI.MAX)
        error = COMM.allreduce(np.abs(got - expected).max(), op=MPI.MAX)
        assert scale > 1e-3
        assert error <= 1e-12 * scale, error / scale
        # Mass: the coupling moves mass between vertices and creates none.
        total = COMM.allreduce(got.sum(axis=0) @ np.ones(layout.size_local), op=MPI.SUM)
        assert abs(total) <= 1e-12 * scale * layout.size_global
    finally:
        coupling.destroy()
        ops.destroy()


def test_shell_and_assembled_matrix_agree_with_quadrature_coupling():
    """The shell applies C from the points; ``matrix`` assembles the same blocks on demand."""
    model = _model(graphs.complete(4))
    layout = BlockLayout(model.V, 4)
    ops = BlockOperators(model, layout, gibbs_coupling="quadrature")
    try:
        assert ops.quadrature_coupling is not None and ops.off_diagonal == {}
        assert shell_mismatch(ops, 1.0, 0.05) <= 1e-13
    finally:
        ops.destroy()


def test_auto_stores_the_smaller_form():
    """Dense graphs: the quadrature form; a path: one matrix per edge is smaller."""
    for graph, quadrature in ((graphs.complete(8), True), (graphs.path(8), False)):
        model = _model(graph, cells=8)
        ops = BlockOperators(model, BlockLayout(model.V, graph.n))
        try:
            assert (ops.quadrature_coupling is not None) is quadrature
            assert (ops.off_diagonal == {}) is quadrature
        finally:
            ops.destroy()


def test_auto_falls_back_to_per_edge_when_potentials_spread_too_far():
    """Every edge's rate is in range, but a_g = exp(V_g/2β) over all g would not be."""
    # Three 5-cliques in a chain, V = 0, 500, 1000 (β = 0.5): |V_g − V_h|/2β ≤ 500 on every
    # edge, 1000 between the end cliques. Dense enough for auto to prefer the quadrature form.
    cliques = [[a + 5 * c, b + 5 * c, 1.0] for c in range(3) for a in range(5)
               for b in range(a + 1, 5)]
    graph = graphs.Graph.from_edges(15, cliques + [[4, 5, 1.0], [9, 10, 1.0]])
    # A small slope per vertex: potentials that differ by constants only have constant
    # rates, which auto applies as one sparse chain (neither per-edge nor quadrature).
    model = _model(graph, cells=8, beta=0.5, potential=None,
                   potentials=[f"{500 * (g // 5)} + {0.01 * g} * x[0]" for g in range(15)])
    with pytest.raises(QuadratureNotApplicable, match="per-edge"):
        QuadratureCoupling(model, BlockLayout(model.V, graph.n))
    ops = BlockOperators(model, BlockLayout(model.V, graph.n))
    try:
        assert ops.quadrature_coupling is None and ops.off_diagonal and ops.chain is None
    finally:
        ops.destroy()
    constant = _model(graph, cells=8, beta=0.5, potential=None,
                      potentials=[str(500 * (g // 5)) for g in range(15)])
    ops = BlockOperators(constant, BlockLayout(constant.V, graph.n))
    try:
        assert ops.chain is not None and not ops.off_diagonal
        assert ops.quadrature_coupling is None
    finally:
        ops.destroy()


def _config(solver, **space):
    return make_config(
        mesh={"cells": [10, 10]}, space=space,
        graph={"kind": "edges", "n": 4,
               "edges": [[0, 1, 3.0], [1, 2, 0.5], [2, 3, 2.0], [0, 3, 1.0], [0, 2, 1.0]]},
        model={"coupling": "gibbs", "beta": 0.5, "potential": POTENTIAL,
               "initial": "1 + 0.5*cos(pi*x[0])*(g - 1.5) + 0.1*x[1]"},
        time={"dt": 0.1, "t_end": 0.3}, solver=solver)


def _final_state(solver):
    from rdgraph.simulation import Simulation

    sim = Simulation(settings_from_dict(_config(solver)), COMM)
    try:
        history = sim.run()
        return sim.state.array_r.copy(), history, sim.solver_options
    finally:
        sim.destroy()


@pytest.mark.parametrize("solver", [
    {"type": "spectral", "inner": "lu"},
    {"type": "spectral", "inner": "amg"},
    {"type": "krylov", "ksp_type": "gmres", "pc_type": "bjacobi"},
    {"type": "direct"},
], ids=["spectral-lu", "spectral-amg", "krylov", "direct"])
def test_solvers_with_quadrature_coupling_match_per_edge_direct(solver):
    reference, ref_history, ref_options = _final_state({"type": "direct",
                                                        "gibbs_coupling": "per-edge"})
    state, history, options = _final_state({**solver, "gibbs_coupling": "quadrature",
                                            "rtol": 1e-11})
    assert ref_options["gibbs_coupling"] == "per-edge"
    assert options["gibbs_coupling"] == "quadrature"
    scale = COMM.allreduce(np.abs(reference).max(), op=MPI.MAX)
    error = COMM.allreduce(np.abs(state - reference).max(), op=MPI.MAX)
    assert error <= 1e-8 * scale, error / scale
    masses = np.array([d.vertex_masses for d in history])
    assert np.allclose(masses, [d.vertex_masses for d in ref_history], rtol=1e-9)
    assert np.allclose(masses.sum(axis=1), masses[0].sum(), rtol=1e-10)


@pytest.mark.parametrize("changes, message", [
    ({"solver": {"gibbs_coupling": "sparse"}}, "solver.gibbs_coupling"),
    ({"solver": {"gibbs_coupling": "quadrature"}, "model": {"coupling": "laplacian"}},
     "applies to coupling = 'gibbs'"),
    ({"solver": {"gibbs_coupling": "per-edge"}, "model": {"gibbs_rates": "nodal"}},
     "gibbs_rates = 'weighted-mass'"),
    ({"solver": {"gibbs_coupling": "quadrature"}, "space": {"lumping": True}},
     "space.lumping"),
])
def test_bad_gibbs_coupling_settings_are_refused(changes, message):
    data = _config({})
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    with pytest.raises(InputError, match=message):
        settings_from_dict(data)
