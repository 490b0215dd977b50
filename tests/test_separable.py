"""Separable potentials: the same operators, Gibbs weights and solutions as vertex by vertex."""

from __future__ import annotations

import numpy as np
import pytest

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.problem.expressions import parse
from rdgraph.problem.separable import separate
from rdgraph.simulation import Simulation
from tests.conftest import make_config

RNG_POINTS = np.random.default_rng(7).uniform(-2, 2, size=(3, 50))


@pytest.mark.parametrize("source, n, rank", [
    ("(g + 1)/16*((x[0] - 0.5)**2 + (x[1] - 0.5)**2)", 16, 1),  # scaled bowls
    # shifted: x0² + x1² (one coefficient, 1), x0, x1
    ("(x[0] - 0.1*g)**2 + (x[1] + 0.2*g)**2", 8, 3),
    # wells: depth·(x0² + x1²), x0, x1 (the wells of issue 22, from data)
    ("(1 + g)*((x[0] - 0.1*g)**2 + (x[1] - 0.3*g)**2)", 8, 3),
    ("cos(x[0]) + g*x[0]*x[1] - 3*g", 5, 2),  # tilt; the constant -3g has no basis function
    ("(g - 2)*x[0]/(1 + x[1]**2) + 0.5*g", 4, 1),  # x-only denominator
    ("-(x[0]*g - x[1])**3", 6, 4),  # powers expand: x0³, x0²x1, x0x1², x1³
    ("0.5*g", 3, 0),  # constants only: equal operators up to c_0(g)
])
def test_separation_is_an_exact_rewrite(source, n, rank):
    expr = parse(source, variables=("x", "g"), gdim=2)
    separation = separate(expr, n)
    assert separation is not None and separation.rank == rank
    values = separation.evaluate(RNG_POINTS)
    expected = np.array([expr.evaluate(RNG_POINTS, g=g) for g in range(n)])
    np.testing.assert_allclose(values, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("source, n", [
    ("exp(-(x[0] - g)**2)", 8),  # a function of x and g together
    ("x[0]**g", 4),  # a power that depends on g
    ("x[0]/(g + x[1])", 4),  # a denominator mixing x and g
    ("g*x[0] + g**2*x[1] + g**3*x[0]*x[1]", 3),  # three terms are not fewer than 3 vertices
])
def test_not_separable(source, n):
    assert separate(parse(source, variables=("x", "g"), gdim=2), n) is None


def test_per_vertex_lists_share_terms():
    exprs = [parse(s, variables=("x",), gdim=2)
             for s in ("x[0]**2", "2*x[0]**2 + x[1]", "x[1] - x[0]**2", "7")]
    separation = separate(exprs, 4)
    assert separation.rank == 2
    expected = np.array([e.evaluate(RNG_POINTS) for e in exprs])
    np.testing.assert_allclose(separation.evaluate(RNG_POINTS), expected, rtol=1e-14)


def _model_config(degree, coupling, potential, shape="rectangle", cells=(10, 10)):
    return make_config(
        mesh={"shape": shape, "cells": list(cells)}, space={"degree": degree},
        graph={"kind": "path", "n": 5},
        model={"coupling": coupling, "beta": 0.3, "potential": potential,
               "initial": "1 + 0.5*cos(pi*x[0])*(g + 1)/5"},
    )


@pytest.mark.parametrize("degree, coupling, shape, cells", [
    (1, "laplacian", "rectangle", (10, 10)),
    (2, "gibbs", "rectangle", (6, 6)),
    (2, "laplacian", "interval", (12,)),
    (1, "gibbs", "box", (3, 3, 3)),
])
@pytest.mark.parametrize("shared_term", [False, True], ids=["weighted", "shared-bowl"])
def test_separated_operators_match_vertex_by_vertex_assembly(degree, coupling, shape, cells,
                                                             shared_term):
    potential = "(g + 1)/5*(x[0] - 0.5)**2 + 0.1*g*x[0]"
    if shared_term:  # the same coefficient at every vertex: joins the shared part
        potential += " + 0.7*(x[0] + 0.2)**4 + 0.3*g"
    sim = Simulation(settings_from_dict(_model_config(degree, coupling, potential, shape, cells)),
                     MPI.COMM_WORLD)
    try:
        model, operators = sim.model, sim.operators
        separation = model.potential_separation
        assert separation is not None
        varying = np.any(separation.coefficients != separation.coefficients[0], axis=0)
        assert len(operators.stiffness.parts) == 1 + int(varying.sum())
        assert separation.rank == int(varying.sum()) + shared_term
        for g in range(model.graph.n):
            model.set_vertex(g)
            expected = operators.pattern.assemble(model.stiffness_form)
            scale = np.max(np.abs(expected), initial=1.0)
            np.testing.assert_allclose(operators.stiffness[g], expected, atol=1e-13 * scale)
        # The same weights by N scalar assemblies.
        assembled = MPI.COMM_WORLD.allreduce(model._assembled_gibbs_integrals(), op=MPI.SUM)
        np.testing.assert_allclose(model.gibbs_integrals, assembled, rtol=1e-13)
    finally:
        sim.destroy()


@pytest.mark.parametrize("coupling", ["laplacian", "gibbs"])
def test_a_temperature_change_keeps_the_shared_part_exact(coupling):
    """The shared part holds β S and the drifts common to all vertices; set_beta moves it
    by (β − β0) S alone, which must equal a fresh assembly at the new β."""
    potential = "(x[1] - 0.4)**2 + (g + 1)/5*(x[0] - 0.5)**2 + 0.3*g"
    sim = Simulation(settings_from_dict(_model_config(1, coupling, potential, cells=(6, 6))),
                     MPI.COMM_WORLD)
    try:
        model, operators = sim.model, sim.operators
        assert len(operators.stiffness.parts) == 2  # diffusion and bowl; one weighted drift
        for beta in (0.7, 0.2):
            operators.set_beta(beta)
            for g in range(model.graph.n):
                model.set_vertex(g)
                expected = operators.pattern.assemble(model.stiffness_form)
                scale = np.max(np.abs(expected), initial=1.0)
                np.testing.assert_allclose(operators.stiffness[g], expected, atol=1e-13 * scale)
    finally:
        sim.destroy()


@pytest.mark.parametrize("solver", ["spectral", "krylov", "direct"])
def test_separated_run_matches_unseparated(solver):
    """The same trajectory whether the potentials are separated or assembled one by one."""
    # Written twice: once separable, once with a factor exp(0*g*x[0]) that defeats separation
    # but changes no value.
    separable = "(g + 1)/5*((x[0] - 0.5)**2 + (x[1] - 0.5)**2)"
    opaque = f"{separable}*exp(0*g*x[0])"
    finals = []
    for potential in (separable, opaque):
        config = _model_config(1, "laplacian", potential)
        config["solver"] = {"type": solver, "rtol": 1e-12}
        config["time"] = {"scheme": "crank-nicolson", "dt": 0.01, "t_end": 0.05}
        sim = Simulation(settings_from_dict(config), MPI.COMM_WORLD)
        try:
            assert (sim.model.potential_separation is not None) == (potential == separable)
            sim.run()
            finals.append(sim.state.array_r.copy())
            rows = sim.diagnostics()
        finally:
            sim.destroy()
        finals.append(np.array([rows.free_energy, rows.rel_entropy]))
    np.testing.assert_allclose(finals[0], finals[2], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(finals[1], finals[3], rtol=1e-12)
