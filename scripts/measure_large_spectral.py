"""Measure the spectral block solver on large graphs against LB, in one run (2 ranks).

    mpiexec -n 2 python scripts/measure_large_spectral.py CASE [--steps K] [--json FILE]

CASE is one of ``h65-laplacian``, ``h65-gibbs``, ``hypercube10``, ``random100k`` (see
``CASES``), optionally with ``--cells`` to change the mesh. Prints (rank 0) set-up, the
steps' times and iterations, the peak memory of all ranks together, LB
(:func:`rdgraph.studies.lower_bound.scalar_lower_bound`) and step / LB; for gibbs also the mass
drift and the distance of the vertex fractions to the Gibbs state at the last step.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.studies.lower_bound import scalar_lower_bound

BOWL = "(x[0] - 0.3)**2 + (x[1] - 0.6)**2"


def case(name: str, cells: int, dt: float, steps: int, data: str | None) -> dict:
    graph = {"h65-laplacian": {"kind": "hamming", "dim": 6, "choices": 5},
             "h65-gibbs": {"kind": "hamming", "dim": 6, "choices": 5},
             "hypercube10": {"kind": "hypercube", "dim": 10},
             "random100k": {"kind": "random", "n": 100_000, "p": 8 / 99_999}}[name]
    model = {"coupling": "laplacian", "beta": 0.5, "potential": BOWL,
             "initial": "1 + 0.5 * sin(3 * g) * x[0]"}
    if name == "h65-gibbs":
        model.update(coupling="gibbs", data=data, potential=f"{BOWL} + 0.5 * loss[g]",
                     initial="1 + x[0] * x[1]")
    return {"mesh": {"shape": "rectangle", "cells": [cells, cells]},
            "space": {"degree": 1}, "graph": graph, "model": model,
            "time": {"scheme": "implicit-euler", "dt": dt, "t_end": dt * steps},
            "solver": {"type": "auto"}, "output": {"fields_every": 0}}


def peak_memory(comm) -> float:
    """Peak resident memory of all ranks together, GB (Linux: ru_maxrss in kB)."""
    return comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, op=MPI.SUM) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument("--cells", type=int, default=32)
    parser.add_argument("--dt", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--data", default=None, help="the loss CSV (h65-gibbs)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    settings = settings_from_dict(case(args.case, args.cells, args.dt, args.steps, args.data))
    comm.Barrier()
    start = time.perf_counter()
    sim = Simulation(settings, comm, verbose=True)
    setup = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    memory_setup = peak_memory(comm)
    first = sim.diagnostics()
    times, iterations, masses = [], [], [first.mass]
    last = first
    for _ in range(args.steps):
        comm.Barrier()
        t0 = time.perf_counter()
        iterations.append(sim.advance())
        times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        last = sim.diagnostics()
        masses.append(last.mass)
        if comm.rank == 0:
            print(f"step {len(times)}: {times[-1]:.2f} s, {iterations[-1]} iterations",
                  flush=True)
    solver = sim.stepper.solver
    bound = scalar_lower_bound(settings, comm)
    result = {
        "case": args.case, "cells": args.cells, "ranks": comm.size, "vertices": sim.graph.n,
        "unknowns": sim.graph.n * sim.layout.size_global, "setup": setup,
        "timings": sim.timings, "solver": sim.solver_options,
        "steps": times, "iterations": iterations,
        "step_median": float(np.median(times)), "lb_step": bound["step"],
        "lb_setup": bound["setup"], "step_over_lb": float(np.median(times)) / bound["step"],
        "peak_memory_gb_after_setup": memory_setup, "peak_memory_gb": peak_memory(comm),
        "mass_drift": float(abs(masses[-1] - masses[0]) / abs(masses[0])),
    }
    if sim.model.coupling == "gibbs":
        fractions = last.vertex_masses / last.mass
        result["max_fraction_error"] = float(np.abs(fractions - sim.model.gibbs_fractions).max())
    del solver
    sim.destroy()
    if comm.rank == 0:
        print(json.dumps(result, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
