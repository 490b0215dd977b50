"""Built-in meshes in 1-D/2-D/3-D, gmsh files, and every Lagrange degree."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation


def run_and_check_mass(data: dict) -> Simulation:
    sim = Simulation(settings_from_dict(data))
    history = sim.run()
    total = np.array([d.mass for d in history])
    assert np.allclose(total, total[0], rtol=1e-11)
    assert history[-1].vertex_masses.std() < history[0].vertex_masses.std()
    return sim


@pytest.mark.parametrize(
    "mesh, potential",
    [
        ({"shape": "interval", "cells": [20], "lower": [-1.0], "upper": [2.0]}, "x[0]**2*(g+1)"),
        ({"shape": "rectangle", "cells": [6, 5], "lower": [0.0, -1.0], "upper": [2.0, 1.0]},
         "x[0]*x[1] + g"),
        ({"shape": "box", "cells": [3, 3, 3]}, "x[0] + x[1]*x[2]*g"),
    ],
)
def test_builtin_meshes_conserve_mass(mesh, potential):
    data = make_config(
        mesh=mesh,
        graph={"kind": "complete", "n": 3},
        model={"coupling": "gibbs", "beta": 0.7, "potential": potential,
               "initial": "1 + g + 0.1*x[0]"},
        time={"dt": 0.05, "t_end": 0.2},
    )
    if mesh["shape"] != "rectangle":
        del data["mesh"]["cells"]
        data["mesh"].update(mesh)
    run_and_check_mass(data).destroy()


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_every_degree(degree):
    data = make_config(
        mesh={"cells": [4, 4]},
        space={"degree": degree},
        graph={"kind": "star", "n": 4},
        model={"coupling": "laplacian", "potential": "x[0]*g", "initial": "1 + g*x[1]"},
    )
    sim = run_and_check_mass(data)
    expected = {1: 25, 2: 81, 3: 169}[degree]
    assert sim.num_dofs == expected
    sim.destroy()


def _write_gmsh(path, dim: int) -> None:
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("test")
        if dim == 2:
            tag = gmsh.model.occ.addDisk(0, 0, 0, 1, 1)
        else:
            tag = gmsh.model.occ.addBox(0, 0, 0, 1, 1, 1)
        gmsh.model.occ.synchronize()
        gmsh.model.addPhysicalGroup(dim, [tag], 1)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", 0.3 if dim == 2 else 0.5)
        gmsh.model.mesh.generate(dim)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()


@pytest.mark.parametrize("dim", [2, 3])
def test_gmsh_mesh_file(shared_tmp, dim):
    path = shared_tmp / f"domain{dim}.msh"
    if MPI.COMM_WORLD.rank == 0:
        _write_gmsh(path, dim)
    MPI.COMM_WORLD.Barrier()
    data = make_config(
        mesh={"shape": "file", "file": str(path)},
        graph={"kind": "path", "n": 2},
        model={"coupling": "gibbs", "potential": "x[0]*(g + 1)", "initial": "1 + g"},
        time={"dt": 0.05, "t_end": 0.1},
    )
    del data["mesh"]["cells"]
    sim = run_and_check_mass(data)
    assert sim.mesh.geometry.dim == dim
    sim.destroy()


def test_bad_mesh_files(shared_tmp):
    bad = shared_tmp / "bad.msh"
    if MPI.COMM_WORLD.rank == 0:
        bad.write_text("this is not a mesh\n")
    MPI.COMM_WORLD.Barrier()
    for path, message in ((shared_tmp / "missing.msh", "does not exist"),
                          (bad, "not a gmsh")):
        data = make_config(mesh={"shape": "file", "file": str(path)})
        del data["mesh"]["cells"]
        with pytest.raises(InputError, match=message):
            Simulation(settings_from_dict(data))
