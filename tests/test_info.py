"""``rdgraph info``: versions, sizes, solver choice and spectra, without a run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_config, write_config

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.problem.config import SolverSettings
from rdgraph.solvers.block import AUTO_DIRECT_MAX, LU_MAX_DOFS, LU_MAX_DOFS_EXACT, resolve_solver


def info(capsys, *arguments: str) -> tuple[int, str]:
    status = main(["info", *arguments])
    return status, capsys.readouterr().out


def config_file(folder, name: str, **sections) -> str:
    """A config file ``folder/name.toml``: conftest's base config with ``sections``."""
    return write_config(folder / f"{name}.toml", make_config(**sections))


def test_path_graph_sizes_and_spectrum(capsys, shared_tmp):
    n = 5
    path = config_file(shared_tmp, "path", mesh={"cells": [8, 8]}, space={"degree": 2},
                       graph={"kind": "path", "n": n}, time={"dt": 0.05, "t_end": 1.0},
                       solver={"type": "auto"})
    status, text = info(capsys, path, "--json")
    assert status == 0
    if MPI.COMM_WORLD.rank != 0:
        assert text == ""
        return
    report = json.loads(text)
    assert report["ranks"] == MPI.COMM_WORLD.size
    assert report["mesh"]["cells"] == 2 * 8 * 8
    assert report["dofs_per_vertex"] == 17 * 17  # P2 on an 8 x 8 square
    assert report["unknowns"] == n * 17 * 17
    assert report["graph"] == {"kind": "path", "vertices": n, "edges": n - 1, "components": 1}
    assert report["steps"] == 20
    exact = 2 - 2 * np.cos(np.arange(n) * np.pi / n)
    assert np.allclose(report["laplacian_eigenvalues"], exact, atol=1e-12)
    assert report["spectral_gap"] == pytest.approx(exact[1], rel=1e-12)
    assert report["solver"] == {"type": "direct", "configured": "auto", "package": "mumps"}
    for key in ("rdgraph", "dolfinx", "petsc", "petsc4py", "mpi", "mpi4py", "python"):
        assert report["versions"][key]
    assert "gibbs_chain_eigenvalues" not in report


def test_text_report(capsys, shared_tmp):
    path = config_file(shared_tmp, "cycle", mesh={"cells": [64, 64]},
                       graph={"kind": "cycle", "n": 4}, solver={"type": "auto"})
    status, text = info(capsys, path)
    assert status == 0
    if MPI.COMM_WORLD.rank == 0:
        # Cycle C_4: eigenvalues 2 - 2cos(2πk/4) = 0, 2, 2, 4.
        assert "Laplacian eigenvalues: 0 2 2 4" in text
        assert ("spectral gap: 2 (1/gap = 0.5: the relaxation time of the graph chain alone; "
                "barriers of V_g in x can make the run's time to equilibrium far longer)" in text)
        assert "unknowns: 16900 = 4 x 4225" in text
        assert f"{MPI.COMM_WORLD.size} rank(s)" in text
        assert "solver: direct (configured: auto)" in text


def test_gibbs_chain_of_two_vertices(capsys, shared_tmp):
    # V_g = g, β = 1: π_1/π_0 = e^{-1}, rates w e^{∓1/2}; the masses relax at
    # k_01 + k_10 = 2 w cosh(1/2) towards the fractions 1/(1 + e^{-1}), e^{-1}/(1 + e^{-1}).
    w = 1.5
    path = config_file(shared_tmp, "gibbs", mesh={"cells": [6, 6]},
                       graph={"kind": "path", "n": 2, "weight": w},
                       model={"coupling": "gibbs", "beta": 1.0, "potential": "g"})
    status, text = info(capsys, path, "--json")
    assert status == 0
    if MPI.COMM_WORLD.rank == 0:
        report = json.loads(text)
        assert report["laplacian_eigenvalues"] == pytest.approx([0.0, 2 * w], abs=1e-12)
        assert report["gibbs_chain_eigenvalues"] == pytest.approx(
            [0.0, 2 * w * math.cosh(0.5)], abs=1e-12)
        assert report["gibbs_chain_gap"] == pytest.approx(2 * w * math.cosh(0.5), rel=1e-12)
        f0 = 1 / (1 + math.exp(-1))
        assert report["gibbs_vertex_fractions"] == pytest.approx([f0, 1 - f0], rel=1e-12)


def test_auto_picks_spectral_for_large_systems(capsys, shared_tmp):
    # 31 x 31 P1 nodes on 105 vertices: 100905 unknowns, above the direct limit.
    path = config_file(shared_tmp, "large", mesh={"cells": [30, 30]},
                       graph={"kind": "path", "n": 105}, solver={"type": "auto"},
                       model={"coupling": "laplacian", "potential": "x[0]**2"})
    status, text = info(capsys, path, "--json")
    assert status == 0
    if MPI.COMM_WORLD.rank == 0:
        report = json.loads(text)
        assert report["unknowns"] == 105 * 961 > AUTO_DIRECT_MAX
        layout = "per-rank" if MPI.COMM_WORLD.size > 1 else "distributed"
        assert report["solver"] == {"type": "spectral", "configured": "auto", "inner": "lu",
                                    "exact": True, "scalar_layout": layout}


@pytest.mark.parametrize("setting", ["auto", "double"])
def test_reports_the_precision_of_factorizations_that_precondition(capsys, shared_tmp,
                                                                    setting):
    """Differing potentials: the spectral factorizations only precondition FGMRES, and info
    says in which precision they are held; an exact spectral solve has none to report."""
    from rdgraph.solvers.precision import mumps_single_precision

    sections = dict(mesh={"cells": [30, 30]}, graph={"kind": "path", "n": 105},
                    solver={"type": "auto", "factorization_precision": setting})
    differing = config_file(shared_tmp, f"differing-{setting}",
                            model={"coupling": "laplacian", "potential": "g*x[0]**2"},
                            **sections)
    equal = config_file(shared_tmp, f"equal-{setting}",
                        model={"coupling": "laplacian", "potential": "x[0]**2"}, **sections)
    status, text = info(capsys, differing, "--json")
    assert status == 0
    status_text, plain = info(capsys, differing)
    assert status_text == 0
    status_equal, equal_text = info(capsys, equal, "--json")
    assert status_equal == 0
    can = MPI.COMM_WORLD.allreduce(mumps_single_precision(), op=MPI.LAND)
    if MPI.COMM_WORLD.rank != 0:
        return
    solver = json.loads(text)["solver"]
    assert (solver["inner"], solver["exact"]) == ("lu", False)
    assert solver["factorization_precision"] == setting
    if setting == "double":
        assert "mumps_single_precision" not in solver
        assert "factorizations: double precision" in plain
    else:
        assert solver["mumps_single_precision"] == can
        expected = ("single precision (MUMPS) where the condition estimate is at most 20000"
                    if can else "double precision (auto: no single-precision MUMPS here)")
        assert f"factorizations: {expected}" in plain
    assert "factorization_precision" not in json.loads(equal_text)["solver"]


@pytest.mark.parametrize("setting, can, expected", [
    ("double", None, "double precision"),
    ("auto", False, "double precision (auto: no single-precision MUMPS here)"),
    ("single", False, "single precision, but no single-precision MUMPS here"),
    ("single", True, "single precision (MUMPS)"),
])
def test_precision_wording_without_or_with_single_precision_mumps(setting, can, expected):
    from rdgraph.info import _precision

    solver = {"factorization_precision": setting, "mumps_single_precision": can}
    assert _precision(solver).startswith(expected)


def test_resolve_solver_rules():
    auto = SolverSettings()
    assert resolve_solver(auto, 10, AUTO_DIRECT_MAX // 10, False) == ("direct", None)
    assert resolve_solver(auto, 10, AUTO_DIRECT_MAX // 10 + 1, False) == ("spectral", "lu")
    # Preconditioning: distributed factorizations only for small problems; serial ones
    # (one rank, or modes dealt to ranks) up to the exact solve's limit.
    distributed = SolverSettings(scalar_layout="distributed")
    assert resolve_solver(distributed, 2, LU_MAX_DOFS + 1, False, num_ranks=2) == (
        "spectral", "amg")
    assert resolve_solver(distributed, 2, LU_MAX_DOFS + 1, False) == ("spectral", "lu")
    assert resolve_solver(auto, 2, LU_MAX_DOFS + 1, False, num_ranks=2) == ("spectral", "lu")
    assert resolve_solver(auto, 2, LU_MAX_DOFS_EXACT + 1, False) == ("spectral", "amg")
    assert resolve_solver(auto, 2, LU_MAX_DOFS + 1, True) == ("spectral", "lu")
    assert resolve_solver(auto, 2, LU_MAX_DOFS_EXACT + 1, True) == ("spectral", "amg")
    # 3-D factorizations fill in much more: the same sizes go to AMG there.
    assert resolve_solver(auto, 2, LU_MAX_DOFS, True, tdim=2) == ("spectral", "lu")
    assert resolve_solver(auto, 2, LU_MAX_DOFS, True, tdim=3) == ("spectral", "amg")
    assert resolve_solver(auto, 10, LU_MAX_DOFS_EXACT // 8, True, tdim=3) == ("spectral", "lu")
    assert resolve_solver(SolverSettings(type="krylov"), 100, 10**6, False) == ("krylov", None)


def test_3d_factorizes_larger_problems_when_each_rank_keeps_one(monkeypatch):
    """A rank's modes sharing one factorization are one batched solve: 3-D problems up to
    LU_3D_SHARED_MAX_DOFS are factorized then, but not exact modes (one per eigenvalue)."""
    import rdgraph.solvers.block as solvers

    monkeypatch.setattr(solvers, "_physical_memory", lambda: 64 * 2.0**30)
    auto, n = SolverSettings(), solvers.LU_3D_SHARED_MAX_DOFS

    def inner(size, exact=False, factorizations=2):
        return resolve_solver(auto, 16, size, exact, tdim=3, num_ranks=2,
                              factorizations=factorizations)[1]

    assert inner(n) == "lu"
    assert inner(n + 1) == "amg"
    assert inner(n, factorizations=3) == "amg"  # more than one per rank
    assert inner(n, factorizations=None) == "amg"  # one per vertex
    assert inner(n, exact=True) == "amg"
    assert inner(LU_MAX_DOFS_EXACT // 8, exact=True, factorizations=16) == "lu"


def test_auto_factorizes_only_what_fits_in_memory(monkeypatch):
    import rdgraph.solvers.block as solvers

    n = LU_MAX_DOFS_EXACT // 2
    monkeypatch.setattr(solvers, "_physical_memory", lambda: 64 * 2.0**30)
    # Each factorized mode also needs two columns of the batched solves' dense blocks.
    fits = int(0.25 * 64 * 2.0**30 / (solvers.factorization_bytes(n) + 16.0 * n))
    assert resolve_solver(SolverSettings(), fits, n, True) == ("spectral", "lu")
    assert resolve_solver(SolverSettings(), fits + 1, n, True) == ("spectral", "amg")


@pytest.mark.parametrize("arguments, message", [
    (["--set", "graph.n=0"], "graph.n"),
    (["missing.toml"], "does not exist"),
    (["--set", 'model.potential="x[0] + y"'], "model.potential"),
    (["--set", 'mesh.shape="file"', "--set", 'mesh.file="nowhere.msh"'], "nowhere.msh"),
])
def test_bad_input_exits_2(capsys, arguments, message):
    status = main(["info", *arguments])
    assert status == 2
    err = capsys.readouterr().err
    if MPI.COMM_WORLD.rank == 0:
        assert message in err and "Traceback" not in err


def test_disconnected_graph_is_named(capsys, shared_tmp):
    path = config_file(shared_tmp, "split", mesh={"cells": [4, 4]},
                       graph={"kind": "edges", "n": 5, "edges": [[0, 1, 1.0], [2, 3, 1.0]]},
                       model={"coupling": "gibbs", "potential": "g"})
    status, text = info(capsys, path)
    assert status == 0
    if MPI.COMM_WORLD.rank == 0:
        assert "warning: the graph is not connected: 3 components {0, 1}; {2, 3}; {4}" in text
        assert "spectral gap: 0 (graph not connected" in text
        assert "a run shares each component's initial mass within the component" in text
