"""``rdgraph plot RUN_DIR``: the PNG figures of a run directory (:mod:`rdgraph.output.plots`)."""

from __future__ import annotations

from pathlib import Path

from rdgraph.compat import MPI
from rdgraph.errors import on_root
from rdgraph.output.plots import plot_run

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser) -> None:
    """The options of ``rdgraph plot``."""
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a run directory (writes RUN_DIR/plots/*.png)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def run_from_args(args) -> int:
    """``rdgraph plot RUN_DIR``: rank 0 draws; an invalid RUN_DIR fails on every rank."""
    comm = MPI.COMM_WORLD
    written = on_root(comm, lambda: [str(p) for p in plot_run(args.run_dir)])
    if comm.rank == 0 and not args.quiet:
        print("\n".join(f"wrote {p}" for p in written), flush=True)
    return 0
