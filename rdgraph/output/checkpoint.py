"""Checkpoints that do not depend on the number of ranks, resume, and stopping on signals.

A checkpoint is one ``.npz`` file written by rank 0 (atomically: temporary name, then rename):
the owned dof values of every vertex gathered from all ranks and keyed by their dof
coordinates, together with the step, the time, the BDF2 history ρ^{n-1} and a fingerprint of
the settings that define the discrete problem. On resume every rank picks its own dofs out of
it by coordinates, so a run written on 2 ranks resumes on 1 and the reverse. The last
:data:`KEEP` checkpoints are kept: a crash while writing one leaves the previous one intact.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI
from rdgraph.problem.config import Settings
from rdgraph.errors import InputError, on_root
from rdgraph.output.io import atomic_write_text, save_npz

__all__ = [
    "KEEP",
    "Checkpointer",
    "SignalWatch",
    "fingerprint",
    "latest_checkpoint",
    "load_checkpoint",
    "restore",
    "truncate_csv",
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
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _blocks(sim, vec) -> np.ndarray:
    n = sim.layout.size_local
    return vec.array_r.reshape(sim.graph.n, n).copy()


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
    previous = sim.stepper._previous
    parts = comm.gather(
        (coords, _blocks(sim, sim.state), None if previous is None else _blocks(sim, previous)),
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
        if previous is not None:
            arrays["previous"] = np.concatenate([p[2] for p in parts], axis=1)[:, order]
        if sim.settings.time.scheme == "accelerated":  # "previous" holds S; the 3/t clock
            arrays["clock"] = np.array(sim.stepper.clock)
        save_npz(path, **arrays)
        for old in sorted(Path(directory).glob(_PATTERN))[:-KEEP]:
            old.unlink(missing_ok=True)
    comm.Barrier()
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint in ``directory`` (call on one rank), or ``None``."""
    found = sorted(Path(directory).glob(_PATTERN))
    return found[-1] if found else None


def _read(directory: Path, settings: Settings) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--resume {str(directory)!r}: no such run directory")
    path = latest_checkpoint(directory)
    if path is None:
        raise InputError(f"--resume {str(directory)!r}: the run directory holds no checkpoint "
                         f"({_PATTERN})")
    try:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # a damaged file: zipfile, pickle or OS errors
        raise InputError(f"checkpoint {str(path)!r} cannot be read: {e}") from None
    missing = {"x", "rho", "step", "t", "scale", "fingerprint"} - set(data)
    if missing:
        raise InputError(f"checkpoint {str(path)!r} lacks {', '.join(sorted(missing))}")
    if str(data["fingerprint"]) != fingerprint(settings):
        raise InputError(
            f"checkpoint {str(path)!r} was written for other settings (mesh, space, graph, "
            "model, time.scheme or time.dt differ); resume with the run's config.toml"
        )
    step = int(data["step"])
    if step > settings.num_steps:
        raise InputError(f"checkpoint {str(path)!r} is at step {step}, beyond time.t_end = "
                         f"{settings.time.t_end} ({settings.num_steps} steps)")
    data["path"] = str(path)
    return data


def load_checkpoint(directory: Path, settings: Settings, comm: MPI.Comm) -> dict:
    """Read the newest checkpoint of a run directory on rank 0 and give it to every rank.

    Raises:
        InputError: No checkpoint, an unreadable one, or one written for other settings.
            Raised on every rank.
    """
    return on_root(comm, _read, directory, settings)


def restore(sim, data: dict) -> None:
    """Set the state, step and BDF2 history of ``sim`` from checkpoint ``data`` (collective).

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
    stepper = sim.stepper
    if "previous" in data and stepper.scheme == "bdf2":
        if stepper._previous is None:
            stepper._previous = sim.state.duplicate()
        stepper._previous.array[:] = data["previous"][:, index].ravel()
    if stepper.scheme == "accelerated":
        stepper.set_state(data["rho"][:, index], data["previous"][:, index],
                          float(data["clock"]))
    sim.step_index = int(data["step"])
    sim.t = sim.step_index * sim.settings.time.dt
    stepper.steps_taken = sim.step_index
    sim.layout.to_functions(sim.state, sim.functions)


def truncate_csv(path: Path, step: int, comm: MPI.Comm) -> None:
    """Keep the header and the rows up to ``step`` of a diagnostics CSV (rank 0, atomically)."""
    if comm.rank == 0:
        text = Path(path).read_text() if Path(path).exists() else ""
        # Rows are written whole, each with its newline: text after the last newline is a row
        # torn by a kill during a write, and goes.
        lines = text.split("\n")[:-1]
        kept = lines[:1]
        for line in lines[1:]:
            head = line.split(",", 1)[0]
            if not head.isdigit() or int(head) > step or line.count(",") != lines[0].count(","):
                break
            kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    comm.Barrier()


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
