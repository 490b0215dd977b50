#!/usr/bin/env python3
"""Benchmark rdgraph on large graphs: set-up, step, iterations, peak memory and step/LB.

Graphs (issue 22): the path, the hypercube, the Hamming graph and a random sparse graph (mean
degree 8), from N = 64 to 15,625 vertices, and N = 10⁵ for the random graph, every vertex on
one shared mesh (8² P1 by default). Each case runs in its own ``mpiexec`` process, so its peak
memory is its own; in that process, after the run, the lower bound LB is measured on the same
ranks: one cached factorization of a single vertex's scalar operator ``M + τK_g`` solving all
N right-hand sides in batches, split between the ranks (:func:`rdgraph.studies.lower_bound.
scalar_lower_bound`). Every figure is measured in this run; failures (a solver that refuses N,
a time-out, running out of memory) are kept in the JSON with their message.

    python scripts/benchmark_graphs.py --quick                 # smoke run, seconds
    python scripts/benchmark_graphs.py                         # every case, solver auto
    python scripts/benchmark_graphs.py --solver krylov --cases hamming,random_N100000
    python scripts/benchmark_graphs.py --problem offsets --max-n 4096
    python scripts/benchmark_graphs.py --solver vertex --append \
        --json docs/notes/benchmark_graphs.json       # add a run to the docs' figures

Problems: ``same`` (``laplacian``, every vertex ``V = |x − c|²``: the spectral solve is exact),
``offsets`` (``gibbs``, ``V_g = |x − c|² + s·loss[g]`` with ``loss`` uniform in [0, 1] read
from a generated CSV file through ``[model] data``), and ``wells`` / ``wells-gibbs``
(``laplacian`` / ``gibbs``, a well per vertex ``V_g = depth[g]·|x − (cx[g], cy[g])|²`` whose
centre and depth are data columns: the vertex operators all differ)::

    python scripts/benchmark_graphs.py --problem wells --cells 16 --cases hypercube_N4096
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rdgraph.studies.launch import run_worker

ROOT = Path(__file__).resolve().parent.parent

#: ``--solver`` choices: rdgraph's ``solver.type`` values (``auto`` measures what it picks).
SOLVERS = ("auto", "spectral", "vertex", "krylov", "direct", "fieldsplit")
#: Mean degree of the random sparse graphs.
RANDOM_DEGREE = 8
#: The cases: name -> (graph table, N). Hamming H(d, q) has q**d vertices.
CASES: dict[str, tuple[dict, int]] = {}
for _n in (64, 1024, 4096, 15625):
    CASES[f"path_N{_n}"] = ({"kind": "path", "n": _n}, _n)
for _d in (6, 10, 12, 14):
    CASES[f"hypercube_N{2**_d}"] = ({"kind": "hypercube", "dim": _d}, 2**_d)
for _d, _q in ((3, 4), (5, 4), (6, 4), (6, 5)):
    CASES[f"hamming_N{_q**_d}"] = ({"kind": "hamming", "dim": _d, "choices": _q}, _q**_d)
for _n in (64, 1024, 4096, 15625, 100_000):
    CASES[f"random_N{_n}"] = ({"kind": "random", "n": _n, "p": RANDOM_DEGREE / (_n - 1),
                               "seed": 1}, _n)
#: ``--quick``: one small case per kind, a 4² mesh, two steps.
QUICK_CASES = {
    "path_N16": ({"kind": "path", "n": 16}, 16),
    "hypercube_N16": ({"kind": "hypercube", "dim": 4}, 16),
    "hamming_N27": ({"kind": "hamming", "dim": 3, "choices": 3}, 27),
    "random_N32": ({"kind": "random", "n": 32, "p": RANDOM_DEGREE / 31, "seed": 1}, 32),
}
#: Scale ``s`` of the per-vertex offsets of the ``offsets`` problem, and its temperature.
OFFSET_SCALE = 0.5
BETA = 0.5
#: The ``wells`` problems: centres uniform in this square, depths uniform in this range.
WELL_CENTRES = (0.3, 0.7)
WELL_DEPTHS = (0.5, 2.0)
PROBLEMS = ("same", "offsets", "wells", "wells-gibbs")


# -- the worker side (runs under mpiexec) -------------------------------------------------------
def peak_memory_mb(comm) -> list[float]:
    """Each rank's peak resident memory (VmHWM) in MB, gathered on every rank."""
    peak = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = float(line.split()[1]) / 1024
    return comm.allgather(peak)


def write_losses(path: Path, n: int, seed: int = 0) -> None:
    """A per-vertex data file: a ``vertex`` and a ``loss`` column, loss uniform in [0, 1]."""
    import numpy as np

    loss = np.random.default_rng(seed).random(n)
    lines = ["vertex,loss"] + [f"{g},{value!r}" for g, value in enumerate(loss.tolist())]
    path.write_text("\n".join(lines) + "\n")


def write_wells(path: Path, n: int, seed: int = 0) -> None:
    """A per-vertex data file: ``vertex``, ``cx``, ``cy`` (a well's centre, uniform in
    :data:`WELL_CENTRES` squared) and ``depth`` (uniform in :data:`WELL_DEPTHS`)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.uniform(*WELL_CENTRES, size=(n, 2))
    depths = rng.uniform(*WELL_DEPTHS, size=n)
    lines = ["vertex,cx,cy,depth"] + [
        f"{g},{cx!r},{cy!r},{d!r}"
        for g, ((cx, cy), d) in enumerate(zip(centres.tolist(), depths.tolist(), strict=True))]
    path.write_text("\n".join(lines) + "\n")


def config(case: dict) -> dict:
    """The rdgraph config of a case (``graph``, ``cells``, ``dt``, ``steps``, ``solver``,
    ``problem``, and for ``offsets`` the ``data`` file)."""
    centre = "(x[0] - 0.5)**2 + (x[1] - 0.5)**2"
    model = {"coupling": "laplacian", "beta": BETA, "potential": centre,
             # Vertices start apart (else the graph term has nothing to do).
             "initial": "1 + 0.5*cos(pi*x[0])*cos(g)"}
    if case["problem"] == "offsets":
        model.update({"coupling": "gibbs", "data": case["data"],
                      "potential": f"{centre} + {OFFSET_SCALE}*loss[g]"})
    elif case["problem"] in ("wells", "wells-gibbs"):
        model.update({"data": case["data"],
                      "potential": "depth[g]*((x[0] - cx[g])**2 + (x[1] - cy[g])**2)"})
        if case["problem"] == "wells-gibbs":
            model["coupling"] = "gibbs"
    solver = {"type": case["solver"], "rtol": case["rtol"]}
    return {
        "mesh": {"shape": "rectangle", "cells": [case["cells"]] * 2},
        "space": {"degree": 1},
        "graph": case["graph"],
        "model": model,
        "time": {"scheme": "implicit-euler", "dt": case["dt"],
                 "t_end": case["dt"] * case["steps"]},
        "solver": solver,
        "output": {"fields_every": 0, "npz": False},
    }


def run_rdgraph(case: dict, comm) -> dict:
    """Set up and step a case, then measure the lower bound on the same ranks (collective)."""
    from rdgraph.problem.config import settings_from_dict
    from rdgraph.simulation import Simulation
    from rdgraph.studies.lower_bound import scalar_lower_bound

    settings = settings_from_dict(config(case))
    comm.Barrier()
    start = time.perf_counter()
    sim = Simulation(settings, comm)
    comm.Barrier()
    setup = time.perf_counter() - start
    result = {"setup": setup, "timings": sim.timings, "unknowns": sim.num_dofs * sim.graph.n,
              "vertices": sim.graph.n, "edges": sim.graph.num_edges,
              "solver_options": json.loads(json.dumps(sim.solver_options, default=str))}
    initial_mass = float(sim.diagnostics().vertex_masses.sum())
    times, iterations = [], []
    for _ in range(case["steps"]):
        comm.Barrier()
        t0 = time.perf_counter()
        iterations.append(int(sim.advance()))
        comm.Barrier()
        times.append(time.perf_counter() - t0)
    final_mass = float(sim.diagnostics().vertex_masses.sum())
    result.update({
        "first_step": times[0],
        # The first step may still set things up (a Krylov space, a cache): the later ones.
        "step": min(times[1:]) if len(times) > 1 else times[0],
        "steps": times,
        "iterations": iterations,
        "mass_drift": abs(final_mass - initial_mass) / initial_mass,
    })
    sim.destroy()
    # Before the bound, so that the peak is the run's own.
    result["memory_mb"] = peak_memory_mb(comm)
    bound = scalar_lower_bound(settings, comm)
    result["lower_bound"] = bound
    result["step_over_lb"] = result["step"] / bound["step"] if bound["step"] > 0 else None
    return result


def worker(case: dict) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    result = run_rdgraph(case, comm)
    if comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


# -- the driver side ----------------------------------------------------------------------------
def run_case(case: dict, ranks: int, timeout: float) -> dict:
    """Run one case in its own ``mpiexec`` and return its result or ``{"error": ...}``."""
    return run_worker(__file__, case, ranks, timeout, root=ROOT)


def select(names: str | None, cases: dict, max_n: int | None) -> dict:
    """The cases named in ``names`` (comma-separated case names or graph kinds), up to
    ``max_n`` vertices."""
    chosen = dict(cases)
    if names:
        wanted = [w.strip() for w in names.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in cases
                   and not any(k.split("_")[0] == w for k in cases)]
        if unknown:
            raise SystemExit(f"--cases: unknown {', '.join(unknown)} (cases: "
                             f"{', '.join(cases)}; or a kind: path, hypercube, hamming, random)")
        chosen = {k: v for k, v in cases.items() if k in wanted or k.split("_")[0] in wanted}
    if max_n is not None:
        chosen = {k: v for k, v in chosen.items() if v[1] <= max_n}
    return chosen


def table_rows(results: dict) -> list[dict]:
    """One row per case: the figures of the docs table (None where the case failed)."""
    rows = []
    for name, entry in results["cases"].items():
        r = entry["result"]
        row = {"case": name, "vertices": entry["n"], "unknowns": None, "solver": None,
               "setup": None, "step": None, "iterations": None, "memory_mb": None,
               "lb_step": None, "step_over_lb": None, "error": None}
        if "error" in r:
            lines = r["error"].strip().splitlines()
            row["error"] = lines[-1][:160] if lines else "failed"
        else:
            row.update({"unknowns": r["unknowns"], "setup": r["setup"], "step": r["step"],
                        "iterations": max(r["iterations"]),
                        "memory_mb": sum(r["memory_mb"]),
                        "solver": r["solver_options"].get("type")
                        if isinstance(r["solver_options"], dict) else None,
                        "lb_step": r["lower_bound"]["step"],
                        "step_over_lb": r["step_over_lb"]})
        rows.append(row)
    return rows


def _fmt(value, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one small graph of each kind on a 4x4 mesh, 2 steps")
    parser.add_argument("--cases", default=None,
                        help="comma-separated case names or graph kinds (default: all)")
    parser.add_argument("--max-n", type=int, default=None, help="skip cases with more vertices")
    parser.add_argument("--solver", default="auto", choices=SOLVERS, help="solver.type")
    parser.add_argument("--problem", default="same", choices=PROBLEMS)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--cells", type=int, default=None, help="mesh cells per direction (8)")
    parser.add_argument("--steps", type=int, default=None, help="time steps per case (3)")
    parser.add_argument("--dt", type=float, default=0.05)
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "benchmark_graphs.json")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per case, seconds")
    parser.add_argument("--append", action="store_true",
                        help="add this run to the list 'runs' of an existing --json file "
                             "(e.g. docs/notes/benchmark_graphs.json: one run per solver)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    cases = select(args.cases, QUICK_CASES if args.quick else CASES, args.max_n)
    cells = args.cells or (4 if args.quick else 8)
    steps = args.steps or (2 if args.quick else 3)
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "quick": args.quick, "ranks": args.ranks, "solver": args.solver,
                     "problem": args.problem, "cells": cells, "steps": steps, "dt": args.dt,
                     "rtol": args.rtol, "cases": {}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    earlier = []
    if args.append and args.json.exists():
        earlier = json.loads(args.json.read_text()).get("runs", [])

    def save() -> None:
        # Kept as measured: a long sweep stopped part-way still leaves its figures.
        results["table"] = table_rows(results)
        document = {"runs": [*earlier, results]} if args.append else results
        args.json.write_text(json.dumps(document, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="benchmark_graphs_") as scratch:
        for name, (graph, n) in cases.items():
            case = {"graph": graph, "cells": cells, "steps": steps, "dt": args.dt,
                    "rtol": args.rtol, "solver": args.solver, "problem": args.problem}
            recorded = case
            if args.problem != "same":
                data = Path(scratch) / f"{name}.csv"
                writer = write_losses if args.problem == "offsets" else write_wells
                writer(data, n)
                case["data"] = str(data)
                # The JSON says how the file was made, not where it was for a moment.
                recorded = {**case, "data": f"(generated: {writer.__name__}, seed 0)"}
            print(f"  running {name} ({n} vertices, {args.solver}) ...", flush=True)
            r = run_case(case, args.ranks, args.timeout)
            if "error" in r:
                lines = r["error"].strip().splitlines() or ["?"]
                print(f"    failed: {lines[-1][:200]}", flush=True)
            results["cases"][name] = {"case": recorded, "n": n, "result": r}
            save()
    rows = table_rows(results)
    header = (f"{'case':<18} {'unknowns':>10} {'solver':>9} {'set-up s':>9} {'step s':>9} "
              f"{'its':>4} {'MB':>7} {'LB s':>9} {'step/LB':>8}")
    print("\n" + header)
    for row in rows:
        if row["error"]:
            print(f"{row['case']:<18} failed: {row['error']}")
            continue
        print(f"{row['case']:<18} {row['unknowns']:>10} {row['solver'] or '?':>9} "
              f"{_fmt(row['setup']):>9} {_fmt(row['step']):>9} {row['iterations']:>4} "
              f"{row['memory_mb']:>7.0f} {_fmt(row['lb_step']):>9} "
              f"{_fmt(row['step_over_lb']):>8}")
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
