"""Batch parameter sweeps: ``rdgraph sweep SWEEP.toml``.

A sweep file names a base config and lists values for ``--set`` keys::

    base = "nas_toy.toml"            # a config file (relative to this file), or a [base] table
    set = ["time.t_end=2.0"]         # optional: overrides for every case, as with --set
    out = "results/my-sweep"         # optional: the sweep's folder, like output.dir relative
                                     # to the working directory (--out wins)

    [parameters]                     # every combination runs, in the order of the file
    "model.beta" = [0.05, 0.1]
    "graph.weight" = [1.0, 2.0]      # or [parameters.graph] weight = [1.0, 2.0]

The whole file, every combination's settings, graph and expressions included, is checked
before anything runs; an error there is an input error (exit 2) and nothing is written.

The cases run one after the other, each on the whole communicator (all ranks of one
``mpiexec`` solve each case together), each in its own folder named by its values
(``beta=0.05_weight=1``), which is an ordinary run directory. At the end of a case,
whatever its outcome, ``case.json`` is written into its folder atomically: the finished
marker. A restarted sweep skips every case whose marker says ``ok`` for the same resolved
config and runs the others (failed, interrupted or changed ones) again. A
case that fails with invalid input (found only while building it, e.g. a broken mesh file)
or a solver failure is recorded with its status and message, and the sweep goes on. An
unfinished case whose folder holds a checkpoint (the sweep was stopped by SIGTERM/SIGINT,
which checkpoints the running case) continues from it when it fits the case's settings.
``sweep.csv`` (rewritten atomically after every case) has one row per case: the values,
status, wall time, final vertex masses, free energy and relative entropy.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import gc
import io
import itertools
import json
import math
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from rdgraph.compat import MPI
from rdgraph.errors import (
    EnvironmentFailure,
    InputError,
    Interrupted,
    RunDirectoryInUse,
    SolverError,
    on_root,
)
from rdgraph.output import checkpoint
from rdgraph.output.io import atomic_write_text
from rdgraph.output.rundir import check_path_name, is_environment_error, lock_directory, mark
from rdgraph.problem.config import (
    Settings,
    apply_overrides,
    parse_override,
    read_config,
    resolve_paths,
    settings_from_dict,
)
from rdgraph.problem.validation import MESH_GDIM, check_expressions, graph_from_settings
from rdgraph.simulation import run

__all__ = [
    "CASE_MARKER",
    "STATUSES",
    "CaseResult",
    "Sweep",
    "SweepCase",
    "load_sweep",
    "parse_sweep",
    "run_sweep",
]

#: The finished marker in each case folder.
CASE_MARKER = "case.json"
#: Outcomes of a case, as written to ``sweep.csv``.
STATUSES = ("ok", "input-error", "solver-failure")
_SWEEP_KEYS = ("base", "set", "out", "parameters")
#: Invalid combinations named in one error message at most.
_MAX_LISTED = 5


@dataclass(frozen=True)
class SweepCase:
    """One combination of a sweep: its folder name, values and validated settings."""

    name: str
    values: dict[str, Any]
    settings: Settings


@dataclass
class CaseResult:
    """The outcome of one case (what its ``case.json`` and ``sweep.csv`` row hold)."""

    name: str
    values: dict[str, Any]
    status: str
    wall_time: float
    message: str = ""
    skipped: bool = False
    resumed_from_step: int | None = None
    steps: int | None = None
    t: float | None = None
    mass: float | None = None
    free_energy: float | None = None
    rel_entropy: float | None = None
    vertex_masses: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The marker's content (``skipped`` belongs to a later invocation, not the case)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "skipped"}

    @classmethod
    def from_json(cls, data: dict) -> CaseResult:
        """Read a marker; unknown keys (from a newer rdgraph) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Sweep:
    """A validated sweep: base config data, fixed overrides and the swept values.

    Args:
        base: Config data (sections of key/values) every case starts from.
        fixed: ``section.key=value`` overrides applied to every case.
        parameters: ``{"section.key": [values]}``, in the order of the file.
        source: Where the sweep came from, for messages.
        out: The sweep's folder from the file, if given.
    """

    base: dict[str, Any]
    fixed: list[str]
    parameters: dict[str, list]
    source: str = "sweep"
    out: str | None = None

    def config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config data of the case with ``values``."""
        overrides = self.fixed + [f"{k}={_toml_value(v)}" for k, v in values.items()]
        return apply_overrides(self.base, overrides)

    def combinations(self) -> list[tuple[str, dict[str, Any]]]:
        """``(folder name, values)`` of every combination, in the order of the file."""
        keys = list(self.parameters)
        short = [k.split(".", 1)[1] for k in keys]
        # The key alone names a value unless two sections share it.
        labels = [s if short.count(s) == 1 else k for s, k in zip(short, keys, strict=True)]
        out = []
        for combo in itertools.product(*self.parameters.values()):
            name = "_".join(f"{label}={_label(v)}" for label, v in zip(labels, combo, strict=True))
            out.append((name or "base", dict(zip(keys, combo, strict=True))))
        return out

    def cases(self) -> list[SweepCase]:
        """Every combination with its validated settings.

        Raises:
            InputError: Some combinations are invalid (all are checked; a few are named),
                or two combinations would share a folder.
        """
        cases, errors, seen = [], [], {}
        for name, values in self.combinations():
            if name in seen:
                raise InputError(f"{self.source}: the values {seen[name]} and {values} give the "
                                 f"same case folder {name!r}; remove the duplicate")
            seen[name] = values
            try:
                settings = settings_from_dict(self.config(values),
                                              source=f"{self.source}, case {name}")
                # The pure-Python part of building a case: graphs and expressions.
                graph = graph_from_settings(settings)
                if settings.mesh.shape in MESH_GDIM:
                    check_expressions(settings, graph, MESH_GDIM[settings.mesh.shape])
            except InputError as e:
                errors.append(f"case {name}: {e}")
                continue
            cases.append(SweepCase(name=name, values=values, settings=settings))
        if errors:
            more = len(errors) - _MAX_LISTED
            listed = "\n  ".join(errors[:_MAX_LISTED]) + (f"\n  ... and {more} more"
                                                          if more > 0 else "")
            raise InputError(f"{self.source}: {len(errors)} of {len(seen)} cases are invalid; "
                             f"nothing was run:\n  {listed}")
        return cases


def _label(value) -> str:
    """A value as a file-name fragment: ``0.1``, ``2``, ``64x64``, ``gibbs``."""
    if isinstance(value, list):
        return "x".join(_label(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, float)):
        return str(value)  # digits, '.', '-', 'e': safe in a file name, and keeps the sign
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value))
    return re.sub(r"-{2,}", "-", text).strip("-") or "_"


def _toml_value(value) -> str:
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _flatten_parameters(parameters: dict, source: str) -> dict[str, list]:
    """``{"model.beta": [...]}`` from either quoted dotted keys or ``[parameters.model]``."""
    flat: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, dict):
            for sub, values in value.items():
                flat[f"{key}.{sub}"] = values
        else:
            flat[key] = value
    for key, values in flat.items():
        if isinstance(values, dict):
            raise InputError(f"{source}: parameter {key!r} must be a list of values, "
                             f"got a table {values!r}")
        # Checks the section and key names (with a suggestion for typos).
        parse_override(f"{key}=0")
        if not isinstance(values, list) or not values:
            raise InputError(f"{source}: parameter {key} = {values!r}: expected a non-empty list "
                             "of values")
    return flat


def parse_sweep(data: dict[str, Any], *, source: str, base_dir: Path) -> Sweep:
    """Build and check a sweep from its TOML data.

    Args:
        data: The sweep file's contents.
        source: Its name, for messages.
        base_dir: The folder relative paths (``base``, mesh and edge files) are relative to.

    Raises:
        InputError: Anything wrong with the file, its base config, its overrides or any
            combination's settings.
    """
    unknown = sorted(set(data) - set(_SWEEP_KEYS))
    if unknown:
        raise InputError(f"{source}: unknown entries {', '.join(unknown)}; a sweep file has "
                         f"{', '.join(_SWEEP_KEYS)}")
    base = data.get("base")
    if isinstance(base, str):
        base_path = Path(base)
        base = read_config(base_path if base_path.is_absolute() else base_dir / base_path)
    elif isinstance(base, dict):
        base = copy.deepcopy(base)
        resolve_paths(base, base_dir)
    elif base is None:
        raise InputError(f"{source}: needs base = \"config.toml\" or a [base] table")
    else:
        raise InputError(f"{source}: base = {base!r} must be a file name or a table")
    fixed = data.get("set", [])
    if not isinstance(fixed, list) or not all(isinstance(s, str) for s in fixed):
        raise InputError(f"{source}: set = {fixed!r}: expected a list of \"section.key=value\" "
                         "strings")
    for text in fixed:
        parse_override(text)
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise InputError(f"{source}: out = {out!r}: expected a folder name")
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InputError(f"{source}: [parameters] must be a table of \"section.key\" = [values]")
    sweep = Sweep(base=base, fixed=fixed, parameters=_flatten_parameters(parameters, source),
                  source=source, out=out)
    sweep.cases()  # every combination must be valid before anything runs
    return sweep


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (plain Python: the same result on every rank).

    Raises:
        InputError: A missing or invalid file, base config, override or combination.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"sweep file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"sweep file {str(path)!r} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"sweep file {str(path)!r} is not valid TOML: {e}") from None
    return parse_sweep(data, source=str(path), base_dir=path.resolve().parent)


def _normalized(config: dict) -> dict:
    # Through JSON, as the marker stores it: tuples become lists, floats stay floats.
    return json.loads(json.dumps(config))


def _finished(folder: Path, config: dict) -> CaseResult | None:
    """The recorded result if ``folder`` holds an ``ok`` case with the same resolved config."""
    try:
        data = json.loads((folder / CASE_MARKER).read_text(encoding="utf-8"))
        result = CaseResult.from_json(data)
    except (OSError, ValueError, TypeError):
        return None
    if result.status != "ok" or result.config != _normalized(config):
        return None
    result.skipped = True
    return result


def _csv_text(sweep: Sweep, results: list[CaseResult]) -> str:
    num_vertices = max((len(r.vertex_masses) for r in results), default=0)
    header = (["case", *sweep.parameters, "status", "skipped", "resumed_from_step",
               "wall_time", "steps", "t", "mass", "free_energy", "rel_entropy"]
              + [f"mass_{g}" for g in range(num_vertices)] + ["message"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return repr(v)
        return _toml_value(v) if isinstance(v, (list, bool)) else v

    for r in results:
        masses = [repr(float(m)) for m in r.vertex_masses]
        writer.writerow(
            [r.name, *(cell(r.values[k]) for k in sweep.parameters), r.status,
             str(r.skipped).lower(), cell(r.resumed_from_step), f"{r.wall_time:.6g}",
             *(cell(v) for v in (r.steps, r.t, r.mass, r.free_energy, r.rel_entropy))]
            + masses + [""] * (num_vertices - len(masses))
            + [r.message.replace("\n", " ")]
        )
    return buffer.getvalue()


def _run_case(case: SweepCase, folder: Path, comm, solver_overrides: dict | None,
              resumable: bool) -> CaseResult:
    """Run one case on ``comm``; input errors and solver failures become its status.

    With ``resumable`` (the folder holds a checkpoint of an unfinished attempt, e.g. one
    stopped by the scheduler's SIGTERM), the case continues from it when the checkpoint fits
    the case's settings, and starts afresh otherwise.
    """
    start = time.perf_counter()
    config = _normalized(case.settings.to_dict())
    result = None
    try:
        if resumable:
            try:
                result = run(case.settings, comm=comm, solver_overrides=solver_overrides,
                             quiet=True, resume=folder)
            except RunDirectoryInUse:
                raise
            except InputError:
                # A checkpoint of other settings (or a damaged one): start afresh below; an
                # error of the case itself is raised again there and recorded.
                result = None
        if result is None:
            result = run(case.settings, out_dir=folder, overwrite=True, comm=comm,
                         solver_overrides=solver_overrides, config_name=case.name, quiet=True)
    except RunDirectoryInUse:
        raise  # another process works in this case's folder: stop, record nothing
    except Interrupted as e:
        # A sweep resumes by running it again (finished cases are skipped, this one
        # continues from its checkpoint), not by resuming the case alone.
        raise Interrupted(e.signum, f"{e.detail.split('; continue with')[0]}; run the same "
                                    "rdgraph sweep command again to continue (finished cases "
                                    "are skipped, this one resumes from its checkpoint)") from None
    except InputError as e:
        status, message = "input-error", str(e)
    except SolverError as e:
        status, message = "solver-failure", str(e)
    else:
        final = result.final
        return CaseResult(
            name=case.name, values=case.values, status="ok",
            wall_time=time.perf_counter() - start, steps=final.step, t=final.t,
            resumed_from_step=result.summary.get("resumed_from_step") or None,
            mass=final.mass, free_energy=final.free_energy, rel_entropy=final.rel_entropy,
            vertex_masses=[float(m) for m in final.vertex_masses], config=config,
        )
    # Input and solver errors are raised on every rank, so every rank gets here.
    return CaseResult(name=case.name, values=case.values, status=status,
                      wall_time=time.perf_counter() - start, message=message, config=config)


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path,
    comm=None,
    *,
    solver_overrides: dict | None = None,
    quiet: bool = False,
) -> list[CaseResult]:
    """Run every case of ``sweep`` under ``out_dir`` (collective) and write ``sweep.csv``.

    Args:
        sweep: The sweep.
        out_dir: The sweep's folder; each case gets a sub-folder. An existing folder is
            reused: its finished cases are skipped.
        comm: The communicator every case runs on (default ``COMM_WORLD``).
        solver_overrides: PETSc options (without prefix) for every case.
        quiet: Print nothing but errors.

    Returns:
        The result of every case, in the order of the sweep.

    Raises:
        InputError: An invalid sweep, or ``out_dir`` cannot be created.
        Interrupted: SIGTERM/SIGINT during a case (the cases before it are recorded).
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    cases = sweep.cases()
    out_dir = Path(out_dir)

    def make_folder():
        check_path_name(out_dir, "sweep folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            # One sweep per folder: a second one would run and record the same cases.
            return lock_directory(out_dir)
        except RunDirectoryInUse as e:
            raise RunDirectoryInUse(str(e).replace("run directory", "sweep folder")) from None
        except OSError as e:
            error = EnvironmentFailure if is_environment_error(e) else InputError
            raise error(f"sweep folder {str(out_dir)!r} cannot be created: {e}") from None

    lock = _on_root_keep(comm, make_folder)
    try:
        return _run_cases(sweep, cases, out_dir, comm, solver_overrides, quiet)
    finally:
        if lock is not None:
            lock.release()


def _on_root_keep(comm, fn):
    """:func:`on_root` for a value that stays on rank 0 (a lock): the others get ``None``."""
    holder = {}

    def call():
        holder["value"] = fn()

    on_root(comm, call)
    return holder.get("value")


def _run_cases(sweep: Sweep, cases: list[SweepCase], out_dir: Path, comm,
               solver_overrides: dict | None, quiet: bool) -> list[CaseResult]:
    results: list[CaseResult] = []
    for i, case in enumerate(cases, 1):
        folder = out_dir / case.name
        # Rank 0 decides, so every rank takes the same branch.
        done = comm.bcast(_finished(folder, case.settings.to_dict()) if comm.rank == 0 else None,
                          root=0)
        if done is not None:
            result = done
        else:
            resumable = comm.bcast(
                comm.rank == 0 and checkpoint.latest_checkpoint(folder) is not None, root=0)
            if comm.rank == 0 and not quiet:
                print(f"[{i}/{len(cases)}] {case.name}: "
                      f"{'resuming' if resumable else 'running'}", flush=True)
            result = _run_case(case, folder, comm, solver_overrides, resumable)
            if comm.rank == 0:
                if not folder.exists():  # an input error creates none: a run directory
                    folder.mkdir(parents=True)
                    mark(folder)
                atomic_write_text(folder / CASE_MARKER,
                                  json.dumps(result.to_json(), indent=2) + "\n")
            # Free the case's DOLFINx/PETSc objects now, on every rank together.
            gc.collect()
        results.append(result)
        if comm.rank == 0:
            atomic_write_text(out_dir / "sweep.csv", _csv_text(sweep, results))
            if not quiet:
                print(_case_line(i, len(cases), result), flush=True)
    comm.Barrier()
    return results


def _case_line(i: int, n: int, r: CaseResult) -> str:
    head = f"[{i}/{n}] {r.name}: {r.status}"
    if r.skipped:
        return head + " (finished before, skipped)"
    if r.status != "ok":
        return f"{head} ({r.wall_time:.3g} s): {r.message}"
    share = max(r.vertex_masses) / r.mass if r.mass else math.nan
    winner = r.vertex_masses.index(max(r.vertex_masses))
    return (f"{head} ({r.wall_time:.3g} s)  F = {r.free_energy:.6g}  "
            f"vertex {winner} holds {share:.1%}")
