"""Run-directory output: diagnostics CSV, final.npz, VTX fields, summary.json, config.toml.

Only rank 0 writes files, except the VTX writer (collective). Whole files are written to a
temporary name and renamed into place, so a crash never leaves a truncated JSON or npz.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import tomli_w

from rdgraph.compat import MPI, dolfinx
from rdgraph.output.rundir import open_run_directory, unique_suffix

__all__ = [
    "DiagnosticsCSV",
    "FieldWriter",
    "atomic_write_bytes",
    "atomic_write_text",
    "gather_nodal_values",
    "prepare_run_directory",
    "write_config",
]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    The temporary name is unique to this process (PID and a random token), so two processes
    never write through the same one; it is removed again if the write fails (a full disk).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{unique_suffix()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # ours: created just above
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_config(path: Path, data: dict) -> None:
    """Write nested config data as TOML (atomically)."""
    atomic_write_text(path, tomli_w.dumps(data))


_HELD: list = []  # run directories locked by prepare_run_directory, for the process's life


def prepare_run_directory(
    path: str | Path, comm: MPI.Comm, *, overwrite: bool = False, explicit: bool = True
) -> Path:
    """Create (or safely replace) a run directory and lock it for the rest of the process
    (or until this process prepares the same directory again).

    See :func:`rdgraph.output.rundir.open_run_directory` for the rules; :func:`rdgraph.run`
    uses that directly, to release the lock when the run ends.

    Args:
        path: The requested directory.
        comm: The run's communicator.
        overwrite: Replace an existing non-empty run directory (one rdgraph created).
        explicit: The user named the directory. If not, an existing one is never touched:
            a fresh sibling name is chosen instead.

    Raises:
        InputError: ``path`` exists, is not empty and ``overwrite`` is false or refused, it
            is in use by another process, or its name is invalid. Raised on every rank.
        EnvironmentFailure: The file system refused to create it.
    """
    # A directory this process locked before (an earlier run of the same script) is free
    # for this one: only other processes are kept out.
    for held in [d for d in _HELD if d.path.resolve() == Path(path).resolve()]:
        held.release()
        _HELD.remove(held)
    directory = open_run_directory(path, comm, overwrite=overwrite, explicit=explicit)
    _HELD.append(directory)
    return directory.path


class DiagnosticsCSV:
    """``diagnostics.csv``: a header, then one complete line per step, flushed as written.

    A write that fails (a full disk) is not raised at once on rank 0 alone: it is kept in
    :attr:`error` and :meth:`check` raises it on every rank together.
    """

    def __init__(self, path: Path, header: list[str], comm: MPI.Comm, *, append: bool = False):
        self._file = None
        self.path = Path(path)
        self.comm = comm
        self.error: OSError | None = None
        if comm.rank == 0:
            try:
                # append: a resumed run continues the rows kept up to its checkpoint.
                self._file = open(path, "a" if append else "w", encoding="utf-8")
                if not append:
                    self._file.write(",".join(header) + "\n")
                self._file.flush()
            except OSError as e:
                self.error = e

    def write(self, row: list) -> None:
        if self._file is None or self.error is not None:
            return
        fields = [str(v) if isinstance(v, (int, np.integer)) else repr(float(v)) for v in row]
        try:
            # One write per line: a reader never sees half a row.
            self._file.write(",".join(fields) + "\n")
            self._file.flush()
        except OSError as e:
            self.error = e

    def check(self) -> OSError | None:
        """The OS error of a failed write, on every rank (collective), or ``None``."""
        error = self.comm.bcast(self.error, root=0)
        return error

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:  # the last buffered bytes could not be written
                self.error = self.error or e
            self._file = None


def gather_nodal_values(V: dolfinx.fem.FunctionSpace, values: np.ndarray,
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gather dof coordinates and values on rank 0, sorted by coordinates.

    Args:
        V: The scalar space.
        values: This rank's owned nodal values of each field, shape ``(N, owned dofs)``
            (e.g. :meth:`rdgraph.Simulation.nodal_values`).

    Returns ``(x, rho)`` with shapes ``(P, 3)`` and ``(N, P)`` on rank 0 (``None`` elsewhere).
    Points are rounded to 12 digits of the domain's size and sorted lexicographically by
    (x0, x1, x2), so values and order do not depend on the number of ranks; for P1 the
    points are the mesh vertices.
    """
    comm = V.mesh.comm
    owned = V.dofmap.index_map.size_local
    coords = V.tabulate_dof_coordinates()[:owned]
    values = np.ascontiguousarray(np.asarray(values).reshape(-1, owned))
    all_coords = comm.gather(coords, root=0)
    all_values = comm.gather(values, root=0)
    if comm.rank != 0:
        return None, None
    x = np.concatenate(all_coords)
    rho = np.concatenate(all_values, axis=1)
    # Dof coordinates are pushed forward cell by cell and differ in the last bits between
    # partitions: round them relative to the domain's size, so the values and their order
    # are the same on any number of ranks.
    scale = max(float(np.abs(x).max(initial=0.0)), 1e-300)
    x = np.round(x / scale, 12) * scale
    order = np.lexsort((x[:, 2], x[:, 1], x[:, 0]))
    return x[order], rho[:, order]


def save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


class FieldWriter:
    """``fields.bp``: one named field per written vertex (``rho_<g>``) through ADIOS2/VTX.

    Functions are made for the written vertices only (each holds an MPI communicator), and
    the block state is copied into them before each write.

    Args:
        path: The ``.bp`` directory.
        V: The scalar space.
        vertices: The vertices to write.
        comm: The communicator.
    """

    def __init__(self, path: Path, V: dolfinx.fem.FunctionSpace, vertices, comm: MPI.Comm):
        self.vertices = [int(g) for g in vertices]
        self._owned = V.dofmap.index_map.size_local
        self._functions = [dolfinx.fem.Function(V, name=f"rho_{g}") for g in self.vertices]
        self._writer = dolfinx.io.VTXWriter(comm, str(path), self._functions, engine="BP4")

    def write(self, t: float, values: np.ndarray) -> None:
        """Write the fields at time ``t``.

        Args:
            t: The time.
            values: The owned nodal values of every vertex, ``(N, owned dofs)``.
        """
        for g, u in zip(self.vertices, self._functions, strict=True):
            u.x.array[: self._owned] = values[g]
            u.x.scatter_forward()
        self._writer.write(t)

    def close(self) -> None:
        try:
            self._writer.close()
        except RuntimeError:
            # ADIOS2 could not flush (a full disk): its destructor would try again and throw,
            # which ends the process with std::terminate. Keep it until the process ends.
            self.abandon()
            raise

    def abandon(self) -> None:
        """Keep a writer that failed (a full disk) unclosed until the process ends."""
        _UNCLOSABLE.append(self._writer)


_UNCLOSABLE: list = []
