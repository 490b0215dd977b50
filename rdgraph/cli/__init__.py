"""The ``rdgraph`` command: a thin shell over the public API.

Exit status, the same on every rank:

* 0 success;
* 2 invalid input: config, ``--set``, mesh, graph, expression, a size whose memory estimate
  exceeds the machines', a refused ``--out``/``--overwrite`` (not a run directory rdgraph
  created, the current directory or an ancestor, home, ``/``, a mount point, a symlink), a run
  directory in use by another process, a ``--resume`` directory without a valid checkpoint;
* 3 a solver failure (a checkpoint of the last good state is written);
* 4 the computation ran, but its check failed: ``rdgraph particles --compare`` (particles and
  FEM disagree), ``rdgraph convergence`` (an observed order misses the expected one);
* 5 the environment failed: disk full, read-only directory, permission denied, out of memory
  (one message naming the file, the OS error and the last good checkpoint);
* 130 / 143 stopped by SIGINT / SIGTERM (during the time loop after writing a checkpoint;
  during set-up or the final output at once); 141 standard output closed (``rdgraph run |
  head``), likewise;
* 1 anything else: a bug. Under MPI an unexpected exception on any rank aborts every rank.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
import traceback
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_SOLVER, EXIT_ENVIRONMENT = 0, 1, 2, 3, 5

# Subcommands besides ``run``: name -> (module, help). Each module provides
# ``add_arguments(parser)`` and ``run_from_args(args) -> int``; the modules are imported
# lazily so that ``rdgraph --help`` stays cheap and a new command touches one line here.
SUBCOMMANDS = {
    "convergence": ("rdgraph.cli.convergence", "verification and convergence studies"),
    "info": ("rdgraph.cli.info",
             "versions, problem size, solver choice and graph spectrum of a config"),
    "plot": ("rdgraph.cli.plot", "PNG figures of a run directory (RUN_DIR/plots)"),
    "sweep": ("rdgraph.cli.sweep", "run every combination of a parameter sweep (SWEEP.toml)"),
    "particles": ("rdgraph.cli.particles", "Monte Carlo particles of the same flow (vs FEM)"),
}


class _ClosedStdoutGuard:
    """Standard output that turns into /dev/null once its reader is gone.

    ``rdgraph run ... | head -1`` closes the pipe: writes then fail with EPIPE (the SIGPIPE
    that comes with it is ignored, or recorded by the run's signal watch, which stops the
    run with a checkpoint). The file descriptor is pointed at /dev/null so that neither
    later prints nor the flush at exit raise ``BrokenPipeError``.
    """

    def __init__(self, stream):
        self._stream = stream

    def _closed(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _quiet_closed_stdout() -> None:
    """Undo PETSc's SIGPIPE handler (it prints 'Caught signal number 13' and aborts)."""
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Python's own default: EPIPE, not death
    if not isinstance(sys.stdout, _ClosedStdoutGuard):
        try:
            sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a real file (captured by a test harness): nothing to guard
        sys.stdout = _ClosedStdoutGuard(sys.stdout)


def _install_mpi_excepthook() -> None:
    """Print the traceback and abort all ranks: an exception on one rank must not hang."""
    from mpi4py import MPI

    def hook(exc_type, exc, tb):
        text = f"rdgraph: unexpected error on rank {MPI.COMM_WORLD.rank}:\n" + "".join(
            traceback.format_exception(exc_type, exc, tb))
        sys.stdout.flush()
        sys.stderr.flush()
        # One write, then a moment for mpiexec to forward it: Abort kills the output pipes.
        os.write(2, text.encode())
        if MPI.COMM_WORLD.size > 1:
            time.sleep(0.5)
            MPI.COMM_WORLD.Abort(EXIT_FAILURE)
        sys.exit(EXIT_FAILURE)

    sys.excepthook = hook


def _install_setup_signal_handlers() -> dict:
    """SIGTERM/SIGINT outside the time loop end the process with 128 + signal at once.

    During set-up (imports, mesh, assembly, factorization) and the final output there is
    nothing new to save: the time loop installs its own handlers, which checkpoint first.
    These replace PETSc's handler (which turns SIGTERM into an MPI abort with status 59) and
    Python's KeyboardInterrupt. Every rank gets the signal from the scheduler and leaves by
    itself; one that waits in a collective for a rank already gone is ended by ``mpiexec``.
    """
    import signal

    def handler(signum, frame):
        try:
            rank = int(os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
                       or 0)
        except ValueError:
            rank = 0
        if rank == 0:
            os.write(2, f"rdgraph: stopped by signal {signum} outside the time loop (set-up or "
                        "final output): no new checkpoint was written; run the command again, "
                        "or --resume the run directory if it holds a checkpoint\n".encode())
        os._exit(128 + signum)

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _split_petsc_options(tokens: list[str], prefix: str) -> tuple[dict, dict, list[str]]:
    """Split ``-opt [value]`` tokens into solver options (under ``prefix``) and global ones."""
    solver, global_, unknown = {}, {}, []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-") or token.startswith("--") or len(token) < 2:
            unknown.append(token)
            i += 1
            continue
        value = None
        if i + 1 < len(tokens) and not _looks_like_option(tokens[i + 1]):
            value = tokens[i + 1]
            i += 1
        name = token[1:]
        if name.startswith(prefix):
            solver[name[len(prefix):]] = value
        else:
            global_[name] = value
        i += 1
    return solver, global_, unknown


def _looks_like_option(token: str) -> bool:
    if not token.startswith("-"):
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def _parser() -> argparse.ArgumentParser:
    from rdgraph.cli.common import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="rdgraph",
        description="Reaction–diffusion gradient flows on R^d × G (DOLFINx/PETSc, MPI).",
        epilog="PETSc options for the block solver go under the prefix -rd_, e.g. "
        "-rd_ksp_monitor -rd_ksp_rtol 1e-10; -log_view prints PETSc's profile.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a simulation (the built-in default without CONFIG)")
    add_config_arguments(run)
    run.add_argument("--out", type=Path, help="run directory (default: output.dir or results/NAME)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing non-empty run directory")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="continue RUN_DIR from its newest checkpoint (CONFIG defaults to "
                     "RUN_DIR/config.toml)")
    run.add_argument("--quiet", action="store_true", help="print only errors")
    for name, (module, help_text) in SUBCOMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    return parser


def _run(args, solver_options: dict) -> int:
    import rdgraph

    if args.resume is not None and args.config is None:
        args.config = args.resume / "config.toml"
    settings = rdgraph.load_settings(args.config, args.overrides)
    name = args.config.stem if args.config is not None else "default"
    rdgraph.run(
        settings,
        out_dir=args.out,
        overwrite=args.overwrite,
        solver_overrides=solver_options,
        config_name=name,
        quiet=args.quiet,
        resume=args.resume,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rdgraph`` command; returns the exit status."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)  # signals are the main thread's
    previous = _install_setup_signal_handlers()
    try:
        return _main(argv)
    finally:
        # main() may be called in a process that goes on (tests, scripts): give it back the
        # handlers it had (Python's only; a C handler such as PETSc's reads as None).
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    from rdgraph.solvers.petsc import OPTIONS_PREFIX

    solver_options, global_options, unknown = _split_petsc_options(rest, OPTIONS_PREFIX)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

    _install_mpi_excepthook()
    from rdgraph.compat import MPI, PETSc
    from rdgraph.errors import EnvironmentFailure, InputError, Interrupted, SolverError
    from rdgraph.output.rundir import is_environment_error

    if threading.current_thread() is threading.main_thread():
        _install_setup_signal_handlers()  # again, in case importing PETSc installed its own

    _quiet_closed_stdout()
    database = PETSc.Options()
    for key, value in global_options.items():
        database.setValue(key, value)
    if "log_view" in global_options:
        PETSc.Log.begin()

    # A private communicator for agreeing on failures, so that its barrier can never be
    # matched with a collective of the run itself.
    consensus = MPI.COMM_WORLD.Dup()
    try:
        if args.command in SUBCOMMANDS:
            args.petsc_options = solver_options  # -rd_* options, for commands that solve
            module = importlib.import_module(SUBCOMMANDS[args.command][0])
            return module.run_from_args(args)
        return _run(args, solver_options)
    except InputError as e:
        return _fail(consensus, EXIT_INPUT, f"rdgraph: error: {e}")
    except SolverError as e:
        return _fail(consensus, EXIT_SOLVER, f"rdgraph: solver failure: {e}")
    except Interrupted as e:
        return _fail(consensus, 128 + e.signum, f"rdgraph: {e}")
    except EnvironmentFailure as e:
        return _fail(consensus, EXIT_ENVIRONMENT, f"rdgraph: environment failure: {e}")
    except (OSError, MemoryError) as e:
        # Not turned into an EnvironmentFailure where it happened (maybe on this rank only:
        # then _fail aborts every rank with the status).
        if not is_environment_error(e):
            raise
        what = "out of memory" if isinstance(e, MemoryError) else str(e)
        return _fail(consensus, EXIT_ENVIRONMENT, f"rdgraph: environment failure: {what}")


def _fail(consensus, status: int, message: str, timeout: float = 20.0) -> int:
    """Report an expected failure once and exit with ``status`` on every rank.

    Input and solver errors are decided collectively, so every rank normally arrives here;
    then rank 0 prints and all return. If a rank does not arrive within ``timeout``
    seconds, it is stuck in a collective: print here and abort everything instead.
    """

    from rdgraph.compat import MPI

    request = consensus.Ibarrier()
    deadline = time.monotonic() + timeout
    while not request.Test():
        if time.monotonic() > deadline:
            print(f"{message} (on rank {consensus.rank} only; aborting)", file=sys.stderr,
                  flush=True)
            MPI.COMM_WORLD.Abort(status)
        time.sleep(0.01)
    if consensus.rank == 0:
        print(message, file=sys.stderr, flush=True)
    return status


def entry_point() -> None:  # pragma: no cover - console script
    status = main()
    if status == EXIT_ENVIRONMENT:
        # A writer that failed on a full disk (ADIOS2) throws again from its destructor at
        # interpreter exit: end here, the message printed and every file closed or renamed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry_point()
