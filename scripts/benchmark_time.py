"""Time to the answer: measure the adaptive-step targets and print them.

Three cases (run under ``mpiexec -n 2`` for the figures of the documentation):

1. the default architecture-search toy to t = 100 with adaptive steps, against the steps of
   a fixed dt = 0.05 (t / 0.05 = 2000) and against the vertex masses of a fixed-step
   Crank–Nicolson reference at dt = 0.005 (target: at least 20x fewer steps, masses within
   1e-3 relative);
2. six tilted double wells in 1-D (gibbs, β = 0.1), all mass starting in the left wells,
   where the winner's Gibbs mass lies mostly across a barrier (``DOUBLE_WELLS`` below), run
   with ``t_end = "equilibrium"`` until the winner holds 99 % of its Gibbs mass (target: at
   most 300 steps; the wall time includes every solver set-up); ``--wells-fixed`` also runs
   it with fixed steps of 0.05 to t = 400, the behaviour it was built to reproduce;
3. annealing on the default toy: ``model.beta`` falling geometrically from 0.5 to 0.02, with
   adaptive steps, against the same run at the fixed β = 0.02 from the same (uniform) start
   (target: at least 95 % of the mass ends on the architecture holding the global minimum
   of all V_g, while the fixed-β run stays trapped; the script prints both shares).

In all, the total mass must be conserved to 1e-12 (relative).

Usage::

    mpiexec -n 2 python scripts/benchmark_time.py           # the toy on a 32x32 mesh
    mpiexec -n 2 python scripts/benchmark_time.py --quick   # 16x16: a minute or two
    python scripts/benchmark_time.py --cells 64             # the toy's own 64x64 mesh
    mpiexec -n 2 python scripts/benchmark_time.py --only annealing
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from rdgraph.compat import MPI
from rdgraph.errors import SolverError
from rdgraph.problem.config import settings_from_dict
from rdgraph.problem.defaults import DEFAULT_POTENTIAL, default_config
from rdgraph.problem.expressions import parse
from rdgraph.simulation import Simulation
from rdgraph.solvers.block import BlockSolver, ReusedSetupSolver

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


# -- annealing ------------------------------------------------------------------------

#: β from hot to cold: the issue's 0.5 down to 0.02, geometric (log-linear) over
#: ANNEAL_COOLING time units, then held at 0.02 to the end of the run.
ANNEAL_HOT, ANNEAL_COLD = 0.5, 0.02
ANNEAL_COOLING = 160.0


def global_minimum_vertex(potential: str, vertices: int, lower: float, upper: float,
                          points: int = 801) -> tuple[int, float]:
    """The vertex whose potential holds the smallest value of all V_g, on a fine grid of the
    square ``[lower, upper]^2`` (the safe parser's evaluation, no mesh)."""
    x = np.linspace(lower, upper, points)
    X, Y = np.meshgrid(x, x)
    coordinates = np.vstack([X.ravel(), Y.ravel(), np.zeros(X.size)])
    expression = parse(potential, variables=("x", "g"), gdim=2)
    minima = [float(expression.evaluate(coordinates, g=g).min()) for g in range(vertices)]
    return int(np.argmin(minima)), min(minima)


def annealing(cells: int, t_end: float, cooling: float, tolerance: float,
              fixed: bool = True) -> None:
    base = default_config()
    base["mesh"]["cells"] = [cells, cells]
    # Lumped masses: with the consistent ones the toy breaks down at β <= 0.03 on meshes
    # coarser than about 200x200 (mesh Péclet number |∇V| h / β far above 1), see
    # docs/notes/annealing.md.
    base["space"] = {**base["space"], "lumping": True}
    base["output"] = {"fields_every": 0, "npz": False, "plots": False}
    schedule = [[0.0, ANNEAL_HOT], [cooling, ANNEAL_COLD]]
    time_settings = {"scheme": "implicit-euler", "dt": 0.01, "t_end": t_end, "adaptive": True,
                     "tolerance": tolerance}
    annealed = {**base, "model": {**base["model"], "beta": schedule}, "time": time_settings}
    cold = {**base, "model": {**base["model"], "beta": ANNEAL_COLD}, "time": time_settings}
    lower, upper = base["mesh"]["lower"][0], base["mesh"]["upper"][0]
    w, v = global_minimum_vertex(DEFAULT_POTENTIAL, 8, lower, upper)
    say(f"annealing on the toy ({cells}x{cells} mesh, lumped, 8 vertices, gibbs) to "
        f"t = {t_end:g}: "
        f"beta from {ANNEAL_HOT:g} down to {ANNEAL_COLD:g} geometrically over "
        f"t in [0, {cooling:g}], adaptive implicit Euler, tolerance {tolerance:g}; the global "
        f"minimum of all V_g ({v:.4f}) is vertex {w}'s")
    runs = [("annealed", annealed)] + ([(f"fixed beta = {ANNEAL_COLD:g}", cold)] if fixed else [])
    for name, data in runs:
        r = simulate(data)
        share = r["masses"][w] / r["masses"].sum()
        say(f"  {name}: vertex {w} holds {share:.2%} of the mass at t = {r['t']:g} "
            f"(Gibbs share at beta = {ANNEAL_COLD:g}: {r['gibbs'][w] / r['gibbs'].sum():.2%}); "
            f"{r['steps']} steps ({r['rejected']} rejected), {r['setups']} solver set-ups, "
            f"{r['wall']:.1f} s; mass drift {r['drift']:.1e}")


def setup_reuse(cells: int, solver: str, beta: float = 0.1, dt: float = 0.1,
                ratios=(1.005, 1.01, 1.02, 1.05, 1.1, 1.25, 1.5, 2.0)) -> None:
    """How a solver set-up made at ``beta`` preconditions the operator at ``beta / ratio``:
    FGMRES iterations and time of one implicit-Euler solve on the toy, against a new set-up
    and its solve. Measured for the choice of BETA_SETUP_RATIO."""
    base = default_config()
    base["mesh"]["cells"] = [cells, cells]
    base["output"] = {"fields_every": 0, "npz": False, "plots": False}
    data = {**base, "model": {**base["model"], "beta": [[0.0, beta], [1.0, beta / 10]]},
            "time": {"scheme": "implicit-euler", "dt": dt, "t_end": 1.0},
            "solver": {"type": solver}}
    comm = MPI.COMM_WORLD
    sim = Simulation(settings_from_dict(data), comm)
    for _ in range(3):  # a state with structure, not the uniform start
        sim.advance()
    operators, settings = sim.operators, sim.settings.solver
    operators.set_beta(beta)
    rhs, x = sim.state.duplicate(), sim.state.duplicate()
    sim.stepper.mass_matrix.mult(sim.state, rhs)

    def timed(make):
        comm.barrier()
        start = time.perf_counter()
        result = make()
        comm.barrier()
        return result, time.perf_counter() - start

    setup, setup_time = timed(lambda: BlockSolver(operators, 1.0, dt, settings, name="step"))
    say(f"set-up reuse on the toy ({cells}x{cells}, {solver} -> {setup.kind}), implicit Euler "
        f"dt = {dt:g}, set-up at beta = {beta:g}: set-up {setup_time:.3f} s")
    say("  beta ratio | operator change | reused set-up: iterations, solve s | "
        "new set-up + solve s")
    for ratio in ratios:
        operators.set_beta(beta / ratio)
        reused = ReusedSetupSolver(setup, operators, 1.0, dt, settings, name="step")
        sim.state.copy(x)
        try:
            iterations, solve_time = timed(lambda reused=reused: reused.solve(rhs, x))
        except SolverError:
            iterations, solve_time = -1, math.nan  # no convergence in solver.max_it
        reused.destroy()
        fresh, fresh_time = timed(lambda: BlockSolver(operators, 1.0, dt, settings, name="s"))
        sim.state.copy(x)
        _, fresh_solve = timed(lambda fresh=fresh: fresh.solve(rhs, x))
        fresh.destroy()
        change = operators.change_factor(beta / ratio, beta)
        say(f"  {ratio:10.3f} | {change:15.3g} | {iterations:3d}, {solve_time:.3f} | "
            f"{fresh_time + fresh_solve:.3f}")
    setup.destroy()
    for vec in (rhs, x):
        vec.destroy()
    sim.destroy()


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
    parser.add_argument("--only", choices=("double-wells", "toy", "annealing", "setup-reuse"),
                        default=None,
                        help="run one case only")
    parser.add_argument("--anneal-t-end", type=float, default=200.0,
                        help="end of the annealing runs (cooling, then held at beta = 0.02)")
    parser.add_argument("--anneal-cooling", type=float, default=ANNEAL_COOLING,
                        help="time over which beta falls from 0.5 to 0.02")
    parser.add_argument("--anneal-only", action="store_true",
                        help="the annealed run alone, without the fixed-beta one")
    args = parser.parse_args()
    cells = args.cells or (16 if args.quick else 32)
    say(f"rdgraph time benchmark on {MPI.COMM_WORLD.size} rank(s)")
    if args.only in (None, "double-wells"):
        double_wells(400, args.tolerance)
        if args.wells_fixed:
            double_wells_fixed(400)
    if args.only in (None, "toy"):
        toy(cells, args.t_end, args.tolerance)
    if args.only in (None, "annealing"):
        annealing(args.cells or 64, args.anneal_t_end, args.anneal_cooling, args.tolerance,
                  fixed=not args.anneal_only)
    if args.only == "setup-reuse":
        for solver in ("direct", "vertex"):
            for beta in (0.3, 0.1, 0.03):
                setup_reuse(args.cells or 32, solver, beta)


if __name__ == "__main__":
    main()
