"""``rdgraph info``: what a config would solve, without solving it (see :mod:`rdgraph.info`)."""

from __future__ import annotations

import json

from rdgraph.cli.common import add_config_arguments
from rdgraph.compat import MPI
from rdgraph.info import describe, format_info
from rdgraph.problem.config import load_settings

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser) -> None:
    """Arguments of ``rdgraph info``."""
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_from_args(args) -> int:
    """Run ``rdgraph info``; prints on rank 0 only."""
    settings = load_settings(args.config, args.overrides)
    info = describe(settings, MPI.COMM_WORLD)
    if MPI.COMM_WORLD.rank == 0:
        print(json.dumps(info, indent=2) if args.json else format_info(info), flush=True)
    return 0
