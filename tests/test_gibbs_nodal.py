"""gibbs with rates at the nodes (``model.gibbs_rates = "nodal"``): M diag(k) for M[k]."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config, shell_mismatch

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

# Potentials that differ in shape (not only by constants), so that M[k] and M diag(k) differ.
POTENTIAL = "(g + 1)/3*((x[0] - 0.3)**2 + x[1]**2) + 0.5*g*x[0]*x[1]"
GRAPH = {"kind": "edges", "n": 3, "edges": [[0, 1, 2.0], [1, 2, 0.5], [0, 2, 1.0]]}


def _config(rates="nodal", solver=None, cells=10, **time):
    return make_config(
        mesh={"cells": [cells, cells]}, graph=GRAPH,
        model={"coupling": "gibbs", "beta": 0.4, "potential": POTENTIAL, "gibbs_rates": rates,
               "initial": "1 + 0.5*cos(pi*x[0])*(g - 1)"},
        time={"dt": 0.05, "t_end": 0.25, **time}, solver=solver or {"type": "direct"})


def _coupling_only(sim, x):
    """``C x`` of the gibbs coupling alone: the shell of a + b(K + C) minus the K part."""
    ops = sim.operators
    shell = ops.shell(0.0, 1.0)
    y = x.duplicate()
    shell.mult(x, y)
    n = ops.layout.size_local
    K = [ops.pattern.matrix(ops.stiffness[g], ops.layout.comm) for g in range(ops.graph.n)]
    for g, matrix in enumerate(K):
        xg, yg = matrix.createVecs()
        xg.array[:] = x.array_r[g * n:(g + 1) * n]
        matrix.mult(xg, yg)
        y.array[g * n:(g + 1) * n] -= yg.array_r
        for obj in (matrix, xg, yg):
            obj.destroy()
    shell.destroy()
    return y


def test_nodal_gibbs_state_is_in_detailed_balance():
    """The coupling vanishes on the nodal Gibbs densities exp(-V_g/β), whatever the V_g."""
    sim = Simulation(settings_from_dict(_config()), MPI.COMM_WORLD)
    try:
        x = sim.state.duplicate()
        n = sim.operators.layout.size_local
        for g in range(3):
            x.array[g * n:(g + 1) * n] = np.exp(-sim.model.potential_nodal(g)[:n] / 0.4)
        y = _coupling_only(sim, x)
        assert y.norm() <= 1e-13 * x.norm()
        # The quadrature-weighted M[k] is balanced only up to the discretization error.
        y.destroy()
    finally:
        sim.destroy()


def test_shell_equals_assembled_matrix():
    sim = Simulation(settings_from_dict(_config()), MPI.COMM_WORLD)
    try:
        assert shell_mismatch(sim.operators, 1.0, 0.05) <= 1e-13
        assert sim.operators.off_diagonal == {}  # no per-edge matrices are stored
    finally:
        sim.destroy()


@pytest.mark.parametrize("solver", [{"type": "spectral", "inner": "lu"},
                                    {"type": "spectral", "inner": "amg"},
                                    {"type": "krylov", "ksp_type": "gmres", "pc_type": "bjacobi"},
                                    {"type": "fieldsplit"}],
                         ids=["spectral-lu", "spectral-amg", "krylov", "fieldsplit"])
def test_solvers_agree_and_conserve_mass(solver):
    states = []
    for s in ({"type": "direct"}, {**solver, "rtol": 1e-11}):
        sim = Simulation(settings_from_dict(_config(solver=s)), MPI.COMM_WORLD)
        history = sim.run()
        states.append(sim.state.array_r.copy())
        sim.destroy()
        masses = [d.mass for d in history]
        assert np.allclose(masses, masses[0], rtol=1e-10)
    scale = MPI.COMM_WORLD.allreduce(np.abs(states[0]).max(), op=MPI.MAX)
    error = MPI.COMM_WORLD.allreduce(np.abs(states[1] - states[0]).max(), op=MPI.MAX)
    assert error <= 1e-8 * scale


def test_nodal_and_weighted_mass_rates_converge_together():
    """The two rate discretizations differ by O(h²) (P1): the gap shrinks ~4x per halving."""
    gaps = []
    for cells in (8, 16, 32):
        masses = []
        for rates in ("nodal", "weighted-mass"):
            sim = Simulation(settings_from_dict(_config(rates, cells=cells)), MPI.COMM_WORLD)
            masses.append(sim.run()[-1].vertex_masses)
            sim.destroy()
        gaps.append(np.abs(masses[0] - masses[1]).max())
    orders = np.log2(np.array(gaps[:-1]) / gaps[1:])
    assert np.all(orders > 1.8), (gaps, orders)


@pytest.mark.parametrize("changes", [{"coupling": "laplacian"}, {"gibbs_rates": "pointwise"}])
def test_invalid_rate_settings(changes):
    data = _config()
    data["model"].update(changes)
    with pytest.raises(InputError, match="gibbs_rates"):
        settings_from_dict(data)
