"""A simulation: settings in, a time-stepped state and diagnostics out.

:class:`Simulation` holds the state in memory (for scripts and tests); :func:`run` adds the
run directory and its files (the command-line contract).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rdgraph.output import checkpoint
from rdgraph.discretization.blocks import BlockLayout
from rdgraph.compat import MPI, dolfinx, versions
from rdgraph.problem.config import Settings
from rdgraph.errors import InputError, Interrupted, SolverError
from rdgraph.output.diagnostics import Diagnostics, DiagnosticsRecorder, csv_header
from rdgraph.problem.graph import Graph, build_graph, read_edge_file
from rdgraph.output.io import (
    DiagnosticsCSV,
    FieldWriter,
    gather_nodal_values,
    prepare_run_directory,
    save_npz,
    write_config,
    write_json,
)
from rdgraph.timestepping.jko import JKOStepper
from rdgraph.discretization.meshes import build_mesh
from rdgraph.discretization.model import Model, _parse_per_vertex
from rdgraph.discretization.operators import BlockOperators
from rdgraph.output.progress import Progress
from rdgraph.timestepping.recovery import RobustStepper
from rdgraph.timestepping.linear import TimeStepper
from rdgraph.timestepping.upwind import UpwindStepper

__all__ = ["RunResult", "Simulation", "graph_from_settings", "run"]

_MESH_GDIM = {"interval": 1, "rectangle": 2, "box": 3}


def graph_from_settings(settings: Settings) -> Graph:
    """The graph described by ``[graph]`` (pure Python, identical on every rank)."""
    s = settings.graph
    return build_graph(
        s.kind, n=s.n, dim=s.dim, shape=s.shape, weight=s.weight, p=s.p, edges=s.edges,
        file=s.file, seed=s.seed,
    )


def _graph_origin(settings: Settings) -> str:
    """Where the vertex count came from, for messages: the largest index of an edge list."""
    s = settings.graph
    if s.kind == "file" and s.file is not None:
        n, edges = read_edge_file(s.file)
        largest = max(max(g, h) for g, h, _ in edges)
        declared = f", and '# n = {n}' or graph.n adds vertices" if n > largest + 1 else ""
        return (f" (the largest vertex index in graph.file {s.file!r} is {largest}: vertices "
                f"0..{largest}{declared})")
    if s.kind == "edges" and s.edges:
        indices = [v for e in s.edges for v in e[:2]]
        return f" (the largest vertex index in graph.edges is {max(indices)})"
    return f" (graph.kind = {s.kind!r})"


def check_vertex_lists(settings: Settings, graph: Graph) -> None:
    """``model.potentials``, ``initials`` and ``sources`` have one entry per vertex.

    Raises:
        InputError: A list of the wrong length; the message says where the vertices came
            from (for an edge file, its largest vertex index).
    """
    for key in ("potentials", "initials", "sources"):
        values = getattr(settings.model, key)
        if values is not None and len(values) != graph.n:
            raise InputError(f"model.{key} has {len(values)} entries but the graph has "
                             f"{graph.n} vertices{_graph_origin(settings)}")


def disconnected_warning(graph: Graph, components: list[np.ndarray] | None = None,
                         limit: int = 8) -> str | None:
    """A warning naming the components of a graph that is not connected, else ``None``."""
    components = graph.components() if components is None else components
    if len(components) == 1:
        return None

    def name(c: np.ndarray) -> str:
        shown = ", ".join(str(int(g)) for g in c[:limit])
        return "{" + shown + (f", ... ({c.size} vertices)" if c.size > limit else "") + "}"

    listed = "; ".join(name(c) for c in components[:limit])
    more = f"; ... ({len(components)} in all)" if len(components) > limit else ""
    return (f"the graph is not connected: {len(components)} components {listed}{more}. "
            f"No mass moves between them: each keeps its initial mass, and the Gibbs masses "
            f"are per component (check graph.edges / graph.file for a typo)")


def _check_expressions(settings: Settings, graph: Graph, gdim: int) -> None:
    check_vertex_lists(settings, graph)
    model = settings.model
    _parse_per_vertex(model, "potential", graph.n, ("x", "g"), gdim, "0")
    _parse_per_vertex(model, "initial", graph.n, ("x", "g"), gdim, "1")
    _parse_per_vertex(model, "source", graph.n, ("x", "g", "t"), gdim, None)


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
        self.graph = graph_from_settings(settings)
        check_vertex_lists(settings, self.graph)
        if settings.mesh.shape in _MESH_GDIM:
            # Catch expression errors before the first collective operation.
            _check_expressions(settings, self.graph, _MESH_GDIM[settings.mesh.shape])
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
        if settings.time.scheme == "accelerated":
            from rdgraph.timestepping.accelerated import ACCELERATED_COLUMNS, AcceleratedStepper

            # Its own state (log ρ, S) and Newton solver; it retries failed steps itself.
            self.stepper = AcceleratedStepper(self.model, settings, solver_overrides)
            self.guard = self.stepper
            self.solver_options = dict(self.stepper.options)
            self.extra_columns = list(ACCELERATED_COLUMNS)
        else:
            stepper_class = (JKOStepper if settings.time.scheme == "jko" else
                             UpwindStepper if settings.model.coupling == "upwind" else TimeStepper)
            self.stepper = stepper_class(
                self.model, self.operators, settings.time.scheme, settings.time.dt,
                settings.solver, solver_overrides,
            )
            self.solver_options = {**self.stepper.solver.options, **(solver_overrides or {})}
            self.guard = RobustStepper(self.stepper, settings.solver.max_retries)
            self.extra_columns = []
        self.recorder = DiagnosticsRecorder(self.model, self.operators.mass_row_sums())
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
            d = dataclasses.replace(d, extra=tuple(self.stepper.extra_diagnostics()))
        return d

    def advance(self) -> int:
        """Take one time step; return the Krylov iterations it took."""
        iterations = self.guard.step(self.state, self.t, self.step_index + 1)
        self.step_index += 1
        # t = n dt, not a running sum, so that long runs end exactly at t_end.
        self.t = self.step_index * self.settings.time.dt
        self.layout.to_functions(self.state, self.functions)
        return iterations

    def run(
        self, observer: Callable[[Diagnostics], None] | None = None
    ) -> list[Diagnostics]:
        """Step to ``t_end``, calling ``observer`` with the diagnostics of every step from 0."""
        history = [self.diagnostics()]
        if observer:
            observer(history[-1])
        while self.step_index < self.num_steps:
            iterations = self.advance()
            history.append(self.diagnostics(iterations))
            if observer:
                observer(history[-1])
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
    """What :func:`run` produced."""

    out_dir: Path
    history: list[Diagnostics]
    summary: dict = field(default_factory=dict)

    @property
    def final(self) -> Diagnostics:
        return self.history[-1]


def _print(comm: MPI.Comm, *args) -> None:
    if comm.rank == 0:
        print(*args, flush=True)


def _step_zero(path: Path, history: list[Diagnostics], comm: MPI.Comm) -> Diagnostics:
    """The diagnostics of step 0: ``history[0]``, or after a resume the CSV's first row.

    A resumed run's history starts at the checkpoint; its F(0) and mass(0) are in the CSV.
    Rank 0 reads the file and broadcasts the row; a missing or unreadable row (the file was
    edited) falls back to the resume point.
    """
    if history[0].step == 0:
        return history[0]
    n = history[0].vertex_masses.size
    first = None
    if comm.rank == 0:
        from rdgraph.output.plots import read_diagnostics

        try:
            data = read_diagnostics(path)
            if data["step"][0] == 0:
                first = Diagnostics(
                    step=0, t=float(data["t"][0]),
                    vertex_masses=np.array([data[f"mass_{g}"][0] for g in range(n)]),
                    free_energy=float(data["free_energy"][0]),
                    rel_entropy=float(data["rel_entropy"][0]),
                    min_density=float(data["min_density"][0]), ksp_iterations=0)
        except (InputError, KeyError):
            first = None
    first = comm.bcast(first, root=0)
    return history[0] if first is None else first


def _report(sim: Simulation, history: list[Diagnostics], summary: dict,
            first: Diagnostics | None = None) -> None:
    """The end-of-run table: where the mass went, the energy decrease, the cost.

    ``first`` is step 0 (after a resume, from the CSV); default ``history[0]``.
    """
    comm = sim.comm
    first, last = first or history[0], history[-1]
    depth = sim.minimum_potentials()
    gibbs = sim.model.gibbs_masses(first.vertex_masses)
    if comm.rank != 0:
        return
    lines = ["", f"{'vertex':>6} {'min V':>10} {'mass(0)':>11} {'mass(T)':>11} "
             f"{'share(T)':>9} {'Gibbs mass':>11}"]
    for g in range(sim.graph.n):
        lines.append(
            f"{g:>6d} {depth[g]:>10.4g} {first.vertex_masses[g]:>11.5g} "
            f"{last.vertex_masses[g]:>11.5g} {last.vertex_masses[g] / last.mass:>9.2%} "
            f"{gibbs[g]:>11.5g}"
        )
    winner = int(np.argmax(last.vertex_masses))
    lines += [
        "",
        f"winner: vertex {winner} holds {last.vertex_masses[winner] / last.mass:.1%} of the mass "
        f"at t = {last.t:.6g}",
        f"free energy: F(0) = {first.free_energy:.6g}, F(T) = {last.free_energy:.6g}, "
        f"decrease {first.free_energy - last.free_energy:.6g}; Gibbs state F_inf = "
        f"{summary['gibbs_free_energy']:.6g}",
        f"relative entropy: {first.rel_entropy:.6g} -> {last.rel_entropy:.6g}",
        f"mass drift: {abs(last.mass - first.mass) / abs(first.mass):.3g} (relative)",
        f"time per step: {summary['time_per_step']:.4g} s over {len(history) - 1} steps "
        f"(set-up {summary['setup_time']:.3g} s, {summary['ranks']} ranks, "
        f"{summary['dofs_total']} unknowns)",
    ]
    print("\n".join(lines), flush=True)


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
) -> RunResult:
    """Run one simulation and write its run directory.

    Args:
        settings: Validated settings.
        out_dir: The run directory; default ``output.dir``, else ``results/<config_name>``
            (then a fresh ``-2``, ``-3`` ... suffix instead of touching an existing one).
        overwrite: Replace an existing non-empty run directory.
        comm: The communicator.
        solver_overrides: PETSc options that override the config's (no prefix).
        config_name: Name for the default run directory.
        quiet: Print nothing but errors.
        resume: A run directory to continue from its newest checkpoint (``out_dir`` and
            ``overwrite`` are then ignored); its CSV is cut back to the checkpoint's step.

    Returns:
        The run directory, the diagnostics of every step and the summary.
    """
    wall_start = time.perf_counter()
    sim = Simulation(settings, comm, solver_overrides)
    explicit = out_dir is not None or settings.output.dir is not None
    target = out_dir if out_dir is not None else settings.output.dir
    if resume is not None:
        # Checked before the run directory is touched: a refused resume changes nothing.
        state = checkpoint.load_checkpoint(Path(resume), settings, comm)
        checkpoint.restore(sim, state)
        out = Path(resume)
        checkpoint.truncate_csv(out / "diagnostics.csv", sim.step_index, comm)
    else:
        out = prepare_run_directory(
            target if target is not None else Path("results") / config_name,
            comm, overwrite=overwrite, explicit=explicit,
        )
    start_step = sim.step_index
    if comm.rank == 0:
        write_config(out / "config.toml", settings.to_dict())
    if not quiet:
        _print(comm, f"rdgraph: {sim.graph.n} vertices x {sim.num_dofs} dofs "
                     f"({settings.model.coupling}, {settings.time.scheme}, dt = "
                     f"{settings.time.dt:g}, {sim.num_steps} steps) -> {out}")
    header = csv_header(sim.graph.n) + sim.extra_columns
    csv = DiagnosticsCSV(out / "diagnostics.csv", header, comm,
                         append=resume is not None)
    fields_every = settings.output.fields_every
    # VTX cannot append: a resumed run writes its fields to a new file.
    fields_name = f"fields-from-{start_step}.bp" if resume is not None else "fields.bp"
    fields = FieldWriter(out / fields_name, sim.functions, comm) if fields_every else None
    saver = checkpoint.Checkpointer(sim, out, settings.output.checkpoint_every)
    progress = Progress(sim.num_steps, rank=comm.rank, quiet=quiet)
    step_start = None

    def observe(d: Diagnostics) -> None:
        nonlocal step_start
        if resume is None or d.step > start_step:  # the checkpoint's row is in the CSV
            csv.write(d.row())
        last = d.step == sim.num_steps
        if fields and (d.step % fields_every == 0 or last):
            fields.write(d.t)
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
            history = sim.run(observe)
        collective = True
        saver.write()
    except Interrupted:
        collective = True
        raise
    except SolverError as e:
        collective = True
        # The stepper left the last good state in place: save it for a resume.
        path = saver.write()
        raise SolverError(f"{e}; last good state (step {sim.step_index}, t = {sim.t:.6g}) "
                          f"saved in {path}") from None
    finally:
        progress.close()
        csv.close()
        if fields and collective:
            fields.close()
    step_time = time.perf_counter() - step_start
    first = _step_zero(out / "diagnostics.csv", history, comm)
    gibbs = sim.model.gibbs_masses(first.vertex_masses)
    x, rho = gather_nodal_values(sim.functions)
    if settings.output.npz and comm.rank == 0:
        save_npz(out / "final.npz", x=x, rho=rho, t=np.array(sim.t))
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
        "t_end": sim.t,
        "setup_time": sim.setup_time,
        "setup_timings": sim.timings,
        "wall_time": time.perf_counter() - wall_start,
        "time_per_step": step_time / max(1, sim.step_index - start_step),
        "solver_options": {k: v for k, v in sim.solver_options.items()},
        "final_vertex_masses": [float(m) for m in history[-1].vertex_masses],
        # Per component: each component's initial mass shared by its Gibbs weights, divided
        # by the total initial mass (on a connected graph, ∫π_g / Σ_h ∫π_h).
        "gibbs_vertex_fractions": [float(f) for f in (
            gibbs / first.mass if first.mass > 0 else sim.model.gibbs_fractions)],
        "initial_mass": first.mass,
        "final_mass": history[-1].mass,
        "initial_free_energy": first.free_energy,
        "final_free_energy": history[-1].free_energy,
        "gibbs_free_energy": sim.model.gibbs_free_energy(first.vertex_masses),
    }
    if not quiet:
        _report(sim, history, summary, first)
    summary["wall_time"] = time.perf_counter() - wall_start
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
    sim.destroy()
    if settings.output.plots and comm.rank == 0:
        _write_plots(out, quiet)
    return RunResult(out_dir=out, history=history, summary=summary)


def _write_plots(out: Path, quiet: bool) -> None:
    """The run's PNG figures (rank 0, after every file they read is complete)."""
    from rdgraph.output.plots import plot_run

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

