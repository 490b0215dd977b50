"""``rdgraph convergence`` and ``scripts/convergence.py``: the verification studies of
:mod:`rdgraph.studies.verification`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.studies import verification
from rdgraph.studies.verification import DOC_HEAD, FAMILIES, run_all

# The --help text of the command is the studies' own description.
STUDIES_DOC = verification.__doc__

__all__ = ["EXIT_ORDER_MISSED", "add_arguments", "main", "run_from_args"]


def main(argv: list[str] | None = None) -> int:
    """``rdgraph convergence`` / ``scripts/convergence.py``."""
    parser = argparse.ArgumentParser(prog="rdgraph convergence", description=STUDIES_DOC)
    add_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except InputError as e:
        parser.error(str(e))


def _families(text: str) -> tuple[str, ...]:
    """``--only``'s value: comma-separated names from :data:`FAMILIES`."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown or not names:
        given = ", ".join(unknown) or repr(text)
        raise argparse.ArgumentTypeError(f"unknown study families {given} "
                                         f"(known: {', '.join(FAMILIES)})")
    return names


def add_arguments(parser) -> None:
    """The options of the convergence command (shared by the CLI and the script)."""
    parser.add_argument("--quick", action="store_true",
                        help="coarse meshes, 3 levels (3-D: 2): about 75 s on one idle core")
    parser.add_argument("--out", type=Path, default=Path("results/verification"),
                        help="folder for CSV and PNG files")
    parser.add_argument("--docs", action="store_true",
                        help="write docs/verification.md and docs/verification/*")
    parser.add_argument("--only", type=_families, default=None,
                        metavar="FAMILY[,FAMILY]",
                        help=f"run only these study families: {', '.join(FAMILIES)}")


#: Exit status when every study ran but an observed order misses the expected one (as
#: ``rdgraph particles --compare``: the command worked, the numbers disagree).
EXIT_ORDER_MISSED = 4


def run_from_args(args) -> int:
    """``rdgraph convergence``: 0 when every study passes, :data:`EXIT_ORDER_MISSED` if not."""
    comm = MPI.COMM_WORLD
    out = Path("docs/verification") if args.docs else args.out
    only = getattr(args, "only", None)
    if args.docs and only is not None:
        raise InputError("--only and --docs exclude each other: the docs hold every study")
    result = run_all(out, quick=args.quick, comm=comm, only=only)
    if comm.rank == 0:
        print("\n== verdict ==\n" + result.summary(), flush=True)
    if args.docs and comm.rank == 0:
        Path("docs/verification.md").write_text(
            DOC_HEAD + f"\nMeasured on {comm.size} rank(s), "
            f"{'quick' if args.quick else 'full'} mode.\n" + result.report
            + "\n\n### Verdict\n\n```\n" + result.summary() + "\n```\n")
    return 0 if result.passed else EXIT_ORDER_MISSED
