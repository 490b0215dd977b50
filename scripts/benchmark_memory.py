"""Resident memory of a long run: flat over 10,000 steps (a benchmark, not a timed test).

Runs ``rdgraph.run`` (the command line's code path: CSV streamed, checkpoints, no history)
on a small problem for 10,000 steps and prints the resident set size (VmRSS) at steps
1,000 and 10,000 and their difference. Exits 1 if memory grew by more than 2 MB.

    python scripts/benchmark_memory.py [--steps 10000] [--limit-mb 2] [--out DIR]
    mpiexec -n 2 python scripts/benchmark_memory.py   # rank 0's memory, and the largest growth
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import rdgraph
from rdgraph.compat import MPI
from rdgraph.output.progress import Progress


def rss_kib() -> int:
    """This process's resident set size in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--limit-mb", type=float, default=2.0)
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    first = max(1, args.steps // 10)
    samples: dict[int, int] = {}
    real_call = Progress.__call__

    def sampling(self, d):
        # The progress line is called once per step with its diagnostics: sample there.
        if d.step in (first, args.steps):
            samples[d.step] = rss_kib()
        return real_call(self, d)

    Progress.__call__ = sampling
    dt = 1e-3
    settings = rdgraph.load_settings(None, [
        "mesh.cells=[8, 8]", "graph.kind='path'", "graph.n=3",
        "model.potential='(x[0] - 0.3*g)**2'", "model.source='0.1*x[1]*exp(-t)'",
        "time.scheme='bdf2'", f"time.dt={dt}", f"time.t_end={args.steps * dt}",
        "output.fields_every=0", "output.checkpoint_every=1000", "output.plots=false",
    ])
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out if args.out is not None else Path(comm.bcast(scratch, root=0)) / "run"
        rdgraph.run(settings, out_dir=out, comm=comm, quiet=True)
    growth = samples[args.steps] - samples[first]
    largest = comm.allreduce(growth, op=MPI.MAX)
    if comm.rank == 0:
        print(f"resident memory (rank 0): step {first}: {samples[first]} KiB, step "
              f"{args.steps}: {samples[args.steps]} KiB, difference {growth:+d} KiB "
              f"(largest over {comm.size} rank(s): {largest:+d} KiB; limit "
              f"{args.limit_mb:g} MB)")
    return 1 if largest > args.limit_mb * 1024 else 0


if __name__ == "__main__":
    sys.exit(main())
