"""Energies and Gibbs weights at the quadrature points, for all vertices at once.

The free energy and relative entropy of every vertex, and the Gibbs integrals, come from the
densities and potentials at the quadrature points in batches of vertices. They must equal
the per-vertex assembly of the UFL forms (same rule, owned cells) to rounding, for P1 and P2,
laplacian and gibbs, one shared potential, separable and non-separable potentials in ``g``,
per-vertex data and a Python callable; and the vectorized set-up must give the nodal values
and Gibbs weights that vertex-by-vertex evaluation gives. Small meshes and graphs: every test
runs serially and under ``mpiexec -n 2``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

COMM = MPI.COMM_WORLD
BOWL = "(x[0] - 0.3)**2 + (x[1] - 0.6)**2"
# ∫ over the unit square of BOWL: ((0.7³ + 0.3³) + (0.4³ + 0.6³)) / 3.
BOWL_INTEGRAL = (0.7**3 + 0.3**3 + 0.4**3 + 0.6**3) / 3
N = 6
LOSS = np.linspace(0.0, 1.0, N) ** 2


@pytest.fixture(scope="module")
def loss_file():
    """A CSV file of per-vertex losses, written by rank 0 and seen by every rank."""
    folder = tempfile.mkdtemp(prefix="rdgraph-energies-") if COMM.rank == 0 else None
    folder = Path(COMM.bcast(folder, root=0))
    path = folder / "loss.csv"
    if COMM.rank == 0:
        path.write_text("loss\n" + "".join(f"{float(value)!r}\n" for value in LOSS))
    COMM.Barrier()
    yield str(path)
    COMM.Barrier()
    if COMM.rank == 0:
        shutil.rmtree(folder)


def _settings(degree: int, coupling: str, potential: str, data: str | None = None,
              cells: int = 5):
    model = {"coupling": coupling, "beta": 0.4, "potential": potential,
             "initial": "1 + 0.5*cos(pi*x[0])*(g + 1)/6"}
    if data is not None:
        model["data"] = data
    return settings_from_dict({
        "mesh": {"shape": "rectangle", "cells": [cells, cells]},
        "space": {"degree": degree},
        "graph": {"kind": "cycle", "n": N},
        "model": model,
        "time": {"scheme": "implicit-euler", "dt": 0.05, "t_end": 0.05},
        "solver": {"type": "direct"},
        "output": {"fields_every": 0},
    })


def _assembled(model, blocks: np.ndarray, total_mass: float) -> np.ndarray:
    """The ``(2, N)`` energies by assembling the UFL forms vertex by vertex (the reference)."""
    log_reference = np.log(model.gibbs_integrals.sum()) - np.log(total_mass)
    local = model._assembled_energies(blocks, log_reference)
    return COMM.allreduce(local, op=MPI.SUM)


def _vary(sim) -> None:
    """A state with ρ ≤ 0 at some nodes (the forms count ρ log ρ as 0 there) and a
    different shape per vertex."""
    x = sim.model.V.tabulate_dof_coordinates()[: sim.layout.size_local]
    blocks = sim.nodal_values()
    for g in range(sim.graph.n):
        blocks[g] = 0.2 + (g + 1) * np.cos(3 * np.pi * x[:, 0]) * x[:, 1] / 4


POTENTIALS = {
    "shared": BOWL,
    "separable": f"{BOWL} + 0.3*g*x[0]",
    "not separable": "exp(-(x[0] - 0.2*g)**2) + x[1]**2",
    "data": f"{BOWL} + 0.5*loss[g]",
    "data, not separable": "exp(-(x[0] - loss[g])**2) + x[1]**2",
}


@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("coupling", ["laplacian", "gibbs"])
# "data" (separable) takes the path of "separable"; its nodal values and weights are below.
@pytest.mark.parametrize("kind", [kind for kind in POTENTIALS if kind != "data"])
def test_energies_at_points_equal_the_assembled_forms(degree, coupling, kind, loss_file):
    data = loss_file if kind.startswith("data") else None
    sim = Simulation(_settings(degree, coupling, POTENTIALS[kind], data), COMM)
    try:
        model = sim.model
        assert model.point_values() is not None
        assert (model.potential_separation is None) == (kind == "shared"
                                                        or kind.endswith("not separable"))
        for vary in (False, True):
            if vary:
                _vary(sim)
            blocks = sim.nodal_values()
            total = float(sim.recorder.vertex_masses(sim.state).sum())
            free, relative = model.vertex_energies(blocks, total)
            reference = _assembled(model, blocks, total)
            scale = np.abs(reference).max()
            np.testing.assert_allclose(free, reference[0], rtol=1e-12, atol=1e-13 * scale)
            np.testing.assert_allclose(relative, reference[1], rtol=1e-12, atol=1e-13 * scale)
            d = sim.diagnostics()
            assert d.free_energy == pytest.approx(reference[0].sum(), rel=1e-12)
            assert d.rel_entropy == pytest.approx(reference[1].sum(), rel=1e-12, abs=1e-13)
    finally:
        sim.destroy()


@pytest.mark.parametrize("degree", [1, 2])
def test_free_energy_of_a_constant_density_is_exact(degree):
    """ρ_g ≡ c: F = N (β c log c + c ∫V), the bowl integrated exactly by the rule."""
    sim = Simulation(_settings(degree, "laplacian", BOWL), COMM)
    try:
        c = 0.7
        sim.nodal_values()[:] = c
        d = sim.diagnostics()
        beta = sim.model.beta_value
        assert d.free_energy == pytest.approx(N * (beta * c * np.log(c) + c * BOWL_INTEGRAL),
                                              rel=1e-13)
    finally:
        sim.destroy()


def test_python_potential_uses_its_interpolant():
    """A Python callable enters the forms as its interpolant: the points see B V_g."""
    def potential(x, g):
        return np.sin(2 * x[0] + g) * x[1] + 0.1 * g

    sim = Simulation(_settings(2, "gibbs", BOWL), COMM, potential=potential)
    try:
        model = sim.model
        _vary(sim)
        blocks = sim.nodal_values()
        total = float(sim.recorder.vertex_masses(sim.state).sum())
        free, relative = model.vertex_energies(blocks, total)
        reference = _assembled(model, blocks, total)
        np.testing.assert_allclose(free, reference[0], rtol=1e-12)
        np.testing.assert_allclose(relative, reference[1], rtol=1e-12, atol=1e-13)
        assembled = COMM.allreduce(model._assembled_gibbs_integrals(), op=MPI.SUM)
        np.testing.assert_allclose(model.gibbs_integrals, assembled, rtol=1e-13)
    finally:
        sim.destroy()


@pytest.mark.parametrize("kind", ["separable", "not separable", "data", "data, not separable"])
def test_gibbs_integrals_and_nodal_values_match_vertex_by_vertex(kind, loss_file):
    """The set-up's batched evaluation gives what one vertex at a time gives."""
    data = loss_file if kind.startswith("data") else None
    sim = Simulation(_settings(1, "gibbs", POTENTIALS[kind], data), COMM)
    try:
        model = sim.model
        assembled = COMM.allreduce(model._assembled_gibbs_integrals(), op=MPI.SUM)
        np.testing.assert_allclose(model.gibbs_integrals, assembled, rtol=1e-13)
        nodes = model.V.tabulate_dof_coordinates().T
        for g in range(N):
            potential = model.potentials.evaluate(nodes, g=g)
            np.testing.assert_allclose(model.potential_nodal(g), potential, rtol=1e-14,
                                       atol=1e-14)
            initial = model.initials.evaluate(nodes, g=g)
            np.testing.assert_allclose(model.initial_nodal(g), initial, rtol=1e-14)
    finally:
        sim.destroy()


def test_a_nonfinite_vertex_is_named():
    """The vectorized finiteness check still names the first vertex that fails."""
    with pytest.raises(InputError, match=r"for vertex g = 3"):
        Simulation(_settings(1, "laplacian", "1/(g - 3) + x[0]"), COMM)
