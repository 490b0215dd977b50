"""``rdgraph particles``: Monte Carlo particles of the same flow, optionally against FEM."""

from __future__ import annotations

import sys
from pathlib import Path

from rdgraph.cli.common import add_config_arguments
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.particles.accelerated import DYNAMICS
from rdgraph.particles.run import EXIT_DISAGREE, run_particles
from rdgraph.problem.config import load_settings

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser) -> None:
    """The options of ``rdgraph particles``."""
    add_config_arguments(parser, default="the built-in NAS toy")
    parser.add_argument("--out", type=Path,
                        help="run directory (default: results/NAME-particles)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty run directory")
    parser.add_argument("--particles", type=int, default=100_000,
                        help="total number of particles, split across ranks (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--substeps", type=int, default=1,
                        help="particle steps per config time step (default 1)")
    parser.add_argument("--outputs", type=int, default=20,
                        help="output intervals for the vertex fractions (default 20)")
    parser.add_argument("--snapshots", type=int, default=3,
                        help="position snapshot intervals (default 3: 4 snapshots)")
    parser.add_argument("--compare", action="store_true",
                        help="also run the FEM solver and compare (exit 4 if some |z| is "
                        "beyond the limit)")
    parser.add_argument("--z-limit", type=float, default=None, metavar="Z",
                        help="largest |z| accepted (default: 3, raised for many tests to a "
                        "1%% chance of refusing a correct run)")
    parser.add_argument("--dynamics", choices=DYNAMICS, default="langevin",
                        help="langevin: the gradient flow (default); accelerated: damped "
                        "Hamiltonian particles with a kernel density estimate, damping and "
                        "restart from [time]")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def _check_arguments(args) -> None:
    for name, low, high in (("particles", 1, 10**9), ("seed", 0, 2**63 - 1),
                            ("substeps", 1, 10**6), ("outputs", 1, 10**6),
                            ("snapshots", 1, 1000)):
        value = getattr(args, name)
        if not low <= value <= high:
            raise InputError(f"--{name} {value}: must be in {low}..{high}")
    if args.z_limit is not None and not args.z_limit > 0:
        raise InputError(f"--z-limit {args.z_limit}: must be > 0")


def run_from_args(args) -> int:
    """``rdgraph particles``: returns 0, or ``EXIT_DISAGREE`` when ``--compare`` fails."""
    _check_arguments(args)
    settings = load_settings(args.config, args.overrides)
    result = run_particles(
        settings, particles=args.particles, seed=args.seed, substeps=args.substeps,
        outputs=args.outputs, snapshots=args.snapshots, compare=args.compare,
        limit=args.z_limit,
        out_dir=args.out, overwrite=args.overwrite,
        config_name=args.config.stem if args.config is not None else "default",
        quiet=args.quiet, dynamics=args.dynamics,
    )
    c = result.comparison
    if c is not None and not c.passed:
        k, g = c.worst
        if MPI.COMM_WORLD.rank == 0:
            print(f"rdgraph: particles and FEM disagree: |z| = {c.max_abs_z:.3g} > {c.limit:.3g} "
                  f"for vertex {g} at t = {result.times[k]:.6g} (particles "
                  f"{result.fractions[k, g]:.5f}, FEM {c.fem_fractions[k, g]:.5f}); the FEM or "
                  "particle time step may be too coarse (try --substeps or a smaller time.dt), "
                  f"see {result.out_dir / 'comparison.png'}", file=sys.stderr, flush=True)
        return EXIT_DISAGREE
    return 0
