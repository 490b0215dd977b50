"""``vertex_masses.bin``: every vertex's mass at every step, written as the run goes.

The file is raw little-endian float64, one record per step: ``step, t, m_0, ..., m_{N-1}``
(``N + 2`` numbers), appended and flushed after each step. A small JSON header beside it,
``vertex_masses.json``, gives the layout, so NumPy reads it without rdgraph::

    N = json.load(open("vertex_masses.json"))["vertices"]
    records = np.fromfile("vertex_masses.bin", dtype="<f8")
    records = records[: records.size // (N + 2) * (N + 2)].reshape(-1, N + 2)

A killed run leaves every complete record readable: at most the last record is torn, and
:func:`read_vertex_masses` drops it. A resumed run cuts the file after the checkpoint's step
(:func:`truncate_vertex_masses`), as it cuts ``diagnostics.csv``. Only rank 0 writes; a
failed write is kept and raised on every rank together by :meth:`VertexMassFile.check`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI

__all__ = [
    "MASSES_FILE",
    "MASSES_HEADER",
    "VertexMassFile",
    "read_vertex_masses",
    "truncate_vertex_masses",
]

MASSES_FILE = "vertex_masses.bin"
MASSES_HEADER = "vertex_masses.json"
_DTYPE = np.dtype("<f8")


def _header(num_vertices: int, labels=None) -> dict:
    header = {"format": "rdgraph vertex masses", "version": 1, "dtype": "<f8",
              "vertices": num_vertices,
              "record": ["step", "t"] + ["mass_0", "...", f"mass_{num_vertices - 1}"],
              "record_length": num_vertices + 2}
    if labels is not None:  # the graph's vertex names, in vertex order
        header["labels"] = list(labels)
    return header


class VertexMassFile:
    """Appends one record per step to ``vertex_masses.bin`` (rank 0; collective check).

    Args:
        directory: The run directory.
        num_vertices: N.
        comm: The run's communicator.
        append: Continue an existing file (a resumed run, after
            :func:`truncate_vertex_masses`).
        labels: The graph's vertex names, written to the header as ``labels``.
    """

    def __init__(self, directory: Path, num_vertices: int, comm: MPI.Comm, *,
                 append: bool = False, labels=None):
        self.path = Path(directory) / MASSES_FILE
        self.comm = comm
        self.error: OSError | None = None
        self._file = None
        self._record = np.empty(num_vertices + 2, dtype=_DTYPE)
        if comm.rank != 0:
            return
        try:
            header = Path(directory) / MASSES_HEADER
            header.write_text(json.dumps(_header(num_vertices, labels), indent=1) + "\n")
            # Unbuffered: each record goes to the OS in one write, so a kill between steps
            # leaves only whole records.
            self._file = open(self.path, "ab" if append else "wb", buffering=0)
        except OSError as e:
            self.error = e

    def write(self, step: int, t: float, masses: np.ndarray) -> None:
        if self._file is None or self.error is not None:
            return
        self._record[0], self._record[1] = step, t
        self._record[2:] = masses
        try:
            self._file.write(self._record.tobytes())
        except OSError as e:
            self.error = e

    def check(self) -> OSError | None:
        """The OS error of a failed write, on every rank (collective), or ``None``."""
        return self.comm.bcast(self.error, root=0)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                self.error = self.error or e
            self._file = None


def read_vertex_masses(directory: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The records of a run directory's ``vertex_masses.bin``.

    Returns:
        ``(steps, t, masses)`` with shapes ``(S,)``, ``(S,)`` and ``(S, N)``; a torn last
        record (a killed run) is left out.

    Raises:
        OSError: The file or its header cannot be read.
        ValueError: The header is not rdgraph's.
    """
    directory = Path(directory)
    header = json.loads((directory / MASSES_HEADER).read_text())
    if header.get("format") != "rdgraph vertex masses":
        raise ValueError(f"{directory / MASSES_HEADER} is not an rdgraph vertex-mass header")
    length = int(header["record_length"])
    data = np.fromfile(directory / MASSES_FILE, dtype=_DTYPE)
    data = data[: data.size // length * length].reshape(-1, length)
    return data[:, 0].astype(np.int64), data[:, 1].copy(), data[:, 2:].copy()


def truncate_vertex_masses(directory: Path, num_vertices: int, step: int,
                           comm: MPI.Comm) -> list[str]:
    """Keep the records of steps ``0..step`` of ``vertex_masses.bin`` (collective).

    The file is cut in place after the records of increasing steps ``≤ step`` at its
    start, which also drops a torn record and anything after a record out of order. The file
    was written by rdgraph in this run directory; the records cut are the ones the resumed
    run writes again.

    Returns:
        Messages for the user (rank 0): a missing file is started again from the
        checkpoint's step.

    Raises:
        OSError: The file could not be read or cut (on every rank).
    """
    messages, error = [], None
    if comm.rank == 0:
        path = Path(directory) / MASSES_FILE
        length = (num_vertices + 2) * _DTYPE.itemsize
        try:
            if not path.exists():
                messages.append(f"{path} was missing: it starts again at step {step + 1}")
            else:
                rows = path.stat().st_size // length
                keep = 0
                if rows:
                    # A memory map reads one page per record for the step column, not the
                    # whole file (N = 10⁵ is 800 kB a record).
                    records = np.memmap(path, dtype=_DTYPE, mode="r",
                                        shape=(rows, num_vertices + 2))
                    steps = np.array(records[:, 0])
                    del records
                    # The prefix of increasing steps up to the checkpoint's: a record out of
                    # order (another run's, or garbage) ends what is kept.
                    good = (steps <= step) & np.concatenate(
                        ([True], np.diff(steps) > 0))
                    keep = int(np.argmin(good)) if not good.all() else rows
                os.truncate(path, keep * length)
        except OSError as e:
            error = e
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error
    return messages
