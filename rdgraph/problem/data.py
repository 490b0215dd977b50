"""Per-vertex data tables: ``[model] data = "archs.csv"``, one row per vertex.

A CSV file with a header. Rows are in vertex order, or matched to vertices through a
``vertex`` column (indices) or a ``label`` column (the graph's vertex labels). Every other
column must hold finite numbers; column ``name`` is then ``name[g]`` in expressions
(:mod:`rdgraph.problem.expressions`). Pure Python, identical on every rank; every input error
is an :class:`~rdgraph.errors.InputError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rdgraph.errors import InputError

__all__ = ["VertexData", "read_labels", "read_vertex_data"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = ("x", "g", "t", "pi", "e")


@dataclass(frozen=True)
class VertexData:
    """Numeric columns of a per-vertex table, each of shape ``(N,)`` in vertex order.

    Attributes:
        source: The file (for messages).
        columns: Column name to values.
        labels: The ``label`` column in vertex order, if the file has one.
    """

    source: str
    columns: dict[str, np.ndarray] = field(repr=False)
    labels: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for values in self.columns.values():
            values.flags.writeable = False

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    @property
    def names(self) -> tuple[str, ...]:
        """The numeric column names, in file order."""
        return tuple(self.columns)


def _read_rows(path: str | Path, what: str) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    """The header and the ``(line number, fields)`` of the non-blank rows of a CSV file."""
    name = f"{what} {str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{name} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{name} cannot be read: {e}") from None
    lines = text.splitlines()
    try:
        records = [(i, row) for i, row in enumerate(csv.reader(lines), start=1)]
    except csv.Error as e:
        raise InputError(f"{name}: not a valid CSV file ({e})") from None
    records = [(i, [f.strip() for f in row]) for i, row in records
               if row and any(f.strip() for f in row) and not row[0].lstrip().startswith("#")]
    if not records:
        raise InputError(f"{name} is empty: expected a header line, then one row per vertex")
    (_, header), rows = records[0], records[1:]
    seen: set[str] = set()
    for column, title in enumerate(header, start=1):
        if not title:
            raise InputError(f"{name} line {records[0][0]}, column {column}: empty column name")
        if title in seen:
            raise InputError(f"{name} line {records[0][0]}, column {column}: duplicate column "
                             f"{title!r}")
        seen.add(title)
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(f"{name} line {line}: {len(row)} fields, but the header has "
                             f"{len(header)} ({', '.join(header)})")
    return name, header, rows


def _vertex_order(name: str, header: list[str], rows, n: int,
                  graph_labels: Sequence[str] | None) -> list[int]:
    """The vertex of each row: by ``vertex`` column, by ``label`` column, or in order."""
    last = rows[-1][0] if rows else 1
    if "vertex" in header:
        column = header.index("vertex")
        order, first = [], {}
        for line, row in rows:
            text = row[column]
            where = f"{name} line {line}, column 'vertex'"
            if not re.fullmatch(r"[0-9]+", text):
                raise InputError(f"{where}: {text!r} is not a vertex index (an integer >= 0)")
            g = int(text)
            if g >= n:
                raise InputError(f"{where}: vertex {g} is out of range 0..{n - 1}")
            if g in first:
                raise InputError(f"{where}: vertex {g} appears again (first on line {first[g]})")
            first[g] = line
            order.append(g)
    elif "label" in header and graph_labels is not None:
        column = header.index("label")
        index = {label: g for g, label in enumerate(graph_labels)}
        order, first = [], {}
        for line, row in rows:
            text = row[column]
            where = f"{name} line {line}, column 'label'"
            if text not in index:
                raise InputError(f"{where}: {text!r} is not a vertex label of the graph")
            g = index[text]
            if g in first:
                raise InputError(f"{where}: label {text!r} appears again (first on line "
                                 f"{first[g]})")
            first[g] = line
            order.append(g)
    else:
        if len(rows) > n:
            raise InputError(f"{name} line {rows[n][0]}: an extra row: the graph has {n} "
                             f"vertices, and rows without a 'vertex' or 'label' column are in "
                             f"vertex order")
        if len(rows) < n:
            raise InputError(f"{name} line {last}: the file ends after {len(rows)} rows, but "
                             f"the graph has {n} vertices (a missing row for vertex "
                             f"{len(rows)})")
        return list(range(n))
    if len(order) < n:
        missing = sorted(set(range(n)) - set(order))[0]
        shown = f" ({graph_labels[missing]!r})" if graph_labels is not None else ""
        raise InputError(f"{name} line {last}: the file ends without a row for vertex "
                         f"{missing}{shown}: {len(order)} rows for {n} vertices")
    return order


def read_vertex_data(path: str | Path, n: int,
                     labels: Sequence[str] | None = None) -> VertexData:
    """Read ``[model] data``: a CSV with a header and one row per vertex.

    Args:
        path: The file.
        n: Number of vertices.
        labels: The graph's vertex labels (to match a ``label`` column), if any.

    Raises:
        InputError: A missing or unreadable file; a missing, extra or repeated row; a row of
            the wrong length; a value that is not a finite number; a column name that cannot
            be used in an expression. The message names the file, the line and the column.
    """
    name, header, rows = _read_rows(path, "model.data")
    order = _vertex_order(name, header, rows, n, labels)
    columns: dict[str, np.ndarray] = {}
    for column, title in enumerate(header):
        if title in ("vertex", "label"):
            continue
        if not _NAME.fullmatch(title) or title in _RESERVED:
            raise InputError(f"{name} line 1, column {column + 1}: the column name {title!r} "
                             f"cannot be used in expressions (a name of letters, digits and _, "
                             f"not one of {', '.join(_RESERVED)})")
        values = np.empty(n)
        for (line, row), g in zip(rows, order, strict=True):
            try:
                value = float(row[column])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise InputError(f"{name} line {line}, column {title!r}: {row[column]!r} is not "
                                 f"a finite number")
            values[g] = value
        columns[title] = values
    if not columns:
        raise InputError(f"{name} line 1: no numeric column (besides 'vertex' and 'label')")
    file_labels = None
    if "label" in header:
        column = header.index("label")
        by_vertex = [""] * n
        for (_, row), g in zip(rows, order, strict=True):
            by_vertex[g] = row[column]
        file_labels = tuple(by_vertex)
    return VertexData(str(path), columns, file_labels)


def read_labels(path: str | Path, n: int) -> tuple[str, ...]:
    """Vertex labels from a CSV file with a ``label`` column (and optionally ``vertex``).

    Raises:
        InputError: No ``label`` column, an empty label, or the row errors of
            :func:`read_vertex_data`.
    """
    name, header, rows = _read_rows(path, "graph.labels")
    if "label" not in header:
        raise InputError(f"{name} line 1: no 'label' column (columns: {', '.join(header)})")
    order = _vertex_order(name, header, rows, n, None)
    column = header.index("label")
    labels = [""] * n
    for (line, row), g in zip(rows, order, strict=True):
        if not row[column]:
            raise InputError(f"{name} line {line}, column 'label': empty label")
        labels[g] = row[column]
    return tuple(labels)
