"""Finite weighted undirected graphs: generators, edge lists, Laplacian and spectrum.

Pure NumPy and deterministic, so every MPI rank builds the same graph without talking.
"""

from __future__ import annotations

import difflib
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


def _is_int(value) -> bool:
    """An integer that is not a bool (``True`` would silently mean 1)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


@dataclass(frozen=True, eq=False, repr=False)
class Graph:
    """A finite, undirected, weighted graph ``G = (V, w)`` with ``w_gg = 0``.

    Two graphs are equal when their weight matrices are.

    Args:
        weights: ``(N, N)`` symmetric matrix of finite, non-negative weights with a zero
            diagonal. A read-only float64 copy is stored.

    Raises:
        InputError: The matrix is not square, finite, non-negative, symmetric, or has a
            non-zero diagonal entry.
    """

    weights: np.ndarray

    def __post_init__(self) -> None:
        try:
            w = np.array(self.weights, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as e:
            raise InputError(f"graph weights must be a numeric (N, N) matrix: {e}") from None
        if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
            raise InputError(f"graph weights must be a non-empty square matrix, "
                             f"got shape {w.shape}")
        w += 0.0  # -0.0 -> 0.0, so equal graphs hash equally
        for bad, why in ((~np.isfinite(w), "is not finite"), (w < 0, "is negative")):
            if bad.any():
                g, h = np.argwhere(bad)[0]
                raise InputError(f"graph weight w[{g}, {h}] = {w[g, h]} {why}")
        loops = np.nonzero(np.diag(w))[0]
        if loops.size:
            g = loops[0]
            raise InputError(f"graph weight w[{g}, {g}] = {w[g, g]}: self loops are not allowed")
        asym = np.argwhere(w != w.T)
        if asym.size:
            g, h = asym[0]
            raise InputError(f"graph weights must be symmetric (the graph is undirected): "
                             f"w[{g}, {h}] = {w[g, h]} but w[{h}, {g}] = {w[h, g]}")
        w.flags.writeable = False
        object.__setattr__(self, "weights", w)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return np.array_equal(self.weights, other.weights)

    def __hash__(self) -> int:
        return hash((self.weights.shape, self.weights.tobytes()))

    def __repr__(self) -> str:
        return f"Graph(n={self.n}, edges={len(self.edges)})"

    @property
    def n(self) -> int:
        """Number of vertices."""
        return self.weights.shape[0]

    @property
    def edges(self) -> list[tuple[int, int, float]]:
        """``(g, h, w)`` with ``g < h`` and ``w > 0``, sorted by ``(g, h)``."""
        g, h = np.nonzero(np.triu(self.weights, 1))  # row-major, hence sorted
        return [(int(a), int(b), float(self.weights[a, b])) for a, b in zip(g, h, strict=True)]

    def degrees(self) -> np.ndarray:
        """Weighted degrees ``W 1``."""
        return self.weights.sum(axis=1)

    @property
    def dense(self) -> bool:
        """At least N²/4 edges: a dense ``W @ X`` then costs no more than one update per edge."""
        return 4 * len(self.edges) >= self.n * self.n

    @property
    def max_degree(self) -> float:
        """The largest weighted degree."""
        return float(self.degrees().max())

    def laplacian(self) -> np.ndarray:
        """The graph Laplacian ``L = diag(W 1) − W`` (rows sum to zero)."""
        return np.diag(self.degrees()) - self.weights

    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of ``L``.

        Eigenvalues of magnitude below ``1e-12 · max(1, max degree)`` are set to 0 exactly,
        so the constant mode of each component is recognised as such.
        """
        values, vectors = np.linalg.eigh(self.laplacian())
        values[np.abs(values) < 1e-12 * max(1.0, self.max_degree)] = 0.0
        return values, vectors

    def neighbours(self, g: int) -> np.ndarray:
        """Vertices ``h`` with ``w_gh > 0``, ascending.

        Raises:
            InputError: ``g`` is not a vertex (negative indices do not wrap around).
        """
        if not _is_int(g) or not 0 <= g < self.n:
            raise InputError(f"vertex {g!r} is not in 0..{self.n - 1}")
        return np.nonzero(self.weights[g])[0]

    def components(self) -> list[np.ndarray]:
        """Connected components, each a sorted array of vertices, ordered by smallest vertex."""
        label = np.full(self.n, -1)
        comps = []
        for start in range(self.n):
            if label[start] >= 0:
                continue
            stack, members = [start], []
            label[start] = len(comps)
            while stack:
                g = stack.pop()
                members.append(g)
                for h in np.nonzero(self.weights[g])[0]:
                    if label[h] < 0:
                        label[h] = len(comps)
                        stack.append(int(h))
            comps.append(np.array(sorted(members)))
        return comps

    def is_connected(self) -> bool:
        """Whether every vertex can be reached from every other (true for ``n = 1``)."""
        return len(self.components()) == 1

    @classmethod
    def from_edges(cls, n: int, edges: Iterable[Sequence], *, source: str = "edges") -> Graph:
        """A graph on ``n`` vertices from ``(g, h, w)`` or ``(g, h)`` (w = 1) edges.

        Args:
            n: Number of vertices, an integer >= 1.
            edges: Edges in either orientation; an edge of weight 0 is allowed (and absent).
            source: Where the edges came from (a config key or a file), for messages.

        Raises:
            InputError: Bad indices (out of range, floats, bools), self loops, duplicates
                (in either orientation), non-finite or negative weights. The message names
                ``source`` and the edge's index in ``edges``.
        """
        if not _is_int(n) or n < 1:
            raise InputError(f"{source}: the number of vertices must be an integer >= 1, "
                             f"got {n!r}")
        if isinstance(edges, str | bytes) or not isinstance(edges, Iterable):
            raise InputError(f"{source} = {edges!r}: expected a list of [g, h, w] or [g, h] "
                             f"(a missing weight w means 1)")
        w = np.zeros((n, n))
        seen: set[tuple[int, int]] = set()
        for k, edge in enumerate(edges):
            if isinstance(edge, np.ndarray):
                edge = edge.tolist()
            if isinstance(edge, str | bytes) or not isinstance(edge, Sequence) \
                    or len(edge) not in (2, 3):
                raise InputError(f"{source}[{k}] = {edge!r}: expected [g, h, w] or [g, h] "
                                 f"(a missing weight w means 1)")
            where = f"{source}[{k}] = {list(edge)!r}"
            g, h = edge[0], edge[1]
            weight = edge[2] if len(edge) == 3 else 1.0
            for name, v in (("g", g), ("h", h)):
                if not _is_int(v):
                    raise InputError(f"{where}: vertex {name} = {v!r} is not an integer")
                if not 0 <= v < n:
                    raise InputError(f"{where}: vertex {v} is out of range 0..{n - 1}")
            g, h = int(g), int(h)
            if g == h:
                raise InputError(f"{where}: self loop at vertex {g}")
            if not _is_real(weight):
                raise InputError(f"{where}: weight {weight!r} is not a number")
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise InputError(f"{where}: weight must be finite and >= 0, got {weight}")
            pair = (min(g, h), max(g, h))
            if pair in seen:
                raise InputError(f"{where}: duplicate edge {pair[0]}-{pair[1]}")
            seen.add(pair)
            w[g, h] = w[h, g] = weight
        return cls(w)


def _check_weight(weight) -> float:
    if not _is_real(weight):
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
    """The path 0 — 1 — ... — n−1 (``n >= 1``)."""
    n, weight = _check_n(n), _check_weight(weight)
    return Graph.from_edges(n, [(g, g + 1, weight) for g in range(n - 1)])


def cycle(n: int, weight: float = 1.0) -> Graph:
    """A ring of ``n >= 3`` vertices."""
    n, weight = _check_n(n, 3), _check_weight(weight)
    return Graph.from_edges(n, [(g, (g + 1) % n, weight) for g in range(n)])


def complete(n: int, weight: float = 1.0) -> Graph:
    """Every pair of the ``n >= 1`` vertices joined."""
    n, weight = _check_n(n), _check_weight(weight)
    return Graph.from_edges(n, [(g, h, weight) for g in range(n) for h in range(g + 1, n)])


def star(n: int, weight: float = 1.0) -> Graph:
    """Vertex 0 (the hub) joined to each of the ``n − 1`` others."""
    n, weight = _check_n(n), _check_weight(weight)
    return Graph.from_edges(n, [(0, h, weight) for h in range(1, n)])


def hypercube(dim: int, weight: float = 1.0) -> Graph:
    """``2**dim`` vertices (``dim >= 1``), edges between indices that differ in one bit."""
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
    """Erdős–Rényi G(n, p) with weights ``weight · U(0.5, 1.5)``, always connected.

    Deterministic for a seed (``np.random.default_rng(seed)``), hence the same on every MPI
    rank. If the draw is disconnected, its components (ordered by smallest vertex) are
    chained: one extra edge joins the smallest vertex of each component to that of the next,
    with a weight drawn from the same distribution. That is the fewest edges that connect it,
    so for ``p = 0`` the result is a path.

    Raises:
        InputError: ``n < 1``, ``p`` not in [0, 1], a negative or non-integer seed, or a
            weight that is not finite and > 0.
    """
    n, weight = _check_n(n), _check_weight(weight)
    if not _is_real(p) or not 0 <= p <= 1:
        raise InputError(f"graph.p = {p!r}: must be a probability in [0, 1]")
    if not _is_int(seed) or seed < 0:
        raise InputError(f"graph.seed = {seed!r}: expected an integer >= 0")
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < p, 1)
    values = weight * rng.uniform(0.5, 1.5, size=(n, n))
    w = np.where(upper, values, 0.0)
    w = w + w.T
    comps = Graph(w).components()
    for a, b in zip(comps[:-1], comps[1:], strict=True):
        w[a[0], b[0]] = w[b[0], a[0]] = weight * rng.uniform(0.5, 1.5)
    return Graph(w)


_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_DECLARED_N = re.compile(r"#\s*n\s*=\s*(\S+)\s*")
_INDEX = re.compile(r"[0-9]+")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_edge_file(path: str | Path) -> tuple[int, list[tuple[int, int, float]]]:
    """Read an edge list: one ``g,h,w`` (or ``g,h``, meaning w = 1) per line.

    Fields are separated by commas and/or whitespace. Blank lines and lines starting with
    ``#`` are skipped; a ``# n = 7`` comment declares the number of vertices (to add
    isolated ones); a first line of non-numbers (a header such as ``g,h,w``) is skipped.

    Args:
        path: The file.

    Returns:
        The number of vertices (the declared one, else the largest index + 1) and the edges
        ``(g, h, w)`` in file order.

    Raises:
        InputError: A missing or unreadable file, a malformed line (the message gives the
            path, the line number and the line), a self loop, a duplicate edge, a negative or
            non-finite weight, a declared ``n`` too small for the indices, or no edges.
    """
    name = f"graph.file {str(path)!r}"
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{name} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{name} cannot be read: {e}") from None
    declared: int | None = None
    edges: list[tuple[int, int, float]] = []
    seen: dict[tuple[int, int], int] = {}
    first = True
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{name} line {number}: {line!r}"
        if not line:
            continue
        if line.startswith("#"):
            m = _DECLARED_N.fullmatch(line)
            if m:
                if not _INDEX.fullmatch(m.group(1)) or int(m.group(1)) < 1:
                    raise InputError(f"{where}: n must be an integer >= 1")
                if declared is not None and declared != int(m.group(1)):
                    raise InputError(f"{where}: n was already declared as {declared}")
                declared = int(m.group(1))
            continue
        fields = _SEPARATOR.split(line)
        if first and not any(_number(f) for f in fields):
            first = False
            continue  # a header line
        first = False
        if len(fields) not in (2, 3) or not all(fields):
            raise InputError(f"{where}: expected 'g,h,w' or 'g,h' (a missing weight w means 1)")
        if not (_INDEX.fullmatch(fields[0]) and _INDEX.fullmatch(fields[1])):
            raise InputError(f"{where}: vertex indices must be integers >= 0")
        g, h = int(fields[0]), int(fields[1])
        try:
            w = float(fields[2]) if len(fields) == 3 else 1.0
        except ValueError:
            raise InputError(f"{where}: the weight {fields[2]!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise InputError(f"{where}: the weight must be finite and >= 0")
        if g == h:
            raise InputError(f"{where}: self loop at vertex {g}")
        pair = (min(g, h), max(g, h))
        if pair in seen:
            raise InputError(f"{where}: duplicate edge {pair[0]}-{pair[1]} "
                             f"(first on line {seen[pair]})")
        seen[pair] = number
        edges.append((g, h, w))
    if not edges:
        raise InputError(f"{name} holds no edges")
    n = max(max(g, h) for g, h, _ in edges) + 1
    if declared is not None:
        if declared < n:
            raise InputError(f"{name}: '# n = {declared}' but vertex {n - 1} appears")
        n = declared
    return n, edges


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

    Args:
        kind: One of :data:`GRAPH_KINDS`.
        n: Number of vertices: required for path, cycle, complete, star and random; for
            hypercube and grid, if given, it must agree; for edges the default is the largest
            index + 1; for file it may add isolated vertices.
        dim: Hypercube dimension (``n = 2**dim``).
        shape: ``[rows, cols]`` of a grid (else ``n`` must be a perfect square).
        weight: Edge weight of generated graphs (scale of the random weights).
        p: Edge probability of a random graph.
        edges: ``[[g, h, w], ...]`` or ``[[g, h], ...]`` for kind "edges".
        file: Edge-list file for kind "file" (see :func:`read_edge_file`).
        seed: Seed of a random graph.

    Raises:
        InputError: An unknown kind, missing or inconsistent keys, or an invalid graph; the
            message names the config key (``graph.n``, ...).
    """
    if not isinstance(kind, str) or kind not in GRAPH_KINDS:
        close = difflib.get_close_matches(str(kind), GRAPH_KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(f"graph.kind = {kind!r}: must be one of {', '.join(GRAPH_KINDS)}{hint}")

    def need(value, key: str):
        if value is None:
            raise InputError(f"graph.kind = {kind!r} needs graph.{key}")
        return value

    if n is not None:
        n = _check_n(n)
    if kind in ("path", "cycle", "complete", "star"):
        generator = {"path": path, "cycle": cycle, "complete": complete, "star": star}[kind]
        return generator(need(n, "n"), weight)
    if kind == "hypercube":
        dim = _check_n(need(dim, "dim"), 1, "graph.dim")
        if n is not None and n != 2**dim:
            raise InputError(f"graph.n = {n} does not match graph.dim = {dim} "
                             f"(2**dim = {2**dim})")
        return hypercube(dim, weight)
    if kind == "grid":
        if shape is None:
            if n is None:
                raise InputError("graph.kind = 'grid' needs graph.shape = [rows, cols]")
            root = math.isqrt(n)
            if root * root != n:
                raise InputError(f"graph.kind = 'grid' needs graph.shape = [rows, cols] "
                                 f"(graph.n = {n} is not a perfect square)")
            shape = (root, root)
        if isinstance(shape, str | bytes) or not isinstance(shape, Sequence) or len(shape) != 2:
            raise InputError(f"graph.shape = {shape!r}: expected [rows, cols]")
        rows = _check_n(shape[0], 1, "graph.shape[0]")
        cols = _check_n(shape[1], 1, "graph.shape[1]")
        if n is not None and n != rows * cols:
            raise InputError(f"graph.n = {n} does not match graph.shape = {[rows, cols]} "
                             f"({rows * cols} vertices)")
        return grid(rows, cols, weight)
    if kind == "random":
        return random(need(n, "n"), p, seed, weight)
    if kind == "edges":
        edges = need(edges, "edges")
        if isinstance(edges, np.ndarray):
            edges = edges.tolist()
        if not isinstance(edges, list | tuple):
            raise InputError(f"graph.edges = {edges!r}: expected a list of [g, h, w] or [g, h] "
                             f"(a missing weight w means 1)")
        if n is None:
            if not edges:
                raise InputError("graph.edges = []: no edges, and graph.n is not given")
            # Only well-formed indices count; from_edges reports the others with context.
            idx = [v for e in edges if isinstance(e, list | tuple) for v in e[:2] if _is_int(v)]
            n = max(max(idx) + 1, 1) if idx else 1
        return Graph.from_edges(n, edges, source="graph.edges")
    # kind == "file"
    file = need(file, "file")
    if not isinstance(file, str | Path):
        raise InputError(f"graph.file = {file!r}: expected a path")
    declared, file_edges = read_edge_file(file)
    if n is not None:
        if n < declared:
            raise InputError(f"graph.n = {n} is smaller than the {declared} vertices of "
                             f"graph.file {str(file)!r}")
        declared = n
    return Graph.from_edges(declared, file_edges, source=f"graph.file {str(file)!r}")
