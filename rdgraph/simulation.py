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
from rdgraph.output.diagnostics import (
    CSV_VERTEX_COLUMNS,
    Diagnostics,
    DiagnosticsRecorder,
    csv_header,
)
from rdgraph.output.io import (
    DiagnosticsCSV,
    FieldWriter,
    gather_nodal_values,
    save_npz,
    write_config,
    write_json,
)
from rdgraph.output.masses import (
    VertexMassFile,
    read_vertex_masses,
    truncate_vertex_masses,
)
from rdgraph.output.plots import plot_run, read_diagnostics
from rdgraph.output.progress import Progress, SetupProgress
from rdgraph.output.rundir import open_run_directory
from rdgraph.problem.config import EQUILIBRIUM, Settings
from rdgraph.problem.size import check_memory
from rdgraph.problem.validation import (
    MESH_GDIM,
    check_expressions,
    check_schedule,
    check_vertex_lists,
    disconnected_warning,
    graph_from_settings,
)
from rdgraph.timestepping.factory import make_stepper

__all__ = ["FIELDS_ALL_VERTICES", "RunResult", "Simulation", "run", "written_vertices"]

FIELDS_ALL_VERTICES = 16
"""Without ``output.fields_vertices``, graphs of at most this many vertices write every
vertex to ``fields.bp``, larger ones the ``top:16``."""

TABLE_ROWS = 10
"""The end-of-run table lists this many vertices: those of largest final mass."""


def written_vertices(setting: list[int] | str | None, gibbs_masses: np.ndarray) -> list[int]:
    """The vertices ``fields.bp`` holds, from ``output.fields_vertices`` (checked).

    ``"top:K"`` picks the K vertices of largest Gibbs-state mass (ties by the smaller
    index), in index order.
    """
    n = gibbs_masses.size
    if setting is None:
        setting = "all" if n <= FIELDS_ALL_VERTICES else f"top:{FIELDS_ALL_VERTICES}"
    if setting == "all":
        return list(range(n))
    if isinstance(setting, str):
        k = min(int(setting.partition(":")[2]), n)
        order = np.lexsort((np.arange(n), -gibbs_masses))  # largest first, then by index
        return sorted(int(g) for g in order[:k])
    return list(setting)


class Simulation:
    """The semi-discrete reaction–diffusion system of one config, ready to time-step.

    Args:
        settings: Validated settings.
        comm: The communicator the mesh is distributed over.
        solver_overrides: PETSc options (without prefix) that override the config's,
            e.g. from the command line.
        potential: Instead of ``model.potential(s)``: a Python callable ``V(x, g)`` with
            ``x`` of shape ``(3, P)`` (as for ``dolfinx.fem.Function.interpolate``) and
            ``g`` the vertex (an int), returning ``P`` values. Its nodal interpolant enters
            the forms (N assemblies: use an expression for separable potentials at large N).
        initial: Instead of ``model.initial(s)``: a Python callable ``ρ⁰(x, g)``, likewise.

    Example:
        >>> loss = np.load("loss.npy")
        >>> sim = Simulation(settings, potential=lambda x, g: (x[0] - 0.5)**2 + loss[g])
        verbose: Report the set-up's phases on rank 0 once it has taken a few seconds
            (:func:`run` turns it on unless quiet).
    """

    def __init__(
        self,
        settings: Settings,
        comm: MPI.Comm = MPI.COMM_WORLD,
        solver_overrides: dict | None = None,
        *,
        potential: Callable[[np.ndarray, int], np.ndarray] | None = None,
        initial: Callable[[np.ndarray, int], np.ndarray] | None = None,
        verbose: bool = False,
    ):
        # The progress's log handler is removed however the set-up ends.
        with SetupProgress(rank=comm.rank, quiet=not verbose) as progress:
            self._set_up(settings, comm, solver_overrides, potential, initial, progress)

    def _set_up(self, settings: Settings, comm: MPI.Comm, solver_overrides: dict | None,
                potential, initial, progress: SetupProgress) -> None:
        start = time.perf_counter()
        self.settings = settings
        self.comm = comm
        #: β(t) of a temperature schedule, else None (β is the number ``model.beta``); checked
        #: on [0, t_end] on every rank before any collective operation.
        self.schedule = check_schedule(settings)
        # Before the graph and the mesh are built: a size that cannot fit is refused at once.
        check_memory(settings, comm)
        self.graph = graph_from_settings(settings)
        check_vertex_lists(settings, self.graph)
        if settings.mesh.shape in MESH_GDIM:
            # Catch expression errors before the first collective operation.
            check_expressions(settings, self.graph, MESH_GDIM[settings.mesh.shape])
        progress.phase("mesh")
        self.mesh = build_mesh(settings.mesh, comm)
        mesh_done = time.perf_counter()
        progress.phase(f"forms and potentials of {self.graph.n} vertices")
        beta_range = None
        if self.schedule is not None:
            beta_range = self.schedule.check(settings.t_stop, "the run's end")
        self.model = Model(self.mesh, self.graph, settings.model, settings.space,
                           potential=potential, initial=initial, beta_range=beta_range)
        warning = disconnected_warning(self.graph, self.model.components)
        if warning and comm.rank == 0:
            print(f"rdgraph: warning: {warning}", file=sys.stderr, flush=True)
        self.layout = BlockLayout(self.model.V, self.graph.n)
        progress.phase("block operators")
        self.operators = BlockOperators(self.model, self.layout, settings.space.lumping,
                                        settings.solver.gibbs_coupling)
        assembly_done = time.perf_counter()
        # The state lives in the one block vector only: a DOLFINx Function per vertex would
        # hold an MPI communicator each (its scatterer), and MPI runs out of them near 2000
        # per process. Functions are made for the vertices written out only.
        progress.phase("initial state")
        self.state = self.layout.create_vector()
        self._functions = None  # made on demand by the ``functions`` property only
        owned = self.layout.size_local
        blocks = self.layout.blocks(self.state)
        for g in range(self.graph.n):
            blocks[g] = self.model.initial_nodal(g)[:owned]
        self.recorder = DiagnosticsRecorder(self.model, self.operators.mass_row_sums())
        self.model.check_initial_mass(self.recorder.vertex_masses(self.state))
        # The scheme's stepper, and the retry loop (halved steps) that every step goes through.
        progress.phase(f"solver ({settings.solver.type})")
        self.stepper, self.guard = make_stepper(self.model, self.operators, settings,
                                                solver_overrides)
        self.solver_options = self.stepper.solver_options
        self.extra_columns = list(self.stepper.extra_columns)
        if self.schedule is not None:
            self.extra_columns.append("beta")  # after every other column: they keep their place
        self.step_index = 0
        self.t = 0.0
        self.num_steps = settings.num_steps
        self.adaptive = settings.time.adaptive
        self.t_stop = settings.t_stop
        # t_end = "equilibrium": stop once H(ρ | ρ_π) is below this (else None).
        self.equilibrium_tolerance = (settings.time.equilibrium_tolerance
                                      if settings.time.t_end == EQUILIBRIUM else None)
        self.equilibrium_reached = False
        self.setup_time = time.perf_counter() - start
        progress.done()
        self.timings = {
            "mesh": mesh_done - start,
            "forms_and_assembly": assembly_done - mesh_done,
            "solver_setup": self.setup_time - (assembly_done - start),
        }

    @property
    def num_dofs(self) -> int:
        """Scalar dofs per vertex (global)."""
        return self.layout.size_global

    def nodal_values(self) -> np.ndarray:
        """The owned nodal values of every vertex, a writable ``(N, owned dofs)`` view of
        the state (write through it between steps, e.g. to set a state in a test)."""
        return self.layout.blocks(self.state)

    def vertex_function(self, g: int, out: dolfinx.fem.Function | None = None,
                        ) -> dolfinx.fem.Function:
        """Vertex ``g``'s density as a DOLFINx Function, ghosts updated (collective).

        A copy of the state: changing it does not change the run. Pass ``out`` to reuse
        one Function for many vertices; every new Function holds an MPI communicator, so
        do not keep one per vertex for large graphs.
        """
        if out is None:
            out = dolfinx.fem.Function(self.model.V, name=f"rho_{g}")
        self.layout.to_function(self.state, g, out)
        return out

    @property
    def functions(self) -> list[dolfinx.fem.Function]:
        """Every vertex's density as a DOLFINx Function: copies of the current state,
        refreshed at each access (collective on first access).

        For small graphs and scripts. The Functions are made on first access and kept,
        and each holds an MPI communicator: MPI allows about 2000 per process, so for
        large graphs use :meth:`nodal_values` or :meth:`vertex_function` instead. Writing
        into them does not change the state (write through :meth:`nodal_values`).
        """
        if self._functions is None:
            self._functions = [dolfinx.fem.Function(self.model.V, name=f"rho_{g}")
                               for g in range(self.graph.n)]
        self.layout.to_functions(self.state, self._functions)
        return self._functions

    def diagnostics(self, ksp_iterations: int = 0) -> Diagnostics:
        """Diagnostics of the current state (collective)."""
        if self.schedule is not None:
            # F and H(ρ | ρ_π) refer to the Gibbs state at the current β.
            self.operators.set_beta(self.beta)
        d = self.recorder(self.step_index, self.t, self.state, ksp_iterations)
        if self.extra_columns:
            extra = self.stepper.extra_diagnostics(self.guard.last_step_stats)
            if self.schedule is not None:
                extra = [*extra, self.beta]
            d = dataclasses.replace(d, extra=tuple(extra))
        return d

    @property
    def beta(self) -> float:
        """β at the current time (the schedule's value under a temperature schedule)."""
        if self.schedule is not None:
            return self.schedule(self.t)
        return self.model.beta_value

    def advance(self) -> int:
        """Take one time step; return the Krylov iterations it took."""
        iterations = self.guard.step(self.state, self.t, self.step_index + 1)
        if self.guard.stepper is not self.stepper:  # a more robust solver took over
            self.stepper = self.guard.stepper
            self.solver_options = self.stepper.solver_options
        self.step_index += 1
        if self.adaptive:
            self.t = self.stepper.time_after  # exactly t_stop at the last step
        else:
            # t = n dt, not a running sum, so that long runs end exactly at t_end.
            self.t = self.step_index * self.settings.time.dt
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
        while not self.finished(current):
            iterations = self.advance()
            current = self.diagnostics(iterations)
            if keep_history:
                history.append(current)
            if observer:
                observer(current)
        if not keep_history and current is not first:
            history.append(current)
        return history

    def finished(self, d: Diagnostics) -> bool:
        """Whether the run ends with the state of diagnostics ``d`` (the current state):
        at ``t_end`` (``t_max``), or at equilibrium."""
        if self.equilibrium_tolerance is not None and d.rel_entropy < self.equilibrium_tolerance:
            self.equilibrium_reached = True
            return True
        if self.adaptive:
            return self.t >= self.t_stop
        return self.step_index >= self.num_steps

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
            if n <= CSV_VERTEX_COLUMNS:
                masses = np.array([data[f"mass_{g}"][0] for g in range(n)])
            else:  # the CSV holds aggregates only: the binary file has every vertex
                steps, _, records = read_vertex_masses(path.parent)
                masses = records[0] if steps.size and steps[0] == 0 else None
            if data["step"][0] == 0 and masses is not None and masses.size == n:
                row = Diagnostics(
                    step=0, t=float(data["t"][0]),
                    vertex_masses=masses,
                    free_energy=float(data["free_energy"][0]),
                    rel_entropy=float(data["rel_entropy"][0]),
                    min_density=float(data["min_density"][0]), ksp_iterations=0)
        except (InputError, KeyError, OSError, ValueError):
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
    print("\n".join(_vertex_table(sim, first, last, depth, gibbs) + _report_tail(
        sim, first, last, summary)), flush=True)


def _vertex_table(sim: Simulation, first: Diagnostics, last: Diagnostics, depth: np.ndarray,
                  gibbs: np.ndarray) -> list[str]:
    """The end table's vertex rows: every vertex up to :data:`TABLE_ROWS`, else the
    :data:`TABLE_ROWS` of largest final mass (largest first), with their Gibbs shares."""
    n = sim.graph.n
    labels = getattr(sim.graph, "labels", None)
    if n <= TABLE_ROWS:
        shown = list(range(n))
        title = []
    else:
        shown = [int(g) for g in np.lexsort((np.arange(n), -last.vertex_masses))[:TABLE_ROWS]]
        held = _share(float(last.vertex_masses[shown].sum()), last.mass)
        title = [f"the {TABLE_ROWS} of {n} vertices with the most mass ({held:.1%} of it; "
                 f"every vertex's mass is in vertex_masses.bin):"]
    width = max([5] + [len(str(labels[g])) for g in shown]) if labels is not None else 0
    name = f" {'label':<{width}}" if labels is not None else ""
    gibbs_total = float(gibbs.sum())
    lines = ["", *title, f"{'vertex':>6}{name} {'min V':>10} {'mass(0)':>11} {'mass(T)':>11} "
             f"{'share(T)':>9} {'Gibbs mass':>11} {'Gibbs share':>11}"]
    for g in shown:
        label = f" {str(labels[g]):<{width}}" if labels is not None else ""
        lines.append(
            f"{g:>6d}{label} {depth[g]:>10.4g} {first.vertex_masses[g]:>11.5g} "
            f"{last.vertex_masses[g]:>11.5g} {_share(last.vertex_masses[g], last.mass):>9.2%} "
            f"{gibbs[g]:>11.5g} {_share(gibbs[g], gibbs_total):>11.2%}"
        )
    return lines


def _report_tail(sim: Simulation, first: Diagnostics, last: Diagnostics,
                 summary: dict) -> list[str]:
    """The end report's lines after the vertex table."""
    winner = int(np.argmax(last.vertex_masses))
    lines = [
        "",
        f"winner: vertex {winner} holds {_share(last.vertex_masses[winner], last.mass):.1%} "
        "of the mass "
        f"at t = {last.t:.6g}",
        f"free energy: F(0) = {first.free_energy:.6g}, F(T) = {last.free_energy:.6g}, "
        f"decrease {first.free_energy - last.free_energy:.6g}; Gibbs state F_inf = "
        f"{summary['gibbs_free_energy']:.6g}",
        f"relative entropy: {first.rel_entropy:.6g} -> {last.rel_entropy:.6g}",
        f"mass drift: {_share(abs(last.mass - first.mass), abs(first.mass)):.3g} (relative)",
        *_milestone_lines(summary),
        f"time per step: {summary['time_per_step']:.4g} s over "
        f"{summary['steps'] - summary['resumed_from_step']} steps "
        f"(set-up {summary['setup_time']:.3g} s, {summary['ranks']} ranks, "
        f"{summary['dofs_total']} unknowns); {summary['solver_setups']} solver set-up(s)",
    ]
    if "adaptive" in summary:
        a = summary["adaptive"]
        lines.append(f"adaptive steps: {a['accepted_steps']} accepted, {a['rejected_steps']} "
                     f"rejected (tolerance {a['tolerance']:g}), last dt {a['last_dt']:.4g}")
    if "equilibrium" in summary:
        e = summary["equilibrium"]
        lines.append(f"equilibrium: H = {e['final_rel_entropy']:.3g} < {e['tolerance']:g} at "
                     f"t = {last.t:.6g}" if e["reached"] else
                     f"equilibrium: not reached by t_max = {e['t_max']:g} (H = "
                     f"{e['final_rel_entropy']:.3g}, tolerance {e['tolerance']:g})")
    return lines


# Fractions of its Gibbs mass the Gibbs-largest vertex reaches, and levels of H(ρ | ρ_π),
# whose first times the summary reports.
SHARE_LEVELS = (0.5, 0.9, 0.99)
ENTROPY_LEVELS = (1e-2, 1e-4, 1e-6)


def _milestones(path: Path, gibbs: np.ndarray, comm: MPI.Comm) -> dict:
    """The first times in ``diagnostics.csv`` at which the vertex of the largest Gibbs mass
    holds 50/90/99 % of it, and at which H falls below 1e-2/1e-4/1e-6 (None: not yet).

    Read from the CSV (rank 0, broadcast) so that a resumed run reports the whole run's.
    """
    result = None
    if comm.rank == 0:
        winner = int(np.argmax(gibbs))
        result = {"vertex": winner, "gibbs_mass": float(gibbs[winner])}
        t = mass_t = mass = entropy = np.array([])
        try:
            data = read_diagnostics(path)
            t, entropy = data["t"], data["rel_entropy"]
            if f"mass_{winner}" in data:
                mass_t, mass = t, data[f"mass_{winner}"]
            else:  # a large graph's CSV holds aggregates only
                _, mass_t, masses = read_vertex_masses(path.parent)
                mass = masses[:, winner]
        except (InputError, KeyError, OSError, ValueError):
            pass

        def first(times: np.ndarray, hits: np.ndarray) -> float | None:
            index = np.flatnonzero(hits)
            return float(times[index[0]]) if index.size else None

        result["share_times"] = {f"{level:g}": first(mass_t, mass >= level * gibbs[winner])
                                 for level in SHARE_LEVELS}
        result["entropy_times"] = {f"{level:g}": first(t, entropy < level)
                                   for level in ENTROPY_LEVELS}
    return comm.bcast(result, root=0)


def _milestone_lines(summary: dict) -> list[str]:
    m = summary["milestones"]

    def text(times: dict, percent: bool) -> str:
        return ", ".join((f"{float(k):.0%}" if percent else k) + " at "
                         + ("(not reached)" if v is None else f"t = {v:.4g}")
                         for k, v in times.items())

    return [f"vertex {m['vertex']} (Gibbs mass {m['gibbs_mass']:.4g}) first holds "
            f"{text(m['share_times'], True)} of it",
            f"H(rho | rho_pi) first below {text(m['entropy_times'], False)}"]


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
    sim = Simulation(settings, comm, solver_overrides, verbose=not quiet)
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
        try:
            messages = truncate_vertex_masses(out, sim.graph.n, sim.step_index, comm)
        except (OSError, MemoryError) as e:
            raise _environment_failure(e, "rewrite", out, last_good) from None
        for message in messages:
            _warn(comm, message)
    start_step = sim.step_index
    error = _on_root(comm, lambda: write_config(out / "config.toml", settings.to_dict()))
    if error is not None:
        raise _environment_failure(error, "write", out, last_good)
    if not quiet:
        if sim.adaptive:
            steps = (f"adaptive dt from {settings.time.dt:g} in [{settings.time.dt_min:g}, "
                     f"{settings.time.dt_max:g}], tolerance {settings.time.tolerance:g}")
        else:
            steps = f"dt = {settings.time.dt:g}, {sim.num_steps} steps"
        end = (f", until H < {sim.equilibrium_tolerance:g} or t = {sim.t_stop:g}"
               if sim.equilibrium_tolerance is not None else "")
        _print(comm, f"rdgraph: {sim.graph.n} vertices x {sim.num_dofs} dofs "
                     f"({settings.model.coupling}, {settings.time.scheme}, {steps}{end}) "
                     f"-> {out}")
    csv = DiagnosticsCSV(out / "diagnostics.csv", header, comm, append=resume)
    fields_every = settings.output.fields_every
    # VTX cannot append: a resumed run writes its fields to a new file.
    fields_name = f"fields-from-{start_step}.bp" if resume else "fields.bp"
    fields = None
    if fields_every:
        chosen = written_vertices(settings.output.fields_vertices,
                                  sim.model.gibbs_masses(sim.recorder.vertex_masses(sim.state)))
        fields = FieldWriter(out / fields_name, sim.model.V, chosen, comm)
    masses_file = VertexMassFile(out, sim.graph.n, comm, append=resume, labels=sim.graph.labels)
    saver = checkpoint.Checkpointer(sim, out, settings.output.checkpoint_every)
    progress = Progress(sim.num_steps, rank=comm.rank, quiet=quiet,
                        t_end=sim.t_stop if sim.adaptive else None)
    step_start = None
    fields_failed = False

    def write_fields(t: float) -> None:
        nonlocal fields_failed
        code = 0
        try:
            fields.write(t, sim.nodal_values())
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
            masses_file.write(d.step, d.t, d.vertex_masses)
        # Rank 0 alone writes the CSV: its error (a full disk) ends every rank alike.
        failed = csv.check() or masses_file.check()
        if failed is not None:
            raise _environment_failure(failed, "write", out, saver.last or last_good)
        if fields and (d.step % fields_every == 0 or sim.finished(d)):
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
        masses_file.close()
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
    x, rho = gather_nodal_values(sim.model.V, sim.nodal_values())
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
        # A number: model.beta, or under a schedule its value at the end (the schedule in
        # beta_schedule).
        "beta": sim.beta,
        "steps": sim.step_index,
        "resumed_from_step": start_step,
        "retried_steps": sim.guard.retries,
        "solver_setups": sim.guard.setups,
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
    if sim.schedule is not None:
        summary["beta_schedule"] = {"schedule": sim.schedule.describe(),
                                    "initial": sim.schedule(0.0), "final": sim.beta}
    if sim.graph.labels is not None:
        # Vertex names (architectures), in vertex order like final_vertex_masses.
        summary["vertex_labels"] = list(sim.graph.labels)
    if sim.adaptive:
        stats = sim.stepper.solver_stats()
        summary["adaptive"] = {"accepted_steps": stats["accepted_steps"],
                               "rejected_steps": stats["rejected_steps"],
                               "tolerance": settings.time.tolerance,
                               "last_dt": sim.stepper.last_dt}
    summary["milestones"] = _milestones(out / "diagnostics.csv", gibbs, comm)
    if sim.equilibrium_tolerance is not None:
        summary["equilibrium"] = {"reached": sim.equilibrium_reached,
                                  "tolerance": sim.equilibrium_tolerance,
                                  "t_max": sim.t_stop,
                                  "final_rel_entropy": final.rel_entropy}
    if not quiet:
        _report(sim, first, final, summary)
    summary["wall_time"] = time.perf_counter() - wall_start

    def write_final() -> None:
        if settings.output.npz:
            save_npz(out / "final.npz", x=x, rho=rho, t=np.array(sim.t))
        write_json(out / "summary.json", summary)
        if csv.error is not None:
            raise csv.error
        if masses_file.error is not None:
            raise masses_file.error
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

