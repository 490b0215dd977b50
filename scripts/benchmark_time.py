"""Time to the answer: measure the adaptive-step targets and print them.

Two cases (run under ``mpiexec -n 2`` for the figures of the documentation):

1. the default architecture-search toy to t = 100 with adaptive steps, against the steps of
   a fixed dt = 0.05 (t / 0.05 = 2000) and against the vertex masses of a fixed-step
   Crank–Nicolson reference at dt = 0.005 (target: at least 20x fewer steps, masses within
   1e-3 relative);
2. six tilted double wells in 1-D (gibbs, β = 0.1), all mass starting in the left wells,
   where the winner's Gibbs mass lies mostly across a barrier (``DOUBLE_WELLS`` below), run
   with ``t_end = "equilibrium"`` until the winner holds 99 % of its Gibbs mass (target: at
   most 300 steps; the wall time includes every solver set-up); ``--wells-fixed`` also runs
   it with fixed steps of 0.05 to t = 400, the behaviour it was built to reproduce.

In both, the total mass must be conserved to 1e-12 (relative).

Usage::

    mpiexec -n 2 python scripts/benchmark_time.py           # the toy on a 32x32 mesh
    mpiexec -n 2 python scripts/benchmark_time.py --quick   # 16x16: a minute or two
    python scripts/benchmark_time.py --cells 64             # the toy's own 64x64 mesh
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.problem.defaults import default_config
from rdgraph.simulation import Simulation

# The double-well problem of issue 24, which gives only its behaviour: 6 architectures,
# tilted double wells in 1-D, gibbs, beta = 0.1; with fixed steps of 0.05 the winner holds
# 55 % of the mass at t = 40 against a Gibbs share of 82 %, and 81 % at t = 400. Built to
# reproduce that: six vertices on a path share one double well 0.4 (x^2 - 1)^2 (a barrier of
# 0.4 = 4 beta), tilted
#   * for vertex 0, the winner, towards x = +1 (-0.1 x): its right well is the deepest;
#   * for vertices 1..5 towards x = -1 (+0.08 x), raised by 0.17 + 0.05 g: in the left
#     basin they hold 58 % of the Gibbs mass, the winner 42 %.
# All mass starts in the left wells. Graph exchange within the left basin takes the winner
# close to its share of that basin within about ten time units; the rest of its Gibbs mass
# lies across the barrier, which it crosses (mostly through the winner's own, lowest,
# barrier) at the slowest rate of the generator, 0.0103: the winner reaches 99 % of its
# Gibbs mass only at t = 381. Measured with fixed implicit-Euler steps of 0.05 on the
# 400-cell mesh (--wells-fixed): Gibbs share 81.6 %, the winner at 54.2 % at t = 40 and at
# 80.9 % at t = 400. The parameters were fitted with the basins' Gibbs masses and the
# generator's slowest rate; see docs/notes/adaptive-benchmark.md.
DOUBLE_WELLS = ["0.4*(x[0]**2 - 1)**2 - 0.1*x[0]",
                *(f"0.4*(x[0]**2 - 1)**2 + 0.08*x[0] + {0.17 + 0.05 * g:.2f}"
                  for g in range(1, 6))]
LEFT_START = "exp(-(x[0] + 1)**2 / 0.05) / (6*sqrt(0.05*pi))"


def say(*args) -> None:
    if MPI.COMM_WORLD.rank == 0:
        print(*args, flush=True)


def simulate(data: dict, stop=None) -> dict:
    """Run ``data``; return the steps, set-ups, wall time (set-up included), final masses,
    the mass drift and the simulation's summary numbers."""
    comm = MPI.COMM_WORLD
    comm.barrier()
    start = time.perf_counter()
    sim = Simulation(settings_from_dict(data), comm)
    first = sim.diagnostics()
    d = first
    while not sim.finished(d):
        sim.advance()
        d = sim.diagnostics()
        if stop is not None and stop(sim, d):
            break
    comm.barrier()
    wall = time.perf_counter() - start
    result = {
        "steps": sim.step_index, "setups": sim.guard.setups, "wall": wall, "t": sim.t,
        "masses": d.vertex_masses.copy(), "drift": abs(d.mass - first.mass) / first.mass,
        "rejected": getattr(sim.stepper, "rejected", 0),
        "gibbs": sim.model.gibbs_masses(first.vertex_masses),
    }
    sim.destroy()
    return result


def toy(cells: int, t_end: float, tolerance: float) -> None:
    base = default_config()
    base["mesh"]["cells"] = [cells, cells]
    base["output"] = {"fields_every": 0, "npz": False, "plots": False}
    adaptive = {**base, "time": {"scheme": "implicit-euler", "dt": 0.01, "t_end": t_end,
                                 "adaptive": True, "tolerance": tolerance}}
    reference = {**base, "time": {"scheme": "crank-nicolson", "dt": 0.005, "t_end": t_end}}
    a = simulate(adaptive)
    say(f"toy ({cells}x{cells} mesh, 8 vertices) to t = {t_end:g}, adaptive implicit Euler "
        f"(step doubling + extrapolation), tolerance {tolerance:g}:")
    fixed = round(t_end / 0.05)
    say(f"  adaptive: {a['steps']} steps ({a['rejected']} rejected), {a['setups']} solver "
        f"set-ups, {a['wall']:.1f} s; fixed dt = 0.05 takes {fixed} steps: "
        f"{fixed / a['steps']:.1f}x fewer (target >= 20x)")
    r = simulate(reference)
    error = np.abs(a["masses"] - r["masses"]).max() / np.abs(r["masses"]).max()
    say(f"  reference Crank-Nicolson dt = 0.005: {r['steps']} steps, {r['wall']:.1f} s")
    say(f"  vertex masses at t = {t_end:g}: largest deviation {error:.2e} relative "
        f"(target <= 1e-3); mass drift {a['drift']:.1e} (target <= 1e-12)")


def double_wells_config(cells: int, time: dict) -> dict:
    return {
        "mesh": {"shape": "interval", "cells": [cells], "lower": [-2.0], "upper": [2.0]},
        "space": {"degree": 1},
        "graph": {"kind": "path", "n": 6},
        "model": {"coupling": "gibbs", "beta": 0.1, "potentials": DOUBLE_WELLS,
                  "initial": LEFT_START},
        "time": time,
        "solver": {"type": "auto"},
        "output": {"fields_every": 0, "npz": False, "plots": False},
    }


def winner_share(sim, d) -> float:
    """The winner's (the vertex of largest Gibbs mass) fraction of its Gibbs mass."""
    gibbs = sim.model.gibbs_masses(d.vertex_masses)
    w = int(np.argmax(gibbs))
    return d.vertex_masses[w] / gibbs[w]


def double_wells(cells: int, tolerance: float) -> None:
    data = double_wells_config(cells, {
        "scheme": "implicit-euler", "dt": 1e-3, "adaptive": True, "tolerance": tolerance,
        "t_end": "equilibrium", "t_max": 5000.0})
    a = simulate(data, stop=lambda sim, d: winner_share(sim, d) >= 0.99)
    w = int(np.argmax(a["gibbs"]))
    say(f"six tilted double wells (1-D, {cells} cells, gibbs, beta = 0.1), adaptive, "
        f"tolerance {tolerance:g}:")
    say(f"  vertex {w} holds {a['masses'][w] / a['gibbs'][w]:.1%} of its Gibbs mass "
        f"{a['gibbs'][w]:.3f} at t = {a['t']:.4g} after {a['steps']} steps "
        f"({a['rejected']} rejected, target <= 300), {a['setups']} set-ups, "
        f"{a['wall']:.1f} s wall including set-ups; mass drift {a['drift']:.1e}")


def double_wells_fixed(cells: int) -> None:
    """The issue's observations, with fixed implicit-Euler steps of 0.05 to t = 400."""
    data = double_wells_config(cells, {"scheme": "implicit-euler", "dt": 0.05, "t_end": 400.0})
    marks = {40.0: None, 400.0: None}
    first_99: list[float] = []

    def watch(sim, d) -> bool:
        share = winner_share(sim, d)
        for t in marks:
            if abs(sim.t - t) < 1e-9:
                marks[t] = share * sim.model.gibbs_masses(d.vertex_masses).max() / d.mass
        if share >= 0.99 and not first_99:
            first_99.append(sim.t)
        return False

    a = simulate(data, stop=watch)
    gibbs = a["gibbs"].max() / a["gibbs"].sum()
    say(f"six tilted double wells, fixed dt = 0.05 ({a['steps']} steps, {a['wall']:.0f} s): "
        f"Gibbs share {gibbs:.1%}; the winner holds {marks[40.0]:.1%} at t = 40 and "
        f"{marks[400.0]:.1%} at t = 400; 99 % of its Gibbs mass at t = "
        f"{first_99[0] if first_99 else float('nan'):.4g}; mass drift {a['drift']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 16x16 toy mesh (about a minute or two on 2 ranks)")
    parser.add_argument("--cells", type=int, default=None,
                        help="cells per side of the toy's mesh (default 32; --quick 16)")
    parser.add_argument("--t-end", type=float, default=100.0)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--wells-fixed", action="store_true",
                        help="also run the double wells with fixed dt = 0.05 to t = 400 "
                             "(8000 steps, a few minutes)")
    args = parser.parse_args()
    cells = args.cells or (16 if args.quick else 32)
    say(f"rdgraph time benchmark on {MPI.COMM_WORLD.size} rank(s)")
    double_wells(400, args.tolerance)
    if args.wells_fixed:
        double_wells_fixed(400)
    toy(cells, args.t_end, args.tolerance)


if __name__ == "__main__":
    main()
