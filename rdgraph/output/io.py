"""Run-directory output: diagnostics CSV, final.npz, VTX fields, summary.json, config.toml.

Only rank 0 writes files, except the VTX writer (collective). Whole files are written to a
temporary name and renamed into place, so a crash never leaves a truncated JSON or npz.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import tomli_w

from rdgraph.compat import MPI, dolfinx
from rdgraph.errors import InputError

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
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_config(path: Path, data: dict) -> None:
    """Write nested config data as TOML (atomically)."""
    atomic_write_text(path, tomli_w.dumps(data))


def _unique_default(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist yet."""
    candidate, k = path, 1
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}-{k}")
    return candidate


def prepare_run_directory(
    path: str | Path, comm: MPI.Comm, *, overwrite: bool = False, explicit: bool = True
) -> Path:
    """Create the run directory on rank 0 and return its path on every rank.

    Args:
        path: The requested directory.
        comm: The run's communicator.
        overwrite: Replace an existing non-empty directory.
        explicit: The user named the directory. If not, an existing one is never touched:
            a fresh sibling name is chosen instead.

    Raises:
        InputError: ``path`` exists, is not empty and ``overwrite`` is false, or it cannot
            be created. Raised on every rank.
    """
    result, error = None, None
    if comm.rank == 0:
        try:
            target = Path(path)
            if not explicit and target.exists():
                target = _unique_default(target)
            if target.exists() and not target.is_dir():
                raise InputError(f"output directory {str(target)!r} exists and is not a directory")
            if target.is_dir() and any(target.iterdir()):
                if not overwrite:
                    raise InputError(
                        f"output directory {str(target)!r} exists and is not empty; "
                        "pass --overwrite to replace it, or choose another --out"
                    )
                shutil.rmtree(target)
            target.mkdir(parents=True, exist_ok=True)
            result = str(target)
        except InputError as e:
            error = str(e)
        except OSError as e:
            error = f"output directory {str(path)!r} cannot be created: {e}"
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise InputError(error)
    return Path(result)


class DiagnosticsCSV:
    """``diagnostics.csv``: a header, then one complete line per step, flushed as written."""

    def __init__(self, path: Path, header: list[str], comm: MPI.Comm, *, append: bool = False):
        self._file = None
        if comm.rank == 0:
            # append: a resumed run continues the rows kept up to its checkpoint.
            self._file = open(path, "a" if append else "w", encoding="utf-8")
            if not append:
                self._file.write(",".join(header) + "\n")
            self._file.flush()

    def write(self, row: list) -> None:
        if self._file is None:
            return
        fields = [str(v) if isinstance(v, (int, np.integer)) else repr(float(v)) for v in row]
        # One write per line: a reader never sees half a row.
        self._file.write(",".join(fields) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def gather_nodal_values(functions) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gather dof coordinates and values on rank 0, sorted by coordinates.

    Returns ``(x, rho)`` with shapes ``(P, 3)`` and ``(N, P)`` on rank 0 (``None`` elsewhere).
    Points are rounded to 12 digits of the domain's size and sorted lexicographically by
    (x0, x1, x2), so values and order do not depend on the number of ranks; for P1 the
    points are the mesh vertices.
    """
    V = functions[0].function_space
    comm = V.mesh.comm
    owned = V.dofmap.index_map.size_local
    coords = V.tabulate_dof_coordinates()[:owned]
    values = np.array([u.x.array[:owned] for u in functions])
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
    """``fields.bp``: one named field per vertex (``rho_0``, ...) through ADIOS2/VTX."""

    def __init__(self, path: Path, functions, comm: MPI.Comm):
        self._writer = dolfinx.io.VTXWriter(comm, str(path), list(functions), engine="BP4")

    def write(self, t: float) -> None:
        self._writer.write(t)

    def close(self) -> None:
        self._writer.close()
