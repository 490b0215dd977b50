"""Finite weighted undirected graphs: generators, edge lists, Laplacian and spectrum.

Pure NumPy and deterministic, so every MPI rank builds the same graph without talking.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rdgraph.errors import InputError

__all__ = [
    "GRAPH_KINDS",
    "Graph",
    "build_graph",
    "complete",
    "cycle",
    "grid",
    "hypercube",
    "path",
    "random",
    "read_edge_file",
    "star",
]

GRAPH_KINDS = ("path", "cycle", "complete", "star", "hypercube", "grid", "random", "edges", "file")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Graph:
    """A finite, undirected, weighted graph ``G = (V, w)`` with ``w_gg = 0``.

    Args:
        weights: ``(N, N)`` symmetric matrix of finite, non-negative weights.
    """

    weights: np.ndarray

    def __post_init__(self):
        w = np.array(self.weights, dtype=np.float64, copy=True)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
            raise InputError(f"graph weights must be a non-empty square matrix, got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise InputError("graph weights must be finite")
        if np.any(w < 0):
            raise InputError("graph weights must be >= 0")
        if np.any(np.diag(w) != 0):
            raise InputError("graph has a self loop (non-zero diagonal weight)")
        if not np.array_equal(w, w.T):
            raise InputError("graph weights must be symmetric (the graph is undirected)")
        w.flags.writeable = False
        object.__setattr__(self, "weights", w)

    @property
    def n(self) -> int:
        """Number of vertices."""
        return self.weights.shape[0]

    @property
    def edges(self) -> list[tuple[int, int, float]]:
        """``(g, h, w)`` with ``g < h`` and ``w > 0``, sorted."""
        g, h = np.nonzero(np.triu(self.weights, 1))
        return [(int(a), int(b), float(self.weights[a, b])) for a, b in zip(g, h)]

    def degrees(self) -> np.ndarray:
        """Weighted degrees ``W 1``."""
        return self.weights.sum(axis=1)

    @property
    def max_degree(self) -> float:
        return float(self.degrees().max())

    def laplacian(self) -> np.ndarray:
        """``L = diag(W 1) − W``."""
        return np.diag(self.degrees()) - self.weights

    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of ``L``.

        Eigenvalues below round-off (``1e-12 · max(1, max degree)``) are set to 0 exactly,
        so the constant mode of each component is recognised as such.
        """
        values, vectors = np.linalg.eigh(self.laplacian())
        values[np.abs(values) < 1e-12 * max(1.0, self.max_degree)] = 0.0
        return values, vectors

    def neighbours(self, g: int) -> np.ndarray:
        """Vertices ``h`` with ``w_gh > 0``."""
        return np.nonzero(self.weights[g])[0]

    def components(self) -> list[np.ndarray]:
        """Connected components, each a sorted array of vertices."""
        label = -np.ones(self.n, dtype=int)
        comps = []
        for start in range(self.n):
            if label[start] >= 0:
                continue
            stack, members = [start], []
            label[start] = len(comps)
            while stack:
                g = stack.pop()
                members.append(g)
                for h in self.neighbours(g):
                    if label[h] < 0:
                        label[h] = len(comps)
                        stack.append(int(h))
            comps.append(np.array(sorted(members)))
        return comps

    def is_connected(self) -> bool:
        return len(self.components()) == 1

    @classmethod
    def from_edges(cls, n: int, edges: Iterable[Sequence], *, source: str = "edges") -> Graph:
        """A graph on ``n`` vertices from ``(g, h, w)`` or ``(g, h)`` (w = 1) edges.

        Raises:
            InputError: Bad indices, self loops, duplicates, non-finite or negative weights.
        """
        if not _is_int(n) or n < 1:
            raise InputError(f"{source}: the number of vertices must be an integer >= 1, got {n!r}")
        w = np.zeros((n, n))
        seen: set[tuple[int, int]] = set()
        for k, edge in enumerate(edges):
            if isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) \
                    or len(edge) not in (2, 3):
                raise InputError(f"{source}[{k}] = {edge!r}: expected [g, h, w] or [g, h]")
            g, h = edge[0], edge[1]
            weight = edge[2] if len(edge) == 3 else 1.0
            for name, v in (("g", g), ("h", h)):
                if not _is_int(v):
                    raise InputError(f"{source}[{k}] = {list(edge)!r}: vertex {name} = {v!r} "
                                     "is not an integer")
                if not 0 <= v < n:
                    raise InputError(f"{source}[{k}] = {list(edge)!r}: vertex {v} is out of "
                                     f"range 0..{n - 1}")
            if g == h:
                raise InputError(f"{source}[{k}] = {list(edge)!r}: self loop at vertex {g}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
                raise InputError(f"{source}[{k}] = {list(edge)!r}: weight {weight!r} is not a "
                                 "number")
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise InputError(f"{source}[{k}] = {list(edge)!r}: weight must be finite and "
                                 f">= 0, got {weight}")
            pair = (min(g, h), max(g, h))
            if pair in seen:
                raise InputError(f"{source}[{k}] = {list(edge)!r}: duplicate edge {g}-{h}")
            seen.add(pair)
            w[g, h] = w[h, g] = weight
        return cls(w)


def _check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
        raise InputError(f"graph.weight = {weight!r}: expected a number")
    if not math.isfinite(weight) or weight <= 0:
        raise InputError(f"graph.weight = {weight!r}: must be finite and > 0")
    return float(weight)


def _check_n(n, low: int = 1, key: str = "graph.n") -> int:
    if not _is_int(n):
        raise InputError(f"{key} = {n!r}: expected an integer")
    if n < low:
        raise InputError(f"{key} = {n}: must be >= {low}")
    return int(n)


def path(n: int, weight: float = 1.0) -> Graph:
    """0 — 1 — ... — n−1."""
    n, weight = _check_n(n), _check_weight(weight)
    return Graph.from_edges(n, [(g, g + 1, weight) for g in range(n - 1)])


def cycle(n: int, weight: float = 1.0) -> Graph:
    """A ring of ``n >= 3`` vertices."""
    n, weight = _check_n(n, 3), _check_weight(weight)
    return Graph.from_edges(n, [(g, (g + 1) % n, weight) for g in range(n)])


def complete(n: int, weight: float = 1.0) -> Graph:
    n, weight = _check_n(n), _check_weight(weight)
    return Graph.from_edges(n, [(g, h, weight) for g in range(n) for h in range(g + 1, n)])


def star(n: int, weight: float = 1.0) -> Graph:
    """Vertex 0 is the hub."""
    n, weight = _check_n(n), _check_weight(weight)
    return Graph.from_edges(n, [(0, h, weight) for h in range(1, n)])


def hypercube(dim: int, weight: float = 1.0) -> Graph:
    """``2**dim`` vertices, edges between indices that differ in one bit."""
    dim, weight = _check_n(dim, 1, "graph.dim"), _check_weight(weight)
    n = 2**dim
    return Graph.from_edges(
        n, [(g, g ^ (1 << b), weight) for g in range(n) for b in range(dim) if g < g ^ (1 << b)]
    )


def grid(rows: int, cols: int, weight: float = 1.0) -> Graph:
    """A ``rows × cols`` 4-neighbour grid; vertex ``r*cols + c``."""
    rows, cols = _check_n(rows, 1, "graph.shape[0]"), _check_n(cols, 1, "graph.shape[1]")
    weight = _check_weight(weight)
    edges = []
    for r in range(rows):
        for c in range(cols):
            g = r * cols + c
            if c + 1 < cols:
                edges.append((g, g + 1, weight))
            if r + 1 < rows:
                edges.append((g, g + cols, weight))
    return Graph.from_edges(rows * cols, edges)


def random(n: int, p: float = 0.5, seed: int = 0, weight: float = 1.0) -> Graph:
    """Erdős–Rényi G(n, p) with weights ``weight · U(0.5, 1.5)``, made connected.

    Deterministic for a seed. If the draw is disconnected, one edge joins each component
    to the next (between their smallest vertices), the fewest edges that connect it.
    """
    n, weight = _check_n(n), _check_weight(weight)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise InputError(f"graph.p = {p!r}: must be a probability in [0, 1]")
    if not _is_int(seed) or seed < 0:
        raise InputError(f"graph.seed = {seed!r}: expected an integer >= 0")
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < p, 1)
    values = weight * rng.uniform(0.5, 1.5, size=(n, n))
    w = np.where(upper, values, 0.0)
    w = w + w.T
    graph = Graph(w)
    comps = graph.components()
    if len(comps) > 1:
        for a, b in zip(comps[:-1], comps[1:]):
            extra = weight * rng.uniform(0.5, 1.5)
            w[a[0], b[0]] = w[b[0], a[0]] = extra
        graph = Graph(w)
    return graph


_SEPARATOR = re.compile(r"[,\s]+")


def read_edge_file(path: str | Path) -> tuple[int, list[tuple[int, int, float]]]:
    """Read an edge list: one ``g,h,w`` (or ``g,h``) per line; ``#`` comments.

    A ``# n = 7`` comment declares the number of vertices (isolated ones included); a first
    line of non-numbers (a header such as ``g,h,w``) is skipped.

    Returns:
        The number of vertices and the edges.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"graph.file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"graph.file {str(path)!r} cannot be read: {e}") from None
    declared, edges, first = None, [], True
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.fullmatch(r"#\s*n\s*=\s*(\d+)\s*", line)
            if m:
                declared = int(m.group(1))
            continue
        fields = [f for f in _SEPARATOR.split(line) if f]
        if first and fields and not any(_number(f) for f in fields):
            first = False
            continue  # a header line
        first = False
        where = f"graph.file {str(path)!r} line {number}: {raw.strip()!r}"
        if len(fields) not in (2, 3):
            raise InputError(f"{where}: expected 'g,h,w' or 'g,h'")
        try:
            g, h = int(fields[0]), int(fields[1])
        except ValueError:
            raise InputError(f"{where}: vertex indices must be integers") from None
        try:
            w = float(fields[2]) if len(fields) == 3 else 1.0
        except ValueError:
            raise InputError(f"{where}: the weight is not a number") from None
        if g < 0 or h < 0:
            raise InputError(f"{where}: vertex indices must be >= 0")
        edges.append((g, h, w))
    if not edges:
        raise InputError(f"graph.file {str(path)!r} holds no edges")
    n = max(max(g, h) for g, h, _ in edges) + 1
    if declared is not None:
        if declared < n:
            raise InputError(f"graph.file {str(path)!r}: '# n = {declared}' but vertex {n - 1} "
                             "appears")
        n = declared
    return n, edges


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def build_graph(
    kind: str,
    *,
    n: int | None = None,
    dim: int | None = None,
    shape: Sequence[int] | None = None,
    weight: float = 1.0,
    p: float = 0.5,
    edges: Sequence | None = None,
    file: str | Path | None = None,
    seed: int = 0,
) -> Graph:
    """The graph of a ``[graph]`` config section.

    Raises:
        InputError: An unknown kind, missing or inconsistent keys, or an invalid graph.
    """
    def need(value, key):
        if value is None:
            raise InputError(f"graph.kind = {kind!r} needs graph.{key}")
        return value

    if kind in ("path", "cycle", "complete", "star"):
        return {"path": path, "cycle": cycle, "complete": complete, "star": star}[kind](
            need(n, "n"), weight)
    if kind == "hypercube":
        g = hypercube(need(dim, "dim"), weight)
        if n is not None and n != g.n:
            raise InputError(f"graph.n = {n} does not match graph.dim = {dim} (2**dim = {g.n})")
        return g
    if kind == "grid":
        if shape is None:
            root = math.isqrt(need(n, "shape")) if _is_int(n) and n > 0 else -1
            if root * root != n:
                raise InputError(f"graph.kind = 'grid' needs graph.shape = [rows, cols] "
                                 f"(graph.n = {n!r} is not a perfect square)")
            shape = (root, root)
        if len(shape) != 2:
            raise InputError(f"graph.shape = {list(shape)!r}: expected [rows, cols]")
        g = grid(shape[0], shape[1], weight)
        if n is not None and n != g.n:
            raise InputError(f"graph.n = {n} does not match graph.shape = {list(shape)}")
        return g
    if kind == "random":
        return random(need(n, "n"), p, seed, weight)
    if kind == "edges":
        edges = need(edges, "edges")
        if not isinstance(edges, (list, tuple)):
            raise InputError(f"graph.edges = {edges!r}: expected a list of [g, h, w]")
        if n is None:
            if not edges:
                raise InputError("graph.edges is empty and graph.n is not given")
            idx = [v for e in edges if isinstance(e, (list, tuple)) for v in e[:2] if _is_int(v)]
            n = max(idx) + 1 if idx else 1
        return Graph.from_edges(_check_n(n), edges, source="graph.edges")
    if kind == "file":
        declared, file_edges = read_edge_file(need(file, "file"))
        if n is not None:
            n = _check_n(n)
            if n < declared:
                raise InputError(f"graph.n = {n} is smaller than the file's {declared} vertices")
            declared = n
        return Graph.from_edges(declared, file_edges, source=f"graph.file {str(file)!r}")
    import difflib

    close = difflib.get_close_matches(str(kind), GRAPH_KINDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise InputError(f"graph.kind = {kind!r}: must be one of {', '.join(GRAPH_KINDS)}{hint}")
