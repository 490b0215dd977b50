"""Meshes: the built-in interval/rectangle/box and gmsh ``.msh`` files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI, dolfinx
from rdgraph.errors import InputError, on_root
from rdgraph.problem.config import MeshSettings

__all__ = ["build_mesh", "check_mesh_file"]


@contextlib.contextmanager
def _gmsh_model(name: str):
    """A silent gmsh model, removed afterwards; gmsh finalized again if started here.

    Started without gmsh's own SIGINT handler, which would replace the one that writes a
    checkpoint on Ctrl-C.
    """
    import gmsh

    initialized_here = not gmsh.isInitialized()
    if initialized_here:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add(name)
        yield gmsh
    finally:
        gmsh.model.remove()
        if initialized_here:
            gmsh.finalize()


def check_mesh_file(path: str | Path) -> int:
    """Check that ``path`` is a readable gmsh file and return its topological dimension.

    Reads the file with the ``gmsh`` module on the calling rank only; call it on rank 0
    and broadcast the result.

    Raises:
        InputError: The file is missing, unreadable, not gmsh, or holds no cells.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mesh.file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise InputError(f"mesh.file {str(path)!r} cannot be read: {e}") from None
    if not head.lstrip().startswith(b"$MeshFormat"):
        raise InputError(f"mesh.file {str(path)!r} is not a gmsh .msh file (no $MeshFormat)")
    with _gmsh_model("rdgraph-check") as gmsh:
        try:
            gmsh.open(str(path))
        except Exception as e:  # gmsh raises plain Exception on parse errors
            raise InputError(f"mesh.file {str(path)!r} cannot be parsed by gmsh: {e}") from None
        dims = [d for d in range(3, 0, -1) if len(gmsh.model.mesh.getElements(d)[0]) > 0]
        if not dims:
            raise InputError(f"mesh.file {str(path)!r} holds no cells")
        if not gmsh.model.getPhysicalGroups(dims[0]):
            # DOLFINx reads only cells in physical groups.
            raise InputError(
                f"mesh.file {str(path)!r} has no physical group of dimension {dims[0]}; "
                "tag the domain with gmsh.model.addPhysicalGroup"
            )
        return dims[0]


def build_mesh(settings: MeshSettings, comm: MPI.Comm) -> dolfinx.mesh.Mesh:
    """Create the shared mesh described by ``settings`` (collective)."""
    shape = settings.shape
    ghost = dolfinx.mesh.GhostMode.shared_facet
    if shape == "interval":
        return dolfinx.mesh.create_interval(
            comm, settings.cells[0], [settings.lower[0], settings.upper[0]], ghost_mode=ghost
        )
    if shape == "rectangle":
        return dolfinx.mesh.create_rectangle(
            comm,
            [np.array(settings.lower), np.array(settings.upper)],
            settings.cells,
            dolfinx.mesh.CellType.triangle,
            ghost_mode=ghost,
        )
    if shape == "box":
        return dolfinx.mesh.create_box(
            comm,
            [np.array(settings.lower), np.array(settings.upper)],
            settings.cells,
            dolfinx.mesh.CellType.tetrahedron,
            ghost_mode=ghost,
        )
    tdim = on_root(comm, check_mesh_file, settings.file)
    return _read_msh(settings.file, comm, tdim)


def _read_msh(path: str, comm: MPI.Comm, gdim: int) -> dolfinx.mesh.Mesh:
    """Read a checked gmsh file on rank 0 and distribute it (collective).

    Does what ``dolfinx.io.gmsh.read_from_msh`` does, but with gmsh silent (it would print
    "Info : Reading ..." even under ``--quiet``) and without gmsh's own SIGINT handler, which
    would replace the one that writes a checkpoint on Ctrl-C.
    """
    import gmsh
    from dolfinx.io import gmsh as gmshio

    # A planar mesh is read with gdim = tdim, so that x has as many components as the cells.
    if comm.rank != 0:
        return gmshio.model_to_mesh(gmsh.model, comm, 0, gdim=gdim).mesh
    with _gmsh_model("rdgraph-mesh"):
        gmsh.merge(str(path))
        return gmshio.model_to_mesh(gmsh.model, comm, 0, gdim=gdim).mesh
