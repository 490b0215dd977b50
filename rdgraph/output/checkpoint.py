"""Checkpoints that do not depend on the number of ranks, resume, and stopping on signals.

A checkpoint is one ``.npz`` file written by rank 0 (atomically: temporary name, then rename): the
owned dof values of every vertex gathered from all ranks and keyed by their dof coordinates,
together with the step, the time, the stepper's history
(:meth:`rdgraph.timestepping.base.Stepper.history`: e.g. BDF2's ρ^{n-1}, stored under its names) and
a fingerprint of the settings that define the discrete problem. On resume every rank picks its own
dofs out of it by coordinates, so a run written on 2 ranks resumes on 1 and the reverse. The last
:data:`KEEP` checkpoints are kept: a crash while writing one leaves the previous one intact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI
from rdgraph.errors import InputError, on_root
from rdgraph.output.io import atomic_write_text, save_npz
from rdgraph.problem.config import Settings
from rdgraph.timestepping.base import History

__all__ = [
    "KEEP",
    "Checkpointer",
    "SignalWatch",
    "fingerprint",
    "checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "restore",
    "truncate_csv",
    "BACKUP_SUFFIX",
    "write_checkpoint",
]

KEEP = 2
_PATTERN = "checkpoint-*.npz"
# Coordinates are matched after rounding to this fraction of the domain's size: far above the
# last-bit differences between partitions, far below any mesh size.
_RESOLUTION = 1e-9


def fingerprint(settings: Settings) -> str:
    """A hash of the settings that define the discrete problem and its time grid.

    ``t_end``, the solver and the output settings may change between a run and its resume;
    the mesh, space, graph, model, scheme and ``dt`` may not.
    """
    data = settings.to_dict()
    key = {name: data[name] for name in ("mesh", "space", "graph", "model")}
    key["time"] = {"scheme": settings.time.scheme, "dt": settings.time.dt}
    if settings.time.adaptive:  # (only then: fixed-step fingerprints stay as they were)
        key["time"]["adaptive"] = True
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _blocks(sim, values: np.ndarray) -> np.ndarray:
    n = sim.layout.size_local
    return np.asarray(values).reshape(sim.graph.n, n).copy()


def _keys(x: np.ndarray, scale: float) -> np.ndarray:
    return np.rint(x / (scale * _RESOLUTION)).astype(np.int64)


def write_checkpoint(sim, directory: Path) -> Path:
    """Write the state of ``sim`` to ``directory/checkpoint-<step>.npz`` (collective).

    Keeps the newest :data:`KEEP` checkpoints and removes older ones.

    Returns:
        The checkpoint's path, on every rank.
    """
    comm = sim.comm
    owned = sim.layout.size_local
    coords = sim.model.V.tabulate_dof_coordinates()[:owned]
    history = sim.stepper.history()
    parts = comm.gather(
        (coords, _blocks(sim, sim.state.array_r),
         {name: _blocks(sim, v) for name, v in history.vectors.items()}),
        root=0,
    )
    path = Path(directory) / f"checkpoint-{sim.step_index:08d}.npz"
    if comm.rank == 0:
        x = np.concatenate([p[0] for p in parts])
        scale = max(float(np.abs(x).max(initial=0.0)), 1e-300)
        k = _keys(x, scale)
        order = np.lexsort((k[:, 2], k[:, 1], k[:, 0]))
        arrays = {
            "x": x[order],
            "rho": np.concatenate([p[1] for p in parts], axis=1)[:, order],
            "step": np.array(sim.step_index),
            "t": np.array(sim.t),
            "dt": np.array(sim.settings.time.dt),
            "scale": np.array(scale),
            "ranks": np.array(comm.size),
            "scheme": np.array(sim.settings.time.scheme),
            "fingerprint": np.array(fingerprint(sim.settings)),
        }
        for name in history.vectors:
            arrays[name] = np.concatenate([p[2][name] for p in parts], axis=1)[:, order]
        for name, value in history.values.items():
            arrays[name] = np.array(value)
        arrays["history"] = np.array([*history.vectors, *history.values], dtype=str)
        error = None
        try:
            save_npz(path, **arrays)
            for old in sorted(Path(directory).glob(_PATTERN))[:-KEEP]:
                old.unlink(missing_ok=True)
        except OSError as e:
            error = e
    # Rank 0 alone writes: its error (a full disk) is raised on every rank.
    error = comm.bcast(error if comm.rank == 0 else None, root=0)
    if error is not None:
        raise error
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint in ``directory`` (call on one rank), or ``None``."""
    found = checkpoints(directory)
    return found[-1] if found else None


def checkpoints(directory: Path) -> list[Path]:
    """The checkpoints of ``directory``, oldest first (call on one rank)."""
    return sorted(Path(directory).glob(_PATTERN))


def _check(path: Path, settings: Settings, shape: tuple[int, int] | None) -> dict:
    """Read and validate one checkpoint; raise :class:`InputError` saying what is wrong."""
    try:
        # allow_pickle stays False: a checkpoint holds numbers and strings only.
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        reason = ("it is not an .npz archive" if "pickle" in str(e) else
                  f"{type(e).__name__}: {e}")
        raise InputError(f"is damaged or truncated ({reason})") from None
    except Exception as e:  # noqa: BLE001 - any decoding failure means a damaged file
        raise InputError(f"is damaged or truncated ({type(e).__name__}: {e})") from None
    missing = {"x", "rho", "step", "t", "scale", "fingerprint"} - set(data)
    if missing:
        raise InputError(f"lacks {', '.join(sorted(missing))}")
    if str(data["fingerprint"]) != fingerprint(settings):
        raise InputError("was written for other settings (mesh, space, graph, model, "
                         "time.scheme or time.dt differ); resume with the run's config.toml")
    try:
        step = int(data["step"])
        scale = float(data["scale"])
    except (TypeError, ValueError):
        raise InputError("has a step or scale that is not a number") from None
    if not 0 <= step <= settings.num_steps:
        raise InputError(f"is at step {step}, outside 0..{settings.num_steps} "
                         f"(time.t_end = {settings.time.t_end}, {settings.num_steps} steps)")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"has an invalid coordinate scale {scale}")
    rho, x = data["rho"], data["x"]
    if shape is not None:
        n, points = shape
        if rho.shape != (n, points):
            raise InputError(f"holds rho of shape {rho.shape}, but this problem has {n} "
                             f"vertices x {points} dofs")
        if x.shape != (points, 3):
            raise InputError(f"holds x of shape {x.shape}, expected ({points}, 3)")
    # The stepper's history: the names the checkpoint lists (older versions: "previous" and
    # the accelerated flow's "clock").
    if "history" in data:
        names = [str(name) for name in np.atleast_1d(data["history"])]
    else:
        names = [name for name in ("previous", "clock") if name in data]
    scheme = settings.time.scheme
    needed = {"bdf2": ["previous"] if step > 0 else [], "accelerated": ["clock"]}.get(scheme, [])
    for key in [*needed, *names]:
        if key not in data:
            raise InputError(f"lacks {key} (needed by time.scheme = {scheme!r})")
    for name in names:
        if data[name].ndim == 2 and data[name].shape != rho.shape:
            raise InputError(f"holds {name} of shape {data[name].shape}, expected {rho.shape}")
    for key in ("x", "rho", "t", *names):
        if not (np.issubdtype(data[key].dtype, np.number) and np.isfinite(data[key]).all()):
            raise InputError(f"holds {key} values that are not finite numbers")
    return data


def _read(directory: Path, settings: Settings, shape: tuple[int, int] | None = None) -> dict:
    """The newest valid checkpoint; older ones are tried when newer ones are invalid."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--resume {str(directory)!r}: no such run directory")
    found = checkpoints(directory)
    if not found:
        raise InputError(f"--resume {str(directory)!r}: the run directory holds no checkpoint "
                         f"({_PATTERN})")
    rejected = []
    for path in reversed(found):
        try:
            data = _check(path, settings, shape)
        except InputError as e:
            rejected.append(f"checkpoint {str(path)!r} {e}")
            continue
        data["path"] = str(path)
        data["rejected"] = rejected
        return data
    raise InputError("; ".join(rejected) + ("" if len(found) == 1 else
                                            f"; no usable checkpoint in {str(directory)!r}"))


def load_checkpoint(directory: Path, settings: Settings, comm: MPI.Comm,
                    shape: tuple[int, int] | None = None) -> dict:
    """Read the newest valid checkpoint of a run directory on rank 0 and give it to every rank.

    A checkpoint is valid when it can be read, was written for these settings, has its step
    in ``0..num_steps``, arrays of ``shape`` (vertices, global dofs) and finite values. An
    invalid one is passed over for the next older one: ``data["rejected"]`` lists those
    passed over and why (printed by the caller).

    Raises:
        InputError: No valid checkpoint (the reasons of each). Raised on every rank.
    """
    return on_root(comm, _read, directory, settings, shape)


def restore(sim, data: dict) -> None:
    """Set the state, step and stepper history of ``sim`` from checkpoint ``data`` (collective).

    Raises:
        InputError: The checkpoint's points are not this mesh's dofs (on every rank).
    """
    owned = sim.layout.size_local
    scale = float(data["scale"])
    stored = {tuple(k): i for i, k in enumerate(_keys(data["x"], scale))}
    mine = _keys(sim.model.V.tabulate_dof_coordinates()[:owned], scale)
    index = np.array([stored.get(tuple(k), -1) for k in mine], dtype=np.int64)
    ok = len(stored) == sim.layout.size_global and bool((index >= 0).all())
    if not sim.comm.allreduce(ok, op=MPI.LAND):
        raise InputError(f"checkpoint {data['path']!r} does not match this mesh's dofs")
    sim.state.array[:] = data["rho"][:, index].ravel()
    # Checkpoints of older versions name no history: theirs was "previous" (and "clock").
    names = [str(k) for k in data["history"]] if "history" in data else ["previous", "clock"]
    history = History(float(data.get("dt", sim.settings.time.dt)))
    for name in (k for k in names if k in data):
        if np.ndim(data[name]) == 0:
            history.values[name] = float(data[name])
        else:
            history.vectors[name] = data[name][:, index].ravel()
    sim.stepper.restore(sim.state, history)
    sim.step_index = int(data["step"])
    # An adaptive run's time is no multiple of dt: the stored one, bit for bit.
    sim.t = (float(data["t"]) if sim.settings.time.adaptive
             else sim.step_index * sim.settings.time.dt)


BACKUP_SUFFIX = ".before-resume"


def _parse_row(line: str, columns: int) -> int | None:
    """The step of a complete CSV row, or ``None`` if the row cannot be parsed."""
    fields = line.split(",")
    if len(fields) != columns:
        return None
    try:
        step = int(fields[0])
        for value in fields[1:]:
            float(value)
    except ValueError:
        return None
    return step if step >= 0 else None


def truncate_csv(path: Path, step: int, comm: MPI.Comm,
                 header: list[str] | None = None) -> tuple[list[str], Path | None]:
    """Keep the header and the rows of steps ``0..step`` of a diagnostics CSV (collective).

    Rows are chosen by their ``step`` column, not by their position: a row that cannot be
    parsed is left out and reported, and the good rows after it are kept; a second row for a
    step already kept is left out too. A missing file, or one without its header, gets
    ``header`` back. Before a row is dropped the original is kept as
    ``diagnostics.csv.before-resume`` (an existing copy, from an earlier attempt, is kept
    as it is); the new file replaces the old one atomically.

    Args:
        path: The CSV.
        step: The checkpoint's step.
        comm: The communicator (rank 0 does the work).
        header: The expected header (default: the file's own first line).

    Returns:
        On rank 0: messages for the user, and the copy of the original to remove once the
        resumed run is complete (``None`` when there is none, or when it holds unparseable
        rows the user should see). Elsewhere ``([], None)``.
    """
    messages: list[str] = []
    remove: Path | None = None
    error = None
    if comm.rank == 0:
        try:
            messages, remove = _truncate(Path(path), step, header)
        except OSError as e:
            error = e
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error
    return messages, remove


def _truncate(path: Path, step: int, header: list[str] | None) -> tuple[list[str], Path | None]:
    messages = []
    exists = path.exists()
    text = path.read_bytes().decode("utf-8", "replace") if exists else ""
    # Rows are written whole, each with its newline: text after the last newline is a row
    # torn by a kill during a write, and goes.
    lines = text.split("\n")[:-1]
    expected = ",".join(header) if header is not None else (lines[0] if lines else "")
    columns = expected.count(",") + 1
    if not exists:
        messages.append(f"{path} was missing: its header is written back, and the rows up to "
                        f"step {step} are lost; rows from step {step + 1} on follow")
    first = 1  # the file's line number of lines[0]
    if exists and (not lines or lines[0] != expected):
        if lines and _parse_row(lines[0], columns) is None and lines[0].startswith("step"):
            messages.append(f"{path}: its header was not rdgraph's; it is written back")
            lines, first = lines[1:], 2
        else:
            messages.append(f"{path} had no header; it is written back")
    elif exists:
        lines, first = lines[1:], 2
    kept, seen, bad, later = [expected], set(), [], 0
    for number, line in enumerate(lines, first):
        row_step = _parse_row(line, columns)
        if row_step is None:
            bad.append((number, line))
        elif row_step > step:
            later += 1
        elif row_step in seen:
            bad.append((number, line))
        else:
            seen.add(row_step)
            kept.append(line)
    missing = sorted(set(range(step + 1)) - seen)
    if missing and exists:
        messages.append(f"{path} lacks the rows of {len(missing)} step(s) up to {step} "
                        f"(first: {missing[0]}); they are not recomputed")
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    created = False
    if exists and (bad or later) and not backup.exists():
        shutil.copy2(path, backup)
        created = True
    if bad:
        shown = "; ".join(f"line {n}: {line[:60]!r}" for n, line in bad[:3])
        messages.append(
            f"{path}: {len(bad)} row(s) cannot be parsed or repeat a step and are left out "
            f"({shown}{'; ...' if len(bad) > 3 else ''}); the original file is kept as "
            f"{backup}")
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    # The copy goes once the resumed run has rewritten the dropped rows, unless it holds
    # rows the user should look at, or comes from an earlier attempt.
    return messages, (backup if created and not bad else None)


class SignalWatch:
    """Records SIGTERM/SIGINT/SIGPIPE instead of dying, so the run can checkpoint first.

    SIGPIPE arrives when rank 0 writes to a closed standard output (``rdgraph run | head``):
    the run then stops as for SIGTERM, without PETSc's signal handler and ``MPI_Abort``.

    Use as a context manager around the time loop; :meth:`received` is collective and
    returns the same signal number on every rank (0 when none arrived on any rank).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE)

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.signum = 0
        self._previous = {}

    def _handler(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> SignalWatch:
        # Python allows handlers only in the main thread; elsewhere signals keep their default.
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def received(self) -> int:
        return int(self.comm.allreduce(self.signum, op=MPI.MAX))


class Checkpointer:
    """Writes checkpoints every ``every`` steps (0: never periodically) into ``directory``.

    Args:
        sim: The simulation.
        directory: The run directory.
        every: The checkpoint interval in steps.
    """

    def __init__(self, sim, directory: Path, every: int):
        self.sim = sim
        self.directory = Path(directory)
        self.every = every
        self.last: Path | None = None
        self.last_step = -1

    def write(self) -> Path:
        """Write a checkpoint of the current state unless one exists for this step."""
        if self.last_step != self.sim.step_index:
            self.last = write_checkpoint(self.sim, self.directory)
            self.last_step = self.sim.step_index
        return self.last

    def after_step(self, step: int) -> None:
        if self.every and step > 0 and step % self.every == 0:
            self.write()
