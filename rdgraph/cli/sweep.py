"""``rdgraph sweep SWEEP.toml``: every combination of a parameter sweep (see
:mod:`rdgraph.studies.sweep`)."""

from __future__ import annotations

from pathlib import Path

from rdgraph.compat import MPI
from rdgraph.studies.sweep import load_sweep, run_sweep

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser) -> None:
    """The options of ``rdgraph sweep``."""
    parser.add_argument("sweep", type=Path, metavar="SWEEP.toml", help="the sweep file")
    parser.add_argument("--out", type=Path,
                        help="the sweep's folder (default: the file's out, else "
                        "results/<sweep name>); reused on restart")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def run_from_args(args) -> int:
    """``rdgraph sweep``: 0 when every case is ok, 3 when some failed (see sweep.csv)."""
    comm = MPI.COMM_WORLD
    sweep = load_sweep(args.sweep)
    out = args.out or (Path(sweep.out) if sweep.out else Path("results") / args.sweep.stem)
    results = run_sweep(sweep, out, comm, solver_overrides=getattr(args, "petsc_options", None),
                        quiet=args.quiet)
    failed = [r for r in results if r.status != "ok"]
    if comm.rank == 0 and not args.quiet:
        print(f"sweep: {len(results) - len(failed)} of {len(results)} cases ok -> "
              f"{out / 'sweep.csv'}", flush=True)
    return 3 if failed else 0
