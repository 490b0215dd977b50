"""``rdgraph particles``: run the particle sampler, write its run directory, compare with FEM.

Run directory:

* ``particles.csv``: ``step,t,particles,frac_0..frac_{N-1},se_0..se_{N-1}``: the fraction of
  particles at each vertex (the vertex masses divided by the total mass) and its standard
  error, at the output times (multiples of the config's ``dt``). Beyond
  ``CSV_VERTEX_COLUMNS`` vertices (as ``diagnostics.csv``) the per-vertex columns are replaced
  by ``frac_max,frac_max_vertex,frac_effective_vertices``, and every vertex's fraction is in
  ``fractions.npz`` (``step`` (S,), ``t`` (S,), ``fractions`` and ``standard_errors`` (S, N)).
* ``positions.npz``: ``t`` (S,), ``x`` (S, P, d) positions and ``g`` (S, P) vertex labels of
  all P particles at S snapshot times, ``lower``/``upper`` the box.
* ``summary.json``, ``config.toml``.
* with ``--dynamics accelerated`` (see :mod:`rdgraph.particles.accelerated`):
  ``accelerated.csv`` (``step,t,free_energy,kinetic_energy,restarts,jumps``: the particle
  estimate F̂, ``Σ m|P|²/2``, and the restarts and jumps so far, at the output times).
* with ``--compare``: ``fem/`` (the ordinary ``rdgraph run`` directory of the same config),
  ``comparison.csv`` (``step,t,fem_g..,particles_g..,z_g..``; beyond ``CSV_VERTEX_COLUMNS``
  vertices ``step,t,max_abs_z,max_abs_z_vertex`` and ``comparison.npz`` with ``fem``,
  ``particles`` and ``z``, each (S, N)), ``comparison.png``.

The comparison passes when ``|z|`` stays within the limit for every vertex and output time,
with ``z = (p̂ − p) / sqrt(p(1 − p)/P)``, ``p̂`` the particle fraction and ``p`` the FEM one
(the binomial standard error under the hypothesis that both describe the same law). The
limit is 3 standard errors, raised for many tests so that a correct run is refused with
probability at most 1 % (Bonferroni: K output times × N vertices nearly independent tests
would otherwise exceed 3 somewhere in a third of correct runs at K·N = 168).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.output.diagnostics import CSV_VERTEX_COLUMNS, mass_aggregates
from rdgraph.output.io import (
    atomic_write_text,
    prepare_run_directory,
    save_npz,
    write_config,
    write_json,
)
from rdgraph.particles.accelerated import (
    DYNAMICS,
    AcceleratedParticleSystem,
    check_accelerated,
)
from rdgraph.particles.plot import plot_comparison
from rdgraph.particles.result import Z_LIMIT, Comparison, ParticleResult
from rdgraph.particles.sampler import ParticleProblem, ParticleSystem, fraction_standard_errors
from rdgraph.problem.config import Scheme, Settings
from rdgraph.simulation import run

__all__ = [
    "EXIT_DISAGREE",
    "Comparison",
    "ParticleResult",
    "compare_fractions",
    "output_steps",
    "run_particles",
    "simulate",
    "z_limit",
    "Z_LIMIT",
]

# Exit status when the particles and the FEM solution disagree (0/1/2/3 are taken).
EXIT_DISAGREE = 4
# The chance of refusing a correct run (the z limit per pair is Z_LIMIT or more).
FAMILY_ERROR = 0.01
# The end table lists every vertex up to this many, else the heaviest this many.
REPORT_VERTICES = 10


def z_limit(tests: int, family_error: float = FAMILY_ERROR) -> float:
    """The |z| limit for ``tests`` comparisons: 3, or the Bonferroni bound if larger.

    Two-sided: P(some |z| > limit) ≤ ``family_error`` for independent standard normal z's.
    """
    return max(Z_LIMIT, NormalDist().inv_cdf(1 - family_error / (2 * max(tests, 1))))


def output_steps(num_steps: int, outputs: int) -> np.ndarray:
    """``outputs + 1`` (at most ``num_steps + 1``) equally spaced steps from 0 to ``num_steps``."""
    return np.unique(np.round(np.linspace(0, num_steps, min(outputs, num_steps) + 1)).astype(int))


def compare_fractions(particle: np.ndarray, fem: np.ndarray, particles: int) -> np.ndarray:
    """z-scores of particle fractions against FEM fractions (binomial SE at the FEM value).

    A FEM fraction of exactly 0 or 1 has no spread: z is 0 if the particles agree, else inf.
    """
    p = np.clip(fem, 0.0, 1.0)
    se = fraction_standard_errors(p, particles)
    diff = particle - p
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / np.where(se > 0, se, 1.0),
                     np.where(diff == 0, 0.0, np.inf * np.sign(diff)))
    return z


def _local_count(total: int, comm: MPI.Comm) -> int:
    return total // comm.size + (1 if comm.rank < total % comm.size else 0)


def simulate(
    settings: Settings,
    *,
    particles: int,
    seed: int = 0,
    substeps: int = 1,
    outputs: int = 20,
    snapshots: int = 3,
    comm: MPI.Comm = MPI.COMM_WORLD,
    problem: ParticleProblem | None = None,
    dynamics: str = "langevin",
) -> ParticleResult:
    """Run the particle sampler of a config (collective; no files).

    Args:
        settings: Validated settings (box mesh, no source).
        particles: Total number of particles, split across the ranks.
        seed: Seed of ``numpy.random.SeedSequence``; rank r uses its r-th spawned child.
        substeps: Particle steps per config step ``time.dt``.
        outputs: Output intervals between 0 and ``t_end`` (vertex fractions).
        snapshots: Position snapshot intervals (positions at ``snapshots + 1`` equally
            spaced steps from 0 to ``t_end``; at most one per step).
        comm: The communicator.
        problem: The particle problem, if already built from ``settings``.
        dynamics: ``"langevin"`` (the gradient flow: Langevin moves and jumps) or
            ``"accelerated"`` (the damped Hamiltonian particles of
            :mod:`rdgraph.particles.accelerated`, damping and restart from ``[time]``).

    Raises:
        InputError: The config has no particle picture (see ``ParticleProblem``), or a
            potential is not finite where a particle went (raised on every rank).
    """
    problem = problem or ParticleProblem.from_settings(settings)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(comm.size)[comm.rank])
    if dynamics == "accelerated":
        check_accelerated(settings)
        system = AcceleratedParticleSystem(
            problem, _local_count(particles, comm), rng, damping=settings.time.damping,
            restart=settings.time.restart, comm=comm)
        accelerated = {"free_energy": [], "kinetic_energy": [], "restarts": [], "jumps": []}
    elif dynamics == "langevin":
        system = ParticleSystem(problem, _local_count(particles, comm), rng)
        accelerated = None
    else:
        raise InputError(f"dynamics = {dynamics!r}: must be one of {', '.join(DYNAMICS)}")
    dt = settings.time.dt
    steps = output_steps(settings.num_steps, outputs)
    snapshot_steps = output_steps(settings.num_steps, snapshots)
    n = problem.graph.n
    fractions, positions, labels = [], [], []
    out = np.empty(n + 1, dtype=np.int64)
    step = 0
    for target in np.union1d(steps, snapshot_steps):
        while step < target:
            for _ in range(substeps):
                system.step(dt / substeps)
            step += 1
        # Counts and a finiteness flag in one reduction, so every rank agrees on failure.
        local = np.append(system.counts(), 0 if system.finite() else 1).astype(np.int64)
        comm.Allreduce(local, out, op=MPI.SUM)
        if out[-1]:
            raise InputError(
                f"particles left the box as NaN/inf by t = {target * dt:.6g}: a potential is "
                "not finite (or not differentiable) where particles went")
        if target in steps:
            fractions.append(out[:n] / particles)
            if accelerated is not None:
                _record_accelerated(system, accelerated, comm)
        if target in snapshot_steps:
            xs, gs = comm.gather(system.x.T.copy(), root=0), comm.gather(system.labels, root=0)
            if comm.rank == 0:
                positions.append(np.concatenate(xs))
                labels.append(np.concatenate(gs).astype(np.int32))
    fractions = np.array(fractions)
    return ParticleResult(
        steps=steps,
        times=steps * dt,
        fractions=fractions,
        standard_errors=fraction_standard_errors(fractions, particles),
        particles=particles,
        snapshot_times=snapshot_steps * dt,
        positions=np.array(positions) if comm.rank == 0 else None,
        labels=np.array(labels) if comm.rank == 0 else None,
        acceptance=comm.allreduce(system.accepted, op=MPI.SUM)
        / max(comm.allreduce(system.proposals, op=MPI.SUM), 1),
        accelerated=None if accelerated is None
        else {k: np.array(v) for k, v in accelerated.items()},
    )


def _record_accelerated(system: AcceleratedParticleSystem, table: dict, comm: MPI.Comm) -> None:
    """Append F̂, the kinetic energy and the restart and jump counts (collective)."""
    values = system.diagnostics()
    table["free_energy"].append(values["free_energy"])
    table["kinetic_energy"].append(values["kinetic_energy"])
    table["restarts"].append(system.restarts)  # identical on every rank (F̂ is reduced)
    table["jumps"].append(comm.allreduce(system.jumps, op=MPI.SUM))


def _fem_fractions(settings: Settings, out: Path, steps: np.ndarray,
                   comm: MPI.Comm) -> np.ndarray:
    """Run the FEM solver on the same config into ``out`` and read its vertex fractions."""
    fem_settings = copy.deepcopy(settings)
    # Only final.npz (for the density plot) is needed from the fields.
    fem_settings.output.fields_every = 0
    fem_settings.output.npz = True
    result = run(fem_settings, out_dir=out, comm=comm, quiet=True, config_name="fem",
                 keep_history=True)  # the masses at the particle sampling steps
    masses = np.array([result.history[s].vertex_masses for s in steps])
    return masses / masses.sum(axis=1, keepdims=True)


def _write_table(path: Path, header: list[str], columns: list[np.ndarray]) -> None:
    """A CSV file from columns: integer arrays as integers, the rest as exact floats."""
    columns = [np.asarray(c) for c in columns]
    cells = [[str(int(v)) for v in c] if np.issubdtype(c.dtype, np.integer)
             else [repr(float(v)) for v in c] for c in columns]
    lines = [",".join(header)] + [",".join(row) for row in zip(*cells, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def run_particles(
    settings: Settings,
    *,
    particles: int = 100_000,
    seed: int = 0,
    substeps: int = 1,
    outputs: int = 20,
    snapshots: int = 3,
    compare: bool = False,
    limit: float | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    config_name: str = "default",
    quiet: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
    dynamics: str = "langevin",
) -> ParticleResult:
    """Run the sampler and write its run directory; optionally compare with the FEM solver.

    Args:
        settings: Validated settings.
        particles, seed, substeps, outputs, snapshots: As for :func:`simulate`.
        compare: Also run the FEM solver on the same config (into ``fem/``) and compare.
        limit: The largest |z| accepted; default :func:`z_limit` of the number of tests.
        out_dir: The run directory; default ``results/<config_name>-particles`` (a fresh
            ``-2``, ... suffix instead of touching an existing one).
        overwrite: Replace an existing non-empty run directory.
        config_name: Name for the default run directory.
        quiet: Print only errors.
        comm: The communicator.
        dynamics: ``"langevin"`` or ``"accelerated"`` (see :func:`simulate`). With
            ``compare`` the accelerated particles need ``time.scheme = "accelerated"``, so that
            the FEM run solves the same flow.

    Returns:
        The result; ``result.comparison.passed`` tells whether the check passed.
    """
    wall = time.perf_counter()
    # Everything that can be refused is checked before the run directory is touched.
    problem = ParticleProblem.from_settings(settings)
    if dynamics not in DYNAMICS:
        raise InputError(f"--dynamics {dynamics}: must be one of {', '.join(DYNAMICS)}")
    if dynamics == "accelerated":
        check_accelerated(settings)
        if compare and settings.time.method is not Scheme.ACCELERATED:
            raise InputError(
                f"--dynamics accelerated --compare needs time.scheme = 'accelerated' (the FEM "
                f"run would solve the gradient flow with {settings.time.scheme!r}); add "
                "--set time.scheme=accelerated")
    explicit = out_dir is not None
    out = prepare_run_directory(
        out_dir if explicit else Path("results") / f"{config_name}-particles", comm,
        overwrite=overwrite, explicit=explicit)
    if comm.rank == 0:
        write_config(out / "config.toml", settings.to_dict())
    say = (lambda *a: None) if quiet or comm.rank != 0 else (lambda *a: print(*a, flush=True))
    say(f"rdgraph particles: {particles} particles on {comm.size} rank(s), {problem.graph.n} "
        f"vertices ({settings.model.coupling}), dt = {settings.time.dt:g}/{substeps}, "
        f"t_end = {settings.time.t_end:g}, seed {seed}"
        + ("" if dynamics == "langevin" else f", accelerated dynamics (damping "
           f"{settings.time.damping}, restart {str(settings.time.restart).lower()})")
        + f" -> {out}")
    start = time.perf_counter()
    result = simulate(settings, particles=particles, seed=seed, substeps=substeps,
                      outputs=outputs, snapshots=snapshots, comm=comm, problem=problem,
                      dynamics=dynamics)
    particle_time = time.perf_counter() - start
    result.out_dir = out
    n = problem.graph.n
    if comm.rank == 0:
        head = [result.steps, result.times, np.full(result.steps.size, particles)]
        if n <= CSV_VERTEX_COLUMNS:
            _write_table(out / "particles.csv",
                         ["step", "t", "particles"] + [f"frac_{g}" for g in range(n)]
                         + [f"se_{g}" for g in range(n)],
                         [*head, *result.fractions.T, *result.standard_errors.T])
        else:
            # A column per vertex would make rows of 2N numbers: the aggregates, and all
            # fractions in binary.
            top, vertex, effective = zip(*(mass_aggregates(f) for f in result.fractions),
                                         strict=True)
            _write_table(out / "particles.csv",
                         ["step", "t", "particles", "frac_max", "frac_max_vertex",
                          "frac_effective_vertices"],
                         [*head, np.array(top), np.array(vertex), np.array(effective)])
            save_npz(out / "fractions.npz", step=result.steps, t=result.times,
                     fractions=result.fractions, standard_errors=result.standard_errors)
        save_npz(out / "positions.npz", t=result.snapshot_times, x=result.positions,
                 g=result.labels, lower=problem.lower, upper=problem.upper)
        if result.accelerated is not None:
            table = result.accelerated
            _write_table(out / "accelerated.csv",
                         ["step", "t", "free_energy", "kinetic_energy", "restarts", "jumps"],
                         [result.steps, result.times, table["free_energy"],
                          table["kinetic_energy"], table["restarts"], table["jumps"]])
    summary = {
        "ranks": comm.size,
        "particles": particles,
        "seed": seed,
        "substeps": substeps,
        "particle_dt": settings.time.dt / substeps,
        "coupling": settings.model.coupling,
        "vertices": n,
        "particle_time": particle_time,
        "acceptance_rate": result.acceptance,
        "final_fractions": result.fractions[-1].tolist(),
        "final_standard_errors": result.standard_errors[-1].tolist(),
    }
    if result.accelerated is not None:
        summary.update({"dynamics": dynamics, "damping": settings.time.damping,
                        "restart": settings.time.restart,
                        "restarts": int(result.accelerated["restarts"][-1]),
                        "jumps": int(result.accelerated["jumps"][-1])})
    if compare:
        start = time.perf_counter()
        say(f"FEM run of the same config -> {out / 'fem'}")
        fem = _fem_fractions(settings, out / "fem", result.steps, comm)
        summary["fem_time"] = time.perf_counter() - start
        z = compare_fractions(result.fractions, fem, particles)
        comparison = Comparison(fem, z, limit if limit is not None else z_limit(z.size),
                                fem_dir=out / "fem")
        result.comparison = comparison
        k, g = comparison.worst
        summary.update({
            "max_abs_z": comparison.max_abs_z,
            "worst": {"t": float(result.times[k]), "vertex": g},
            "z_limit": comparison.limit,
            "tests": int(comparison.z.size),
            "beyond_3_se": comparison.beyond_3,
            "beyond_3_se_expected": float(comparison.z.size * 2 * NormalDist().cdf(-Z_LIMIT)),
            "passed": comparison.passed,
            "fem_final_fractions": fem[-1].tolist(),
        })
        chi2 = None
        if comm.rank == 0:
            if n <= CSV_VERTEX_COLUMNS:
                _write_table(out / "comparison.csv",
                             ["step", "t"] + [f"fem_{g}" for g in range(n)]
                             + [f"particles_{g}" for g in range(n)]
                             + [f"z_{g}" for g in range(n)],
                             [result.steps, result.times, *fem.T, *result.fractions.T,
                              *comparison.z.T])
            else:
                worst = np.argmax(np.abs(comparison.z), axis=1)
                _write_table(out / "comparison.csv",
                             ["step", "t", "max_abs_z", "max_abs_z_vertex"],
                             [result.steps, result.times,
                              np.abs(comparison.z)[np.arange(worst.size), worst], worst])
                save_npz(out / "comparison.npz", fem=fem, particles=result.fractions,
                         z=comparison.z)
            chi2 = plot_comparison(out / "comparison.png", result, out / "fem")
        # Informative, not part of the pass/fail decision (the FEM density is the nodal
        # interpolant, and bins with few particles are left out).
        chi2 = comm.bcast(chi2, root=0)
        summary["density_chi2_per_dof"] = {str(g): v for g, v in chi2.items()}
    summary["wall_time"] = time.perf_counter() - wall
    result.summary = summary
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
    # Every rank returns after the files are complete (callers may read them anywhere).
    comm.Barrier()
    say(_report(result, problem.graph.labels))
    return result


def _report(result: ParticleResult, labels=None) -> str:
    """The end-of-run table: final fractions ± SE, and the FEM ones with z when compared;
    every vertex up to ``REPORT_VERTICES``, else the heaviest ``REPORT_VERTICES``. ``labels``:
    the graph's vertex names, shown beside the indices."""
    c = result.comparison
    final = result.fractions[-1]
    head = f"{'vertex':>6} {'particles':>10} {'± SE':>8}"
    if c is not None:
        head += f" {'FEM':>10} {'z':>7}"
    if labels is not None:
        head += "  label"
    n = final.size
    shown = (range(n) if n <= REPORT_VERTICES
             else np.argsort(-final, kind="stable")[:REPORT_VERTICES])
    lines = ["", f"t = {result.times[-1]:.6g}:", head]
    for g in shown:
        line = f"{g:>6d} {final[g]:>10.5f} {result.standard_errors[-1, g]:>8.5f}"
        if c is not None:
            line += f" {c.fem_fractions[-1, g]:>10.5f} {c.z[-1, g]:>7.2f}"
        if labels is not None:
            line += f"  {labels[g]}"
        lines.append(line)
    if n > REPORT_VERTICES:
        lines.append(f"(the {REPORT_VERTICES} of {n} vertices with the most particles: "
                     f"{final[list(shown)].sum():.1%} of them; every vertex in "
                     f"{'particles.csv' if n <= CSV_VERTEX_COLUMNS else 'fractions.npz'})")
    winner = int(np.argmax(result.fractions[-1]))
    lines.append(f"winner: vertex {winner} holds {result.fractions[-1, winner]:.1%} of the "
                 f"particles ({result.summary['particle_time']:.3g} s for "
                 f"{result.particles} particles)")
    if c is not None:
        k, g = c.worst
        verdict = "agree" if c.passed else "DISAGREE"
        lines.append(f"particles and FEM {verdict}: max |z| = {c.max_abs_z:.3g} over "
                     f"{c.z.size} (time, vertex) pairs (vertex {g} at t = "
                     f"{result.times[k]:.6g}; limit {c.limit:.3g}); {c.beyond_3} beyond 3 SE "
                     f"({c.z.size * 2 * NormalDist().cdf(-Z_LIMIT):.2g} expected by chance)")
    return "\n".join(lines)


