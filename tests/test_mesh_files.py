"""The committed gmsh meshes in ``meshes/``, their regeneration, and the 3-D example."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.problem.config import load_settings, settings_from_dict
from rdgraph.simulation import Simulation

ROOT = Path(__file__).resolve().parents[1]
MESHES = ROOT / "meshes"

# name -> (dimension, exact measure of the domain the mesh approximates, relative tolerance
# for the measure of the mesh: curved boundaries are replaced by chords/facets of size h).
DOMAINS = {
    "disk": (2, math.pi, 2e-3),
    "plate_hole": (2, 8.0 - math.pi * 0.4**2, 2e-3),
    "box_cavity": (3, 8.0 - 4.0 / 3.0 * math.pi * 0.4**3, 1e-2),
}


def test_every_mesh_has_a_source():
    assert sorted(p.stem for p in MESHES.glob("*.msh")) == sorted(DOMAINS)
    assert sorted(p.stem for p in MESHES.glob("*.geo")) == sorted(DOMAINS)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_mesh_file_simulation_conserves_mass(name):
    dim, measure, tol = DOMAINS[name]
    data = make_config(
        mesh={"shape": "file", "file": str(MESHES / f"{name}.msh")},
        graph={"kind": "cycle", "n": 3},
        model={"coupling": "gibbs", "beta": 0.5, "potential": "(x[0] - 0.3*g)**2 + x[1]*g",
               "initial": "1 + g"},
        time={"dt": 0.05, "t_end": 0.15},
    )
    del data["mesh"]["cells"]
    sim = Simulation(settings_from_dict(data))
    history = sim.run()
    assert sim.mesh.geometry.dim == dim == sim.mesh.topology.dim
    # With initial 1 + g, vertex g starts with (1 + g)|Ω_h|: the file holds the whole domain.
    m0 = history[0].vertex_masses
    assert np.allclose(m0 / np.array([1.0, 2.0, 3.0]), m0[0], rtol=1e-12)
    assert m0[0] == pytest.approx(measure, rel=tol)
    total = np.array([d.mass for d in history])
    assert np.allclose(total, total[0], rtol=1e-11, atol=0)
    # The coupling moved mass between vertices (the run did something).
    assert np.abs(history[-1].vertex_masses - m0).max() > 1e-2
    sim.destroy()


def test_make_meshes_reproduces_a_mesh(shared_tmp):
    """``scripts/make_meshes.py`` rebuilds the committed file byte for byte."""
    import gmsh

    pinned = [line.split("==")[1].strip() for line in
              (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
              if line.startswith("gmsh==")]
    if gmsh.__version__ not in pinned:
        pytest.skip(f"meshes were made with gmsh {pinned}, this is {gmsh.__version__}")
    status, same = None, None
    if MPI.COMM_WORLD.rank == 0:
        out = shared_tmp / "regenerated"
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_meshes.py"), "plate_hole",
             "--out", str(out)], capture_output=True, text=True, timeout=120)
        status = done.returncode
        if status == 0:
            same = ((out / "plate_hole.msh").read_bytes()
                    == (MESHES / "plate_hole.msh").read_bytes())
    status, same = MPI.COMM_WORLD.bcast((status, same), root=0)
    assert status == 0
    assert same


def test_gmsh_3d_example_runs(shared_tmp):
    """``examples/gmsh_3d.toml`` through ``rdgraph run`` (a few steps)."""
    from rdgraph.cli import main

    out = shared_tmp / "gmsh_3d"
    status = main(["run", str(ROOT / "examples" / "gmsh_3d.toml"), "--out", str(out),
                   "--quiet", "--set", "time.t_end=0.15", "--set", "output.fields_every=1"])
    assert status == 0
    settings = load_settings(ROOT / "examples" / "gmsh_3d.toml", [])
    assert settings.mesh.file == str(ROOT / "examples" / "../meshes/box_cavity.msh")
    if MPI.COMM_WORLD.rank == 0:
        rows = np.loadtxt(out / "diagnostics.csv", delimiter=",", skiprows=1)
        assert rows.shape[0] == 4
        assert np.allclose(rows[:, 2], rows[0, 2], rtol=1e-11)
        # Total mass 4|Ω_h| from the uniform initial density 1 on each of the 4 vertices.
        assert rows[0, 2] == pytest.approx(4 * DOMAINS["box_cavity"][1], rel=1e-2)
        assert (out / "fields.bp").is_dir()
