"""Regenerate the gmsh meshes in ``meshes/`` from their ``.geo`` sources.

    python scripts/make_meshes.py                 # every meshes/*.geo -> meshes/*.msh
    python scripts/make_meshes.py disk --out DIR  # one mesh, written to DIR/disk.msh

Uses the ``gmsh`` package from PyPI (``pip install gmsh``). The output is deterministic:
gmsh meshes on one thread with a fixed random seed, and the ``.msh`` files are written as
ASCII MSH 4.1, so a regenerated file is byte-identical to the committed one for the same gmsh
version (``tests/test_mesh_files.py`` checks this). Each source tags the domain with a physical
group, because DOLFINx reads only cells that belong to one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gmsh

__all__ = ["MESH_DIR", "generate", "main"]

MESH_DIR = Path(__file__).resolve().parents[1] / "meshes"


def generate(source: Path, target: Path) -> dict[str, int]:
    """Mesh the ``.geo`` file ``source`` and write ``target`` (MSH 4.1, ASCII).

    Returns:
        The dimension, and the numbers of nodes and of cells of that dimension.
    """
    gmsh.initialize(["rdgraph-make-meshes"], interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        # One thread and a fixed seed: the same mesh on every machine and run.
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.option.setNumber("Mesh.RandomSeed", 1)
        gmsh.open(str(source))
        dim = gmsh.model.getDimension()
        gmsh.model.mesh.generate(dim)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("Mesh.Binary", 0)
        # Only elements in physical groups are written (as DOLFINx expects).
        gmsh.option.setNumber("Mesh.SaveAll", 0)
        target.parent.mkdir(parents=True, exist_ok=True)
        gmsh.write(str(target))
        types, tags, _ = gmsh.model.mesh.getElements(dim)
        nodes = gmsh.model.mesh.getNodes()[0]
        return {"dim": dim, "nodes": len(nodes), "cells": sum(len(t) for t in tags)}
    finally:
        gmsh.finalize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*",
                        help="meshes to make (stems of meshes/*.geo; default: all)")
    parser.add_argument("--out", type=Path, default=MESH_DIR,
                        help="folder for the .msh files (default: meshes/)")
    args = parser.parse_args(argv)
    sources = sorted(MESH_DIR.glob("*.geo"))
    if args.names:
        known = {s.stem: s for s in sources}
        missing = [n for n in args.names if n not in known]
        if missing:
            parser.error(f"no meshes/{missing[0]}.geo (known: {', '.join(known)})")
        sources = [known[n] for n in args.names]
    for source in sources:
        target = args.out / f"{source.stem}.msh"
        info = generate(source, target)
        print(f"{target}: {info['dim']}-D, {info['cells']} cells, {info['nodes']} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
