"""How many MPI communicators a Simulation holds: the free ones before and after set-up.

MPICH allows about 2048 communicators per process. This script counts how many more can be
duplicated from ``COMM_WORLD`` (then frees them) before and after building a Simulation and
taking a step, and prints the difference per rank::

    mpiexec -n 2 python scripts/count_communicators.py --vertices 500 --solver spectral
"""

from __future__ import annotations

import argparse
import json

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

LIMIT = 5000  # more than any MPI's context-id pool


def free_communicators() -> int:
    """The communicators this process can still create (collective)."""
    made = []
    try:
        while len(made) < LIMIT:
            made.append(MPI.COMM_WORLD.Dup())
    except MPI.Exception:
        pass
    count = len(made)
    for comm in made:
        comm.Free()
    return MPI.COMM_WORLD.allreduce(count, op=MPI.MIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertices", type=int, default=500)
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--solver", default="spectral")
    parser.add_argument("--kind", default="path")
    args = parser.parse_args()
    settings = settings_from_dict({
        "mesh": {"shape": "rectangle", "cells": [args.cells, args.cells]},
        "graph": {"kind": args.kind, "n": args.vertices},
        "model": {"coupling": "laplacian", "potential": "(x[0] - 0.5)**2"},
        "time": {"dt": 0.01, "t_end": 0.01},
        "solver": {"type": args.solver},
    })
    before = free_communicators()
    sim = Simulation(settings)
    sim.advance()
    sim.diagnostics()
    after = free_communicators()
    sim.destroy()
    if MPI.COMM_WORLD.rank == 0:
        print(json.dumps({"ranks": MPI.COMM_WORLD.size, "vertices": args.vertices,
                          "solver": args.solver, "free_before": before, "free_after": after,
                          "used": before - after}))


if __name__ == "__main__":
    main()
