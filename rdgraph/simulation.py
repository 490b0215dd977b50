"""A simulation: settings in, a time-stepped state and diagnostics out.

:class:`Simulation` holds the state in memory (for scripts and tests); :func:`run` adds the
run directory and its files (the command-line contract).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI, dolfinx, versions
from rdgraph.discretization.blocks import BlockLayout
from rdgraph.discretization.meshes import build_mesh
from rdgraph.discretization.model import Model
from rdgraph.discretization.operators import BlockOperators
from rdgraph.errors import EnvironmentFailure, InputError, Interrupted, SolverError
from rdgraph.output import checkpoint
from rdgraph.output.diagnostics import Diagnostics, DiagnosticsRecorder, csv_header
from rdgraph.output.io import (
    DiagnosticsCSV,
    FieldWriter,
    gather_nodal_values,
    save_npz,
    write_config,
    write_json,
)
from rdgraph.output.plots import plot_run, read_diagnostics
from rdgraph.output.progress import Progress
from rdgraph.output.rundir import open_run_directory
from rdgraph.problem.config import Settings
from rdgraph.problem.size import check_memory
from rdgraph.problem.validation import (
    MESH_GDIM,
    check_expressions,
    check_vertex_lists,
    disconnected_warning,
    graph_from_settings,
)
from rdgraph.timestepping.factory import make_stepper

__all__ = ["RunResult", "Simulation", "run"]


class Simulation:
    """The semi-discrete reaction–diffusion system of one config, ready to time-step.

    Args:
        settings: Validated settings.
        comm: The communicator the mesh is distributed over.
        solver_overrides: PETSc options (without prefix) that override the config's,
            e.g. from the command line.
    """

    def __init__(
        self,
        settings: Settings,
        comm: MPI.Comm = MPI.COMM_WORLD,
        solver_overrides: dict | None = None,
    ):
        start = time.perf_counter()
        self.settings = settings
        self.comm = comm
        # Before the graph and the mesh are built: a size that cannot fit is refused at once.
        check_memory(settings, comm)
        self.graph = graph_from_settings(settings)
        check_vertex_lists(settings, self.graph)
        if settings.mesh.shape in MESH_GDIM:
            # Catch expression errors before the first collective operation.
            check_expressions(settings, self.graph, MESH_GDIM[settings.mesh.shape])
        self.mesh = build_mesh(settings.mesh, comm)
        mesh_done = time.perf_counter()
        self.model = Model(self.mesh, self.graph, settings.model, settings.space)
        warning = disconnected_warning(self.graph, self.model.components)
        if warning and comm.rank == 0:
            print(f"rdgraph: warning: {warning}", file=sys.stderr, flush=True)
        self.layout = BlockLayout(self.model.V, self.graph.n)
        self.operators = BlockOperators(self.model, self.layout, settings.space.lumping,
                                        settings.solver.gibbs_coupling)
        assembly_done = time.perf_counter()
        self.functions = []
        for g in range(self.graph.n):
            u = dolfinx.fem.Function(self.model.V, name=f"rho_{g}")
            u.x.array[:] = self.model.initial_nodal(g)
            self.functions.append(u)
        self.state = self.layout.create_vector()
        self.layout.from_functions(self.functions, self.state)
        self.recorder = DiagnosticsRecorder(self.model, self.operators.mass_row_sums())
        self.model.check_initial_mass(self.recorder.vertex_masses(self.functions))
        # The scheme's stepper, and the retry loop (halved steps) that every step goes through.
        self.stepper, self.guard = make_stepper(self.model, self.operators, settings,
                                                solver_overrides)
        self.solver_options = self.stepper.solver_options
        self.extra_columns = list(self.stepper.extra_columns)
        self.step_index = 0
        self.t = 0.0
        self.num_steps = settings.num_steps
        self.setup_time = time.perf_counter() - start
        self.timings = {
            "mesh": mesh_done - start,
            "forms_and_assembly": assembly_done - mesh_done,
            "solver_setup": self.setup_time - (assembly_done - start),
        }

    @property
    def num_dofs(self) -> int:
        """Scalar dofs per vertex (global)."""
        return self.layout.size_global

    def diagnostics(self, ksp_iterations: int = 0) -> Diagnostics:
        """Diagnostics of the current state (collective)."""
        d = self.recorder(self.step_index, self.t, self.functions, ksp_iterations)
        if self.extra_columns:
            extra = self.stepper.extra_diagnostics(self.guard.last_step_stats)
            d = dataclasses.replace(d, extra=tuple(extra))
        return d

    def advance(self) -> int:
        """Take one time step; return the Krylov iterations it took."""
        iterations = self.guard.step(self.state, self.t, self.step_index + 1)
        if self.guard.stepper is not self.stepper:  # a more robust solver took over
            self.stepper = self.guard.stepper
            self.solver_options = self.stepper.solver_options
        self.step_index += 1
        # t = n dt, not a running sum, so that long runs end exactly at t_end.
        self.t = self.step_index * self.settings.time.dt
        self.layout.to_functions(self.state, self.functions)
        return iterations

    def run(
        self,
        observer: Callable[[Diagnostics], None] | None = None,
        *,
        keep_history: bool = True,
    ) -> list[Diagnostics]:
        """Step to ``t_end``, calling ``observer`` with the diagnostics of every step from 0.

        Args:
            observer: Called with the diagnostics of every step, the current one first.
            keep_history: Return the diagnostics of every step. If false, only the first and
                the last are kept, and memory stays flat however many steps are taken
                (stream the others through ``observer``).

        Returns:
            The diagnostics of every step, or of the first and the last.
        """
        first = current = self.diagnostics()
        history = [first]
        if observer:
            observer(first)
        while self.step_index < self.num_steps:
            iterations = self.advance()
            current = self.diagnostics(iterations)
            if keep_history:
                history.append(current)
            if observer:
                observer(current)
        if not keep_history and current is not first:
            history.append(current)
        return history

    def minimum_potentials(self) -> np.ndarray:
        """Smallest nodal value of each ``V_g`` (collective)."""
        local = np.array([np.min(self.model.potential_nodal(g), initial=np.inf)
                          for g in range(self.graph.n)])
        result = np.empty_like(local)
        self.comm.Allreduce(local, result, op=MPI.MIN)
        return result

    def destroy(self) -> None:
        """Free PETSc objects (collective; do not rely on the garbage collector)."""
        self.guard.destroy()
        self.stepper.destroy()
        self.operators.destroy()
        self.state.destroy()


@dataclass
class RunResult:
    """What :func:`run` produced.

    ``history`` holds the diagnostics of every step with ``run(..., keep_history=True)``, and
    of the first and the last step otherwise (every row is in ``diagnostics.csv``).
    """

    out_dir: Path
    history: list[Diagnostics]
    summary: dict = field(default_factory=dict)

    @property
    def final(self) -> Diagnostics:
        return self.history[-1]


def _print(comm: MPI.Comm, *args) -> None:
    if comm.rank == 0:
        print(*args, flush=True)


def _share(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")


def _step_zero(path: Path, first: Diagnostics, comm: MPI.Comm) -> Diagnostics:
    """The diagnostics of step 0: ``first``, or after a resume the CSV's first row.

    A resumed run starts at the checkpoint; its F(0) and mass(0) are in the CSV. Rank 0 reads
    the file and broadcasts the row; a missing or unreadable row (the file was edited) falls
    back to the resume point.
    """
    if first.step == 0:
        return first
    n = first.vertex_masses.size
    row = None
    if comm.rank == 0:
        try:
            data = read_diagnostics(path)
            if data["step"][0] == 0:
                row = Diagnostics(
                    step=0, t=float(data["t"][0]),
                    vertex_masses=np.array([data[f"mass_{g}"][0] for g in range(n)]),
                    free_energy=float(data["free_energy"][0]),
                    rel_entropy=float(data["rel_entropy"][0]),
                    min_density=float(data["min_density"][0]), ksp_iterations=0)
        except (InputError, KeyError):
            row = None
    row = comm.bcast(row, root=0)
    return first if row is None else row


def _report(sim: Simulation, first: Diagnostics, last: Diagnostics, summary: dict) -> None:
    """The end-of-run table: where the mass went, the energy decrease, the cost.

    ``first`` is step 0 (after a resume, from the CSV).
    """
    comm = sim.comm
    depth = sim.minimum_potentials()
    gibbs = sim.model.gibbs_masses(first.vertex_masses)
    if comm.rank != 0:
        return
    lines = ["", f"{'vertex':>6} {'min V':>10} {'mass(0)':>11} {'mass(T)':>11} "
             f"{'share(T)':>9} {'Gibbs mass':>11}"]
    for g in range(sim.graph.n):
        lines.append(
            f"{g:>6d} {depth[g]:>10.4g} {first.vertex_masses[g]:>11.5g} "
            f"{last.vertex_masses[g]:>11.5g} {_share(last.vertex_masses[g], last.mass):>9.2%} "
            f"{gibbs[g]:>11.5g}"
        )
    winner = int(np.argmax(last.vertex_masses))
    lines += [
        "",
        f"winner: vertex {winner} holds {_share(last.vertex_masses[winner], last.mass):.1%} "
        "of the mass "
        f"at t = {last.t:.6g}",
        f"free energy: F(0) = {first.free_energy:.6g}, F(T) = {last.free_energy:.6g}, "
        f"decrease {first.free_energy - last.free_energy:.6g}; Gibbs state F_inf = "
        f"{summary['gibbs_free_energy']:.6g}",
        f"relative entropy: {first.rel_entropy:.6g} -> {last.rel_entropy:.6g}",
        f"mass drift: {_share(abs(last.mass - first.mass), abs(first.mass)):.3g} (relative)",
        f"time per step: {summary['time_per_step']:.4g} s over "
        f"{summary['steps'] - summary['resumed_from_step']} steps "
        f"(set-up {summary['setup_time']:.3g} s, {summary['ranks']} ranks, "
        f"{summary['dofs_total']} unknowns)",
    ]
    print("\n".join(lines), flush=True)


def _environment_failure(error: BaseException, what: str, out: Path | None,
                         last: str | Path | None) -> EnvironmentFailure:
    """One message for an OS or memory failure: the file, the OS error, the last checkpoint."""
    if isinstance(error, MemoryError):
        text = f"out of memory while {what}"
    else:
        name = getattr(error, "filename", None)
        reason = getattr(error, "strerror", None) or str(error)
        text = f"cannot {what}" + (f" {name}" if name else "") + f": {reason}"
        if getattr(error, "errno", None):
            text += f" [Errno {error.errno}]"
    if last is not None:
        text += (f"; the last good checkpoint is {last}: once the cause is fixed, continue "
                 f"with rdgraph run --resume {out}")
    elif out is not None:
        text += "; no checkpoint was written yet: run again once the cause is fixed"
    return EnvironmentFailure(text)


def _on_root(comm: MPI.Comm, fn: Callable[[], None]) -> BaseException | None:
    """Run ``fn`` on rank 0; its OS or memory error is returned on every rank."""
    error = None
    if comm.rank == 0:
        try:
            fn()
        except (OSError, MemoryError) as e:
            error = e
    return comm.bcast(error, root=0)


def run(
    settings: Settings,
    *,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
    solver_overrides: dict | None = None,
    config_name: str = "default",
    quiet: bool = False,
    resume: str | Path | None = None,
    keep_history: bool = False,
) -> RunResult:
    """Run one simulation and write its run directory.

    The run directory is locked for the whole run (a second process is refused), and
    ``overwrite`` replaces only a directory rdgraph created (see :mod:`rdgraph.output.rundir`).

    Args:
        settings: Validated settings.
        out_dir: The run directory; default ``output.dir``, else ``results/<config_name>``
            (then a fresh ``-2``, ``-3`` ... suffix instead of touching an existing one).
        overwrite: Replace an existing non-empty run directory that rdgraph created.
        comm: The communicator.
        solver_overrides: PETSc options that override the config's (no prefix).
        config_name: Name for the default run directory.
        quiet: Print nothing but errors and warnings.
        resume: A run directory to continue from its newest valid checkpoint (``out_dir``
            and ``overwrite`` are then ignored); its CSV is cut back to the checkpoint's step.
        keep_history: Keep the diagnostics of every step in :attr:`RunResult.history`.
            By default only the first and the last are kept, so memory does not grow with
            the number of steps (every row is in ``diagnostics.csv``).

    Returns:
        The run directory, the diagnostics (first and last, or every step) and the summary.

    Raises:
        InputError: Invalid input, a refused or busy run directory, no valid checkpoint.
        SolverError: A step failed after every retry (a checkpoint of the last good state
            is written first).
        Interrupted: SIGTERM/SIGINT (a checkpoint is written first).
        EnvironmentFailure: Disk full, read-only directory, permission denied, out of memory.
    """
    wall_start = time.perf_counter()
    sim = Simulation(settings, comm, solver_overrides)
    explicit = out_dir is not None or settings.output.dir is not None
    target = out_dir if out_dir is not None else settings.output.dir
    if resume is not None:
        directory = open_run_directory(resume, comm, resume=True)
    else:
        directory = open_run_directory(
            target if target is not None else Path("results") / config_name,
            comm, overwrite=overwrite, explicit=explicit,
        )
    try:
        return _run_in(sim, directory.path, settings, wall_start, quiet=quiet,
                       resume=resume is not None, keep_history=keep_history)
    finally:
        directory.release()


def _warn(comm: MPI.Comm, message: str) -> None:
    if comm.rank == 0:
        print(f"rdgraph: warning: {message}", file=sys.stderr, flush=True)


def _run_in(sim: Simulation, out: Path, settings: Settings, wall_start: float, *,
            quiet: bool, resume: bool, keep_history: bool) -> RunResult:
    """The life of a run inside its locked run directory."""
    comm = sim.comm
    header = csv_header(sim.graph.n) + sim.extra_columns
    last_good = None  # the newest checkpoint known to be complete
    csv_backup = None
    if resume:
        # Checked before anything in the directory changes: a refused resume changes nothing.
        state = checkpoint.load_checkpoint(out, settings, comm,
                                           shape=(sim.graph.n, sim.num_dofs))
        for reason in state["rejected"]:
            _warn(comm, f"{reason}: passed over")
        if state["rejected"]:
            _warn(comm, f"resuming from the older checkpoint {state['path']} "
                        f"(step {int(state['step'])})")
        checkpoint.restore(sim, state)
        last_good = state["path"]
        try:
            messages, csv_backup = checkpoint.truncate_csv(
                out / "diagnostics.csv", sim.step_index, comm, header)
        except (OSError, MemoryError) as e:
            raise _environment_failure(e, "rewrite", out, last_good) from None
        for message in messages:
            _warn(comm, message)
    start_step = sim.step_index
    error = _on_root(comm, lambda: write_config(out / "config.toml", settings.to_dict()))
    if error is not None:
        raise _environment_failure(error, "write", out, last_good)
    if not quiet:
        _print(comm, f"rdgraph: {sim.graph.n} vertices x {sim.num_dofs} dofs "
                     f"({settings.model.coupling}, {settings.time.scheme}, dt = "
                     f"{settings.time.dt:g}, {sim.num_steps} steps) -> {out}")
    csv = DiagnosticsCSV(out / "diagnostics.csv", header, comm, append=resume)
    fields_every = settings.output.fields_every
    # VTX cannot append: a resumed run writes its fields to a new file.
    fields_name = f"fields-from-{start_step}.bp" if resume else "fields.bp"
    fields = FieldWriter(out / fields_name, sim.functions, comm) if fields_every else None
    saver = checkpoint.Checkpointer(sim, out, settings.output.checkpoint_every)
    progress = Progress(sim.num_steps, rank=comm.rank, quiet=quiet)
    step_start = None
    fields_failed = False

    def write_fields(t: float) -> None:
        nonlocal fields_failed
        code = 0
        try:
            fields.write(t)
        except RuntimeError as e:
            code = _os_failure_in(e)
            if code is None:
                raise
        # ADIOS2 reports a full disk as a RuntimeError, on the ranks that write only.
        code = comm.allreduce(code, op=MPI.MAX)
        if code:
            fields_failed = True
            failure = OSError(code, os.strerror(code), str(out / fields_name))
            raise _environment_failure(failure, "write", out, saver.last or last_good)

    def observe(d: Diagnostics) -> None:
        nonlocal step_start, last_good
        if not resume or d.step > start_step:  # the checkpoint's row is in the CSV
            csv.write(d.row())
        # Rank 0 alone writes the CSV: its error (a full disk) ends every rank alike.
        failed = csv.check()
        if failed is not None:
            raise _environment_failure(failed, "write", out, saver.last or last_good)
        last = d.step == sim.num_steps
        if fields and (d.step % fields_every == 0 or last):
            write_fields(d.t)
        if d.step > start_step:
            saver.after_step(d.step)
            signum = signals.received()
            if signum:
                path = saver.write()
                raise Interrupted(signum, f"stopped by signal {signum} after step {d.step} "
                                          f"(t = {d.t:.6g}); checkpoint {path}; continue with "
                                          f"rdgraph run --resume {out}")
        if d.step == start_step:
            step_start = time.perf_counter()
        progress(d)

    # Errors raised on every rank (solver failures, signals) allow the collective clean-up;
    # any other exception may come from one rank only, and a collective close would hang.
    collective = False
    try:
        with checkpoint.SignalWatch(comm) as signals:
            history = sim.run(observe, keep_history=keep_history)
        collective = True
        saver.write()
    except Interrupted:
        collective = True
        raise
    except SolverError as e:
        collective = True
        # The stepper left the last good state in place: save it for a resume.
        try:
            path = saver.write()
        except (OSError, MemoryError) as failure:
            raise _environment_failure(failure, "write a checkpoint into", out,
                                       last_good) from None
        raise SolverError(f"{e}; last good state (step {sim.step_index}, t = {sim.t:.6g}) "
                          f"saved in {path}") from None
    except EnvironmentFailure:
        collective = True
        raise
    except (OSError, MemoryError) as e:
        # A checkpoint that could not be written (decided on every rank), or an error of
        # this rank alone (then the command line ends every rank).
        raise _environment_failure(e, "write", out, saver.last or last_good) from None
    finally:
        progress.close()
        csv.close()
        if fields_failed:
            # Its close would throw again, or wait for a rank that already failed.
            fields.abandon()
        elif fields and collective:
            failing = sys.exc_info()[0] is not None
            try:
                fields.close()
            except RuntimeError:
                if not failing:  # else the error being raised says more (a full disk)
                    raise
    step_time = time.perf_counter() - step_start
    last_good = saver.last
    x, rho = gather_nodal_values(sim.functions)
    # After a resume, F(0) and mass(0) are step 0's, from the CSV.
    first, final = _step_zero(out / "diagnostics.csv", history[0], comm), history[-1]
    gibbs = sim.model.gibbs_masses(first.vertex_masses)
    summary = {
        "versions": versions(),
        "ranks": comm.size,
        "vertices": sim.graph.n,
        "dofs_per_vertex": sim.num_dofs,
        "dofs_total": sim.num_dofs * sim.graph.n,
        "degree": settings.space.degree,
        "coupling": settings.model.coupling,
        "scheme": settings.time.scheme,
        "dt": settings.time.dt,
        "steps": sim.step_index,
        "resumed_from_step": start_step,
        "retried_steps": sim.guard.retries,
        # Failed solves retried with a more robust solver: step, from, to, reason.
        "solver_fallbacks": sim.guard.fallbacks,
        "t_end": sim.t,
        "setup_time": sim.setup_time,
        "setup_timings": sim.timings,
        "wall_time": time.perf_counter() - wall_start,
        "time_per_step": step_time / max(1, sim.step_index - start_step),
        "solver_options": {k: v for k, v in sim.solver_options.items()},
        "final_vertex_masses": [float(m) for m in final.vertex_masses],
        # Per component: each component's initial mass shared by its Gibbs weights, divided
        # by the total initial mass (on a connected graph, ∫π_g / Σ_h ∫π_h).
        "gibbs_vertex_fractions": [float(f) for f in (
            gibbs / first.mass if first.mass > 0 else sim.model.gibbs_fractions)],
        "initial_mass": first.mass,
        "final_mass": final.mass,
        "initial_free_energy": first.free_energy,
        "final_free_energy": final.free_energy,
        "gibbs_free_energy": sim.model.gibbs_free_energy(first.vertex_masses),
    }
    if not quiet:
        _report(sim, first, final, summary)
    summary["wall_time"] = time.perf_counter() - wall_start

    def write_final() -> None:
        if settings.output.npz:
            save_npz(out / "final.npz", x=x, rho=rho, t=np.array(sim.t))
        write_json(out / "summary.json", summary)
        if csv.error is not None:
            raise csv.error
        if csv_backup is not None:
            # The resumed run has rewritten every row the copy held beyond its checkpoint.
            csv_backup.unlink(missing_ok=True)

    error = _on_root(comm, write_final)
    sim.destroy()
    if error is not None:
        raise _environment_failure(error, "write", out, last_good)
    if settings.output.plots and comm.rank == 0:
        _write_plots(out, quiet)
    return RunResult(out_dir=out, history=history, summary=summary)


# Words of OS errors as C++ libraries (ADIOS2) put them into their exception messages.
_OS_WORDS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
             errno.EACCES: "Permission denied", errno.EDQUOT: "Disk quota exceeded"}


def _os_failure_in(error: RuntimeError) -> int | None:
    text = str(error)
    return next((code for code, words in _OS_WORDS.items() if words in text), None)


def _write_plots(out: Path, quiet: bool) -> None:
    """The run's PNG figures (rank 0, after every file they read is complete)."""
    try:
        plot_run(out)
    except Exception as e:  # noqa: BLE001
        # The simulation has finished and its files are written: a figure that cannot be
        # drawn (a matplotlib or font problem) is reported, not turned into a failed run.
        print(f"rdgraph: warning: plots not written: {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
        return
    if not quiet:
        print(f"plots: {out / 'plots'}", flush=True)

