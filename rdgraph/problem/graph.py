"""Finite weighted undirected graphs: generators, edge lists, Laplacian and spectrum.

Pure NumPy and deterministic, so every MPI rank builds the same graph without talking.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.sparse import linalg as splinalg

from rdgraph.errors import InputError

__all__ = [
    "DENSE_LIMIT",
    "FACTOR_KINDS",
    "GRAPH_KINDS",
    "Graph",
    "ProductSpectrum",
    "build_graph",
    "complete",
    "cycle",
    "grid",
    "hamming",
    "hypercube",
    "path",
    "product",
    "random",
    "read_edge_file",
    "star",
]

GRAPH_KINDS = ("path", "cycle", "complete", "star", "hypercube", "grid", "random", "edges", "file",
               "hamming", "product")
#: Kinds a product's factor may have (not a product itself, not a file).
FACTOR_KINDS = ("path", "cycle", "complete", "star", "hypercube", "grid", "random", "edges",
                "hamming")


def _is_int(value) -> bool:
    """An integer that is not a bool (``True`` would silently mean 1)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


#: The largest number of vertices for which a dense ``(N, N)`` view (``Graph.weights``,
#: ``laplacian()``, ``spectrum()``) is formed: 4096² float64 is 128 MiB. Beyond it only the
#: sparse matrix, the edge arrays and (for products) the factor spectra exist.
DENSE_LIMIT = 4096
#: The most vertices a generated graph may have (labels and index arrays stay in memory).
MAX_VERTICES = 10**7


def _too_large(n: int, what: str) -> ValueError:
    return ValueError(f"{what} of a graph of {n} vertices is not formed (more than "
                      f"{DENSE_LIMIT}): use the sparse matrix (Graph.matrix), the edge arrays "
                      f"or, for product graphs, Graph.product_spectrum()")


class Graph:
    """A finite, undirected, weighted graph ``G = (V, w)`` with ``w_gg = 0``, stored sparse.

    Memory is O(N + E): the weights are a CSR matrix (:attr:`matrix`); a dense view
    (:attr:`weights`) is formed only on demand and only up to :data:`DENSE_LIMIT` vertices.
    Two graphs are equal when their weight matrices are (labels aside).

    Args:
        weights: ``(N, N)`` symmetric matrix (dense array or SciPy sparse) of finite,
            non-negative weights with a zero diagonal. A float64 copy is stored.
        labels: Optional vertex names, one string per vertex (e.g. architecture names).
        factors: For a Cartesian product, its factor graphs, first factor most significant
            (vertex ``g = ravel_multi_index(a, sizes)``); gives :meth:`product_spectrum`.

    Raises:
        InputError: The matrix is not square, finite, non-negative, symmetric, or has a
            non-zero diagonal entry; labels of the wrong number.
    """

    def __init__(self, weights, *, labels: Sequence[str] | None = None,
                 factors: Sequence[Graph] | None = None):
        if sparse.issparse(weights):
            w = sparse.csr_array(weights, dtype=np.float64, copy=True)
            if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
                raise InputError(f"graph weights must be a non-empty square matrix, "
                                 f"got shape {w.shape}")
            w.sum_duplicates()
            coo = w.tocoo()
            rows, cols, vals = coo.row, coo.col, coo.data
        else:
            try:
                dense = np.array(weights, dtype=np.float64, copy=True)
            except (TypeError, ValueError) as e:
                raise InputError(f"graph weights must be a numeric (N, N) matrix: {e}") from None
            if dense.ndim != 2 or dense.shape[0] != dense.shape[1] or dense.shape[0] < 1:
                raise InputError(f"graph weights must be a non-empty square matrix, "
                                 f"got shape {dense.shape}")
            rows, cols = np.nonzero(dense)
            vals = dense[rows, cols]
            bad = ~np.isfinite(dense)  # NaN is "non-zero" but check the whole matrix anyway
            if bad.any():
                g, h = np.argwhere(bad)[0]
                raise InputError(f"graph weight w[{g}, {h}] = {dense[g, h]} is not finite")
            w = None
            n = dense.shape[0]
        n = weights.shape[0] if w is not None else n
        for bad, why in ((~np.isfinite(vals), "is not finite"), (vals < 0, "is negative")):
            if bad.any():
                k = np.flatnonzero(bad)[0]
                raise InputError(f"graph weight w[{rows[k]}, {cols[k]}] = {vals[k]} {why}")
        loops = np.flatnonzero((rows == cols) & (vals != 0))
        if loops.size:
            g = rows[loops[0]]
            raise InputError(f"graph weight w[{g}, {g}] = {vals[loops[0]]}: self loops are not "
                             f"allowed")
        keep = vals != 0  # -0.0 and explicit zeros go: equal graphs have equal CSR arrays
        w = sparse.csr_array((vals[keep] + 0.0, (rows[keep], cols[keep])), shape=(n, n))
        w.sum_duplicates()
        w.sort_indices()
        asym = (w != w.T).tocoo()
        if asym.nnz:
            order = np.lexsort((asym.col, asym.row))
            g, h = int(asym.row[order[0]]), int(asym.col[order[0]])
            raise InputError(f"graph weights must be symmetric (the graph is undirected): "
                             f"w[{g}, {h}] = {w[g, h]} but w[{h}, {g}] = {w[h, g]}")
        for array in (w.data, w.indices, w.indptr):
            array.flags.writeable = False
        self._matrix = w
        self._labels = _check_labels(labels, n)
        self._factors = tuple(factors) if factors else None
        if self._factors is not None and math.prod(f.n for f in self._factors) != n:
            raise ValueError("the factors' sizes do not multiply to the number of vertices")
        self._cache: dict = {}

    @classmethod
    def _trusted(cls, n: int, g: np.ndarray, h: np.ndarray, w: np.ndarray, **kwargs) -> Graph:
        """A graph from edge arrays already known valid (generators): no Python loop."""
        rows = np.concatenate([g, h])
        cols = np.concatenate([h, g])
        vals = np.concatenate([w, w]).astype(np.float64)
        return cls(sparse.csr_array((vals, (rows, cols)), shape=(n, n)), **kwargs)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        a, b = self._matrix, other._matrix
        return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
                and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))

    def __hash__(self) -> int:
        m = self._matrix
        # Index arrays may be int32 or int64 (SciPy picks): hash a fixed width.
        return hash((m.shape, m.indptr.astype(np.int64).tobytes(),
                     m.indices.astype(np.int64).tobytes(), m.data.tobytes()))

    def __repr__(self) -> str:
        return f"Graph(n={self.n}, edges={self.num_edges})"

    @property
    def n(self) -> int:
        """Number of vertices."""
        return self._matrix.shape[0]

    @property
    def matrix(self) -> sparse.csr_array:
        """The weights ``W`` as a read-only CSR matrix (sorted indices, no explicit zeros)."""
        return self._matrix

    @property
    def weights(self) -> np.ndarray:
        """The dense ``(N, N)`` weight matrix, read-only; only for ``N <= DENSE_LIMIT``.

        Raises:
            ValueError: The graph has more than :data:`DENSE_LIMIT` vertices.
        """
        if "weights" not in self._cache:
            if self.n > DENSE_LIMIT:
                raise _too_large(self.n, "the dense weight matrix")
            dense = self._matrix.toarray()
            dense.flags.writeable = False
            self._cache["weights"] = dense
        return self._cache["weights"]

    @property
    def labels(self) -> tuple[str, ...] | None:
        """Vertex names (one per vertex), or ``None`` when the graph has none."""
        return self._labels

    def with_labels(self, labels: Sequence[str] | None) -> Graph:
        """The same graph with other vertex names (``None``: none)."""
        return Graph(self._matrix, labels=labels, factors=self._factors)

    def label(self, g: int) -> str:
        """The name of vertex ``g``: its label, else its index."""
        return self._labels[g] if self._labels is not None else str(g)

    @property
    def factors(self) -> tuple[Graph, ...] | None:
        """The factors of a Cartesian product graph (first most significant), else ``None``."""
        return self._factors

    @property
    def num_edges(self) -> int:
        """Number of edges (pairs ``g < h`` with ``w_gh > 0``)."""
        return self._matrix.nnz // 2

    def edge_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(g, h, w)`` arrays of the edges with ``g < h``, sorted by ``(g, h)``."""
        if "edge_arrays" not in self._cache:
            m = self._matrix
            rows = np.repeat(np.arange(self.n), np.diff(m.indptr))
            upper = m.indices > rows  # CSR rows in order, sorted columns: (g, h) sorted
            self._cache["edge_arrays"] = (rows[upper], m.indices[upper].astype(np.int64),
                                          m.data[upper].copy())
        return self._cache["edge_arrays"]

    @property
    def edges(self) -> list[tuple[int, int, float]]:
        """``(g, h, w)`` with ``g < h`` and ``w > 0``, sorted by ``(g, h)`` (O(E) tuples)."""
        g, h, w = self.edge_arrays()
        return list(zip(g.tolist(), h.tolist(), w.tolist(), strict=True))

    def degrees(self) -> np.ndarray:
        """Weighted degrees ``W 1``."""
        return np.asarray(self._matrix.sum(axis=1)).ravel()

    @property
    def dense(self) -> bool:
        """At least N²/4 edges (and a dense view allowed): a dense ``W @ X`` then costs no more
        than one update per edge."""
        return self.n <= DENSE_LIMIT and 4 * self.num_edges >= self.n * self.n

    @property
    def max_degree(self) -> float:
        """The largest weighted degree."""
        return float(self.degrees().max())

    def laplacian(self, *, sparse_format: bool = False):
        """The graph Laplacian ``L = diag(W 1) − W`` (rows sum to zero).

        Args:
            sparse_format: Return a CSR matrix (any N) instead of a dense array
                (``N <= DENSE_LIMIT`` only).
        """
        L = sparse.diags_array(self.degrees()).tocsr() - self._matrix
        if sparse_format:
            return L
        if self.n > DENSE_LIMIT:
            raise _too_large(self.n, "the dense Laplacian")
        return L.toarray()

    def _zero_tolerance(self) -> float:
        return 1e-12 * max(1.0, self.max_degree)

    def product_spectrum(self) -> ProductSpectrum | None:
        """The spectrum of a product graph from its factors' (``None`` for other graphs)."""
        if self._factors is None:
            return None
        if "product" not in self._cache:
            self._cache["product"] = ProductSpectrum(
                [f.spectrum() for f in self._factors], self._zero_tolerance())
        return self._cache["product"]

    def eigenvalues(self) -> np.ndarray:
        """All eigenvalues of ``L``, ascending; small values set to 0 as in :meth:`spectrum`.

        Product graphs: sums of the factors' eigenvalues (O(N log N), any N). Other graphs:
        a dense eigendecomposition, so only up to :data:`DENSE_LIMIT` vertices.
        """
        product = self.product_spectrum()
        if product is not None:
            return np.sort(product.values)
        if self.n > DENSE_LIMIT:
            raise _too_large(self.n, "the full spectrum")
        values = np.linalg.eigvalsh(self.laplacian())
        values[np.abs(values) < self._zero_tolerance()] = 0.0
        return values

    def fiedler_value(self) -> float:
        """The second smallest eigenvalue of ``L`` (0 for a disconnected graph or ``N = 1``).

        Product graphs and small graphs: from :meth:`eigenvalues`. Large sparse graphs: a
        sparse eigensolver (LOBPCG on the complement of the constant vector), O(N + E) memory.
        """
        if self.n == 1:
            return 0.0
        if self._factors is not None or self.n <= DENSE_LIMIT:
            return float(self.eigenvalues()[1])
        if len(self.components()) > 1:
            return 0.0
        L = self.laplacian(sparse_format=True)
        rng = np.random.default_rng(0)  # the same start on every rank
        X = rng.standard_normal((self.n, 1))
        ones = np.ones((self.n, 1)) / math.sqrt(self.n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-convergence is checked below
            values, vectors = splinalg.lobpcg(L, X, Y=ones, tol=1e-9, maxiter=500,
                                              largest=False)
        value, v = float(values[0]), vectors[:, 0]
        if np.linalg.norm(L @ v - value * v) > 1e-6 * max(1.0, self.max_degree):
            # A small gap (long paths and cycles): shift-invert, whose factorization is cheap
            # on exactly such graphs (small bandwidth).
            shift = 1e-3 * max(value, 1e-12)
            values = splinalg.eigsh(L, k=2, sigma=-shift, which="LM",
                                    return_eigenvectors=False)
            value = float(np.sort(values)[1])
        return 0.0 if abs(value) < self._zero_tolerance() else value

    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of ``L``.

        Eigenvalues of magnitude below ``1e-12 · max(1, max degree)`` are set to 0 exactly,
        so the constant mode of each component is recognised as such. Dense, hence only for
        ``N <= DENSE_LIMIT``; a product graph's comes from its factors' (Kronecker products),
        never from an eigendecomposition of the whole graph.

        Raises:
            ValueError: More than :data:`DENSE_LIMIT` vertices.
        """
        if "spectrum" not in self._cache:
            if self.n > DENSE_LIMIT:
                raise _too_large(self.n, "the dense eigenvector matrix")
            product = self.product_spectrum()
            if product is not None:
                order = np.argsort(product.values, kind="stable")
                values = product.values[order]
                vectors = product.apply(np.eye(self.n)[:, order])
            else:
                values, vectors = np.linalg.eigh(self.laplacian())
                values[np.abs(values) < self._zero_tolerance()] = 0.0
            values.flags.writeable = vectors.flags.writeable = False
            self._cache["spectrum"] = (values, vectors)
        values, vectors = self._cache["spectrum"]
        return values.copy(), vectors.copy()

    def neighbours(self, g: int) -> np.ndarray:
        """Vertices ``h`` with ``w_gh > 0``, ascending.

        Raises:
            InputError: ``g`` is not a vertex (negative indices do not wrap around).
        """
        if not _is_int(g) or not 0 <= g < self.n:
            raise InputError(f"vertex {g!r} is not in 0..{self.n - 1}")
        m = self._matrix
        return m.indices[m.indptr[g]: m.indptr[g + 1]].astype(np.int64)

    def components(self) -> list[np.ndarray]:
        """Connected components, each a sorted array of vertices, ordered by smallest vertex."""
        if "components" not in self._cache:
            count, label = csgraph.connected_components(self._matrix, directed=False)
            order = np.argsort(label, kind="stable")  # vertices ascending within a component
            bounds = np.cumsum(np.bincount(label, minlength=count))[:-1]
            comps = np.split(order, bounds)
            self._cache["components"] = sorted(comps, key=lambda c: int(c[0]))
        return [c.copy() for c in self._cache["components"]]

    def is_connected(self) -> bool:
        """Whether every vertex can be reached from every other (true for ``n = 1``)."""
        return len(self.components()) == 1

    @classmethod
    def from_edges(cls, n: int, edges: Iterable[Sequence], *, source: str = "edges",
                   labels: Sequence[str] | None = None) -> Graph:
        """A graph on ``n`` vertices from ``(g, h, w)`` or ``(g, h)`` (w = 1) edges.

        Args:
            n: Number of vertices, an integer >= 1.
            edges: Edges in either orientation; an edge of weight 0 is allowed (and absent).
            source: Where the edges came from (a config key or a file), for messages.
            labels: Optional vertex names.

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
        gs, hs, ws = [], [], []
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
            gs.append(g)
            hs.append(h)
            ws.append(weight)
        return cls._trusted(n, np.array(gs, dtype=np.int64), np.array(hs, dtype=np.int64),
                            np.array(ws, dtype=np.float64), labels=labels)


def _check_labels(labels, n: int) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str | bytes) or not isinstance(labels, Iterable):
        raise InputError(f"vertex labels must be a list of {n} strings, got {labels!r}")
    labels = tuple(labels)
    if len(labels) != n:
        raise InputError(f"{len(labels)} vertex labels for a graph of {n} vertices")
    for g, name in enumerate(labels):
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"vertex label {g} = {name!r}: expected a non-empty string")
    return labels


class ProductSpectrum:
    """The spectrum of a Cartesian product graph ``G_1 □ ... □ G_d`` from its factors'.

    With ``L_i = Q_i Λ_i Q_iᵀ``, ``L = Σ_i I ⊗ .. ⊗ L_i ⊗ .. ⊗ I`` has the eigenvalues
    ``λ_{a} = Σ_i λ_{i, a_i}`` and the eigenvectors ``Q = Q_1 ⊗ ... ⊗ Q_d``; mode ``a`` is
    numbered like a vertex (``ravel_multi_index``). ``Q`` is never formed: :meth:`apply`
    contracts one factor at a time, O(N Σ q_i) per column instead of O(N²).

    Args:
        factor_spectra: ``(values, vectors)`` of each factor, first most significant.
        tolerance: Sums below it are set to 0 exactly; distinct eigenvalues closer than it
            (relative to the largest) are one.
    """

    def __init__(self, factor_spectra: Sequence[tuple[np.ndarray, np.ndarray]],
                 tolerance: float = 1e-12):
        self.factor_values = [np.asarray(v, dtype=np.float64) for v, _ in factor_spectra]
        self.factor_vectors = [np.asarray(q, dtype=np.float64) for _, q in factor_spectra]
        self.shape = tuple(v.size for v in self.factor_values)
        self.n = math.prod(self.shape)
        total = np.zeros(1)
        for v in self.factor_values:
            total = np.add.outer(total, v).ravel()
        total[np.abs(total) < tolerance] = 0.0
        self.tolerance = tolerance
        self.values = total  # in mode (multi-index) order, not sorted
        self.values.flags.writeable = False

    def distinct(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct eigenvalues (ascending), their multiplicities, and each mode's group.

        Returns:
            ``(values, multiplicities, group)`` with ``group[a]`` the index in ``values`` of
            mode ``a``'s eigenvalue. Sums that differ by rounding only are one value.
        """
        order = np.argsort(self.values, kind="stable")
        sorted_values = self.values[order]
        scale = max(1.0, float(np.abs(sorted_values).max()))
        new = np.ones(self.n, dtype=bool)
        new[1:] = np.diff(sorted_values) > 1e-10 * scale
        starts = np.flatnonzero(new)
        group_sorted = np.cumsum(new) - 1
        group = np.empty(self.n, dtype=np.int64)
        group[order] = group_sorted
        multiplicities = np.diff(np.append(starts, self.n))
        values = np.array([sorted_values[s:s + m].mean() for s, m in zip(starts, multiplicities,
                                                                           strict=True)])
        values[np.abs(values) < self.tolerance] = 0.0
        return values, multiplicities, group

    def apply(self, X: np.ndarray, *, transpose: bool = False) -> np.ndarray:
        """``Q X`` (modes to vertices), or ``Qᵀ X`` with ``transpose`` (vertices to modes).

        Args:
            X: Shape ``(N,)`` or ``(N, k)``, rows in vertex (or mode) order.
        """
        X = np.asarray(X, dtype=np.float64)
        columns = X.shape[1:]
        Y = X.reshape(self.shape + columns)
        for axis, Q in enumerate(self.factor_vectors):
            # Contract axis ``axis`` with Q (or Qᵀ) and put the result back in its place.
            Y = np.moveaxis(np.tensordot(Q.T if transpose else Q, Y, axes=([1], [axis])),
                            0, axis)
        return np.ascontiguousarray(Y).reshape((self.n,) + columns)


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


def _edges(n: int, g, h, weight: float, **kwargs) -> Graph:
    g, h = np.asarray(g, dtype=np.int64), np.asarray(h, dtype=np.int64)
    return Graph._trusted(n, g, h, np.full(g.size, weight), **kwargs)


def path(n: int, weight: float = 1.0) -> Graph:
    """The path 0 — 1 — ... — n−1 (``n >= 1``)."""
    n, weight = _check_n(n), _check_weight(weight)
    return _edges(n, np.arange(n - 1), np.arange(1, n), weight)


def cycle(n: int, weight: float = 1.0) -> Graph:
    """A ring of ``n >= 3`` vertices."""
    n, weight = _check_n(n, 3), _check_weight(weight)
    return _edges(n, np.arange(n), (np.arange(n) + 1) % n, weight)


def complete(n: int, weight: float = 1.0) -> Graph:
    """Every pair of the ``n >= 1`` vertices joined."""
    n, weight = _check_n(n), _check_weight(weight)
    g, h = np.triu_indices(n, 1)
    return _edges(n, g, h, weight)


def star(n: int, weight: float = 1.0) -> Graph:
    """Vertex 0 (the hub) joined to each of the ``n − 1`` others."""
    n, weight = _check_n(n), _check_weight(weight)
    return _edges(n, np.zeros(n - 1), np.arange(1, n), weight)


def product(factors: Sequence[Graph], labels: Sequence[str] | None = None) -> Graph:
    """The Cartesian product ``G_1 □ G_2 □ ...``, first factor most significant.

    Vertex ``g = ravel_multi_index((a_1, a_2, ...), (n_1, n_2, ...))``; ``g`` and ``h`` are
    joined with weight ``w_i(a_i, b_i)`` when they differ in coordinate ``i`` only. The
    result keeps its factors, so its spectrum comes from theirs
    (:meth:`Graph.product_spectrum`). Without ``labels``, vertex names join the factors'
    names (their labels, else indices) with ``-``, e.g. ``"0-3-1"``.

    Raises:
        InputError: No factors.
    """
    factors = list(factors)
    if not factors:
        raise InputError("graph.factors: a product needs at least one factor")
    sizes = [f.n for f in factors]
    n = math.prod(sizes)
    matrix = sparse.csr_array((n, n))
    for i, f in enumerate(factors):
        before, after = math.prod(sizes[:i]), math.prod(sizes[i + 1:])
        term = sparse.kron(sparse.kron(sparse.identity(before), f.matrix), sparse.identity(after))
        matrix = matrix + term
    if labels is None:
        names = [np.array([f.label(a) for a in range(f.n)], dtype=object) for f in factors]
        digits = np.unravel_index(np.arange(n), sizes)
        labels = names[0][digits[0]]
        for name, digit in zip(names[1:], digits[1:], strict=True):
            labels = labels + "-" + name[digit]
        labels = labels.tolist()
    return Graph(matrix, labels=labels, factors=factors)


def hamming(dim: int, choices: int, weight: float = 1.0, *, labels: bool = True) -> Graph:
    """The Hamming graph ``H(dim, choices)``: words of ``dim`` letters in ``0..choices−1``,
    joined (weight ``weight``) when they differ in one letter.

    Vertex ``g = Σ a_i choices^(dim−1−i)`` (``numpy.ravel_multi_index``), labelled by its
    word ``"a_0-a_1-..."``: e.g. NAS-Bench-201's cell space is H(6, 5). The product of
    ``dim`` complete graphs ``K_choices``, so its spectrum comes from theirs: eigenvalues
    ``k · choices · weight`` with multiplicity ``C(dim, k) (choices − 1)^k``.
    """
    dim = _check_n(dim, 1, "graph.dim")
    choices = _check_n(choices, 2, "graph.choices")
    weight = _check_weight(weight)
    factor = complete(choices, weight)
    graph = product([factor] * dim)
    return graph if labels else graph.with_labels(None)


def hypercube(dim: int, weight: float = 1.0) -> Graph:
    """``2**dim`` vertices (``dim >= 1``), edges between indices that differ in one bit."""
    dim, weight = _check_n(dim, 1, "graph.dim"), _check_weight(weight)
    return hamming(dim, 2, weight, labels=False)


def grid(rows: int, cols: int, weight: float = 1.0) -> Graph:
    """A ``rows × cols`` 4-neighbour grid; vertex ``r*cols + c``."""
    rows, cols = _check_n(rows, 1, "graph.shape[0]"), _check_n(cols, 1, "graph.shape[1]")
    weight = _check_weight(weight)
    index = np.arange(rows * cols).reshape(rows, cols)
    g = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])
    h = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])
    return _edges(rows * cols, g, h, weight)


def random(n: int, p: float = 0.5, seed: int = 0, weight: float = 1.0) -> Graph:
    """Erdős–Rényi G(n, p) with weights ``weight · U(0.5, 1.5)``, always connected.

    Deterministic for a seed (``np.random.default_rng(seed)``), hence the same on every MPI
    rank. If the draw is disconnected, its components (ordered by smallest vertex) are
    chained: one extra edge joins the smallest vertex of each component to that of the next,
    with a weight drawn from the same distribution. That is the fewest edges that connect it,
    so for ``p = 0`` the result is a path. Up to :data:`DENSE_LIMIT` vertices the draw is
    the same as ever (a dense uniform matrix); beyond, the edges are drawn sparsely (their
    number binomial, the pairs uniform without repetition), in O(N + E) memory.

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
    if n <= DENSE_LIMIT:
        upper = np.triu(rng.random((n, n)) < p, 1)
        values = weight * rng.uniform(0.5, 1.5, size=(n, n))
        g, h = np.nonzero(upper)
        w = values[g, h]
    else:
        pairs = n * (n - 1) // 2
        count = int(rng.binomial(pairs, p))
        k = np.sort(rng.choice(pairs, size=count, replace=False))
        # Pair k (row-major over g < h) -> (g, h): row g starts at g(2n − g − 1)/2.
        g = np.floor((2 * n - 1 - np.sqrt((2 * n - 1) ** 2 - 8.0 * k)) / 2).astype(np.int64)
        start = g * (2 * n - g - 1) // 2
        g = np.where(start > k, g - 1, g)  # rounding of the square root, either way
        start = g * (2 * n - g - 1) // 2
        nxt = (g + 1) * (2 * n - g - 2) // 2
        g = np.where(k >= nxt, g + 1, g)
        start = g * (2 * n - g - 1) // 2
        h = g + 1 + (k - start)
        w = weight * rng.uniform(0.5, 1.5, size=count)
    graph = Graph._trusted(n, g, h, w)
    comps = graph.components()
    if len(comps) == 1:
        return graph
    extra = [(a[0], b[0], weight * rng.uniform(0.5, 1.5))
             for a, b in zip(comps[:-1], comps[1:], strict=True)]
    eg, eh, ew = (np.array(c) for c in zip(*extra, strict=True))
    return Graph._trusted(n, np.concatenate([g, eg]), np.concatenate([h, eh]),
                          np.concatenate([w, ew]))


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
    choices: int | None = None,
    factors: Sequence[dict] | None = None,
    labels: Sequence[str] | None = None,
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
        choices: Letters per position of a Hamming graph (``n = choices**dim``).
        factors: The factors of a product, each a dict of these keywords (``kind`` and its
            keys), first most significant.
        labels: Vertex names (replacing the generated ones of hamming and product).

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
    graph = _build(kind, need, n=n, dim=dim, shape=shape, weight=weight, p=p, edges=edges,
                   file=file, seed=seed, choices=choices, factors=factors)
    return graph if labels is None else graph.with_labels(labels)


def _factor(k: int, spec) -> Graph:
    """Factor ``k`` of ``graph.factors``: a dict of ``build_graph`` keywords."""
    key = f"graph.factors[{k}]"
    if not isinstance(spec, dict):
        raise InputError(f"{key} = {spec!r}: expected a table such as {{kind = 'complete', "
                         f"n = 5}}")
    allowed = ("kind", "n", "dim", "shape", "weight", "p", "edges", "seed", "choices")
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise InputError(f"{key}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    kind = spec.get("kind")
    if kind not in FACTOR_KINDS:
        raise InputError(f"{key}.kind = {kind!r}: must be one of {', '.join(FACTOR_KINDS)}")
    try:
        return build_graph(**spec)
    except InputError as e:
        raise InputError(f"{key}: {e}") from None


def _build(kind: str, need, *, n, dim, shape, weight, p, edges, file, seed, choices,
           factors) -> Graph:
    if kind == "hamming":
        dim = _check_n(need(dim, "dim"), 1, "graph.dim")
        choices = _check_n(need(choices, "choices"), 2, "graph.choices")
        if choices**dim > MAX_VERTICES:
            raise InputError(f"graph.choices**graph.dim = {choices}**{dim} = {choices**dim} "
                             f"vertices: more than {MAX_VERTICES}")
        if n is not None and n != choices**dim:
            raise InputError(f"graph.n = {n} does not match graph.choices**graph.dim = "
                             f"{choices}**{dim} = {choices**dim}")
        return hamming(dim, choices, weight)
    if kind == "product":
        factors = need(factors, "factors")
        if isinstance(factors, str | bytes | dict) or not isinstance(factors, Sequence) \
                or not factors:
            raise InputError(f"graph.factors = {factors!r}: expected a non-empty list of "
                             f"tables such as {{kind = 'complete', n = 5}}")
        built = [_factor(k, f) for k, f in enumerate(factors)]
        if math.prod(f.n for f in built) > MAX_VERTICES:
            raise InputError(f"graph.factors: the product has {math.prod(f.n for f in built)} "
                             f"vertices: more than {MAX_VERTICES}")
        graph = product(built)
        if n is not None and n != graph.n:
            raise InputError(f"graph.n = {n} does not match the product of graph.factors "
                             f"({graph.n} vertices)")
        return graph
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
