"""``fields.bp`` as ParaView's ADIOS2VTXReader sees it: names, times, cells, values.

Read without the ``adios2`` module, from the BP4 metadata (see ``bp4_metadata.py``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from bp4_metadata import read_steps, vtk_xml
from conftest import make_config

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import run

# VTX writes every degree as VTK Lagrange cells (ParaView draws them curved / subdivided).
VTK_LAGRANGE_CURVE, VTK_LAGRANGE_TRIANGLE, VTK_LAGRANGE_TETRAHEDRON = 68, 69, 71


@pytest.mark.parametrize("mesh, degree, cell_type", [
    ({"shape": "rectangle", "cells": [4, 4]}, 1, VTK_LAGRANGE_TRIANGLE),
    ({"shape": "rectangle", "cells": [4, 4]}, 2, VTK_LAGRANGE_TRIANGLE),
    ({"shape": "interval", "cells": [6]}, 3, VTK_LAGRANGE_CURVE),
    ({"shape": "box", "cells": [2, 2, 2]}, 2, VTK_LAGRANGE_TETRAHEDRON),
])
def test_fields_bp(shared_tmp, mesh, degree, cell_type):
    n, dt, steps, every = 3, 0.01, 7, 3
    data = make_config(
        mesh=mesh, space={"degree": degree}, graph={"kind": "path", "n": n},
        model={"coupling": "laplacian", "potential": "x[0]*g", "initial": "1 + g*x[0]"},
        time={"dt": dt, "t_end": steps * dt}, output={"fields_every": every},
    )
    if mesh["shape"] != "rectangle":
        data["mesh"] = dict(mesh)
    out = shared_tmp / f"run-{mesh['shape']}-{degree}"
    run(settings_from_dict(data), out_dir=out, quiet=True)
    comm = MPI.COMM_WORLD
    if comm.rank != 0:
        return
    final = np.load(out / "final.npz")

    # One named point field per graph vertex, and TIME taken from the "step" variable.
    root = ET.fromstring(vtk_xml(out / "fields.bp"))
    names = [a.get("Name") for a in root.iter("DataArray")]
    fields = [name for name in names if re.fullmatch(r"rho_\d+", name)]
    assert fields == [f"rho_{g}" for g in range(n)]
    time = [a for a in root.iter("DataArray") if a.get("Name") == "TIME"]
    assert len(time) == 1 and time[0].text == "step"

    # Frames every `every` steps and at the end, at t = step * dt.
    frames = read_steps(out / "fields.bp")
    written = sorted(set(range(0, steps + 1, every)) | {steps})
    assert len(frames) == len(written)
    for k, (frame, step) in enumerate(zip(frames, written, strict=True)):
        for name in ["step", "types", "NumberOfNodes", *fields]:
            assert len(frame[name]) == comm.size, name  # one block per rank
            assert all(b.step == k + 1 for b in frame[name])
        assert {b.value for b in frame["step"]} == {step * dt}
        # Higher degrees are written natively: Lagrange cells with every dof as a node.
        assert {b.value for b in frame["types"]} == {cell_type}
        nodes = sum(b.value for b in frame["NumberOfNodes"])
        dofs = final["x"].shape[0]
        # In parallel each rank also writes its ghost nodes (marked by vtkGhostType).
        assert (nodes == dofs) if comm.size == 1 else (nodes > dofs)

    # The last frame holds the final state, vertex by vertex under its own name.
    for g in range(n):
        blocks = frames[-1][f"rho_{g}"]
        assert min(b.min for b in blocks) == pytest.approx(final["rho"][g].min(), rel=1e-12)
        assert max(b.max for b in blocks) == pytest.approx(final["rho"][g].max(), rel=1e-12)
