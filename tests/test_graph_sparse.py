"""Sparse graphs: Hamming and product graphs against independent constructions, the product
spectrum against a dense eigendecomposition, labels, and O(N + E) memory at N = 15,625."""

from __future__ import annotations

import itertools
import math
import time
import tracemalloc

import networkx as nx
import numpy as np
import pytest
from scipy import sparse

from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.problem.graph import (
    DENSE_LIMIT,
    Graph,
    build_graph,
    complete,
    cycle,
    hamming,
    hypercube,
    path,
    product,
    random,
)
from rdgraph.problem.validation import graph_from_settings


def reference_hamming(dim: int, q: int, weight: float) -> np.ndarray:
    """Words that differ in exactly one letter, numbered by ravel_multi_index (brute force)."""
    words = list(itertools.product(range(q), repeat=dim))
    n = len(words)
    w = np.zeros((n, n))
    for a in words:
        for b in words:
            if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
                w[np.ravel_multi_index(a, (q,) * dim), np.ravel_multi_index(b, (q,) * dim)] = weight
    return w


def networkx_product(factors: list[nx.Graph], sizes: list[int]) -> np.ndarray:
    """networkx's cartesian_product of the factors, in ravel_multi_index order."""
    G = factors[0]
    for H in factors[1:]:
        G = nx.cartesian_product(G, H)

    def flat(node):
        # cartesian_product nests tuples: ((a, b), c) -> (a, b, c).
        out = []
        stack = [node]
        while stack:
            item = stack.pop(0)
            if isinstance(item, tuple):
                stack = list(item) + stack
            else:
                out.append(item)
        return tuple(out)

    n = math.prod(sizes)
    w = np.zeros((n, n))
    for u, v, data in G.edges(data=True):
        a, b = np.ravel_multi_index(flat(u), sizes), np.ravel_multi_index(flat(v), sizes)
        w[a, b] = w[b, a] = data.get("weight", 1.0)
    return w


@pytest.mark.parametrize("dim,q", [(1, 4), (2, 3), (3, 3), (4, 2)])
def test_hamming_against_brute_force(dim, q):
    G = hamming(dim, q, 0.7)
    assert np.array_equal(G.weights, reference_hamming(dim, q, 0.7))
    assert G.num_edges == q**dim * dim * (q - 1) // 2
    # Labels are the words, in vertex order.
    words = ["-".join(map(str, a)) for a in itertools.product(range(q), repeat=dim)]
    assert list(G.labels) == words


def test_hypercube_is_hamming_with_two_letters():
    assert hypercube(5, 2.0) == hamming(5, 2, 2.0)
    assert hypercube(5).labels is None


def test_product_against_networkx():
    def weighted(graph: Graph) -> nx.Graph:
        H = nx.Graph()
        H.add_nodes_from(range(graph.n))
        H.add_weighted_edges_from(graph.edges)
        return H

    factors = [complete(3, 2.0), path(4, 0.5), cycle(3)]
    G = product(factors)
    expected = networkx_product([weighted(f) for f in factors], [3, 4, 3])
    assert np.array_equal(G.weights, expected)
    assert G.labels[0] == "0-0-0" and G.labels[-1] == "2-3-2"
    assert G.labels[np.ravel_multi_index((1, 2, 0), (3, 4, 3))] == "1-2-0"


def test_product_from_config_and_labels_of_factors():
    s = settings_from_dict({"graph": {"kind": "product", "factors": [
        {"kind": "complete", "n": 5}, {"kind": "path", "n": 3, "weight": 2.0}]}})
    G = graph_from_settings(s)
    assert G.n == 15 and G == product([complete(5), path(3, 2.0)])
    named = product([complete(2).with_labels(["conv", "pool"]), path(2)])
    assert named.labels == ("conv-0", "conv-1", "pool-0", "pool-1")


def test_product_spectrum_against_dense_eigendecomposition():
    factors = [complete(3, 2.0), path(4, 0.5), cycle(3, 1.3)]
    G = product(factors)
    L = G.laplacian()
    dense = np.linalg.eigvalsh(L)
    assert np.allclose(G.eigenvalues(), dense, atol=1e-12)
    ps = G.product_spectrum()
    # Q = ⊗ Q_i, applied factor by factor: orthogonal, and L Q = Q Λ.
    Q = ps.apply(np.eye(G.n))
    assert np.allclose(Q.T @ Q, np.eye(G.n), atol=1e-12)
    assert np.allclose(L @ Q, Q * ps.values[None, :], atol=1e-12)
    X = np.random.default_rng(1).standard_normal((G.n, 3))
    assert np.allclose(ps.apply(X, transpose=True), Q.T @ X, atol=1e-12)
    assert np.allclose(ps.apply(X[:, 0]), Q @ X[:, 0], atol=1e-12)
    values, vectors = G.spectrum()
    assert np.allclose(values, dense, atol=1e-12)
    assert np.allclose(L @ vectors, vectors * values[None, :], atol=1e-11)
    # Distinct eigenvalues and their multiplicities.
    distinct, multiplicity, group = ps.distinct()
    assert multiplicity.sum() == G.n
    assert np.allclose(distinct[group], ps.values, atol=1e-12)


def test_hamming_distinct_eigenvalues():
    dim, q, w = 6, 5, 0.5
    values, multiplicity, _ = hamming(dim, q, w).product_spectrum().distinct()
    assert np.allclose(values, q * w * np.arange(dim + 1), rtol=1e-14, atol=0)
    assert list(multiplicity) == [math.comb(dim, k) * (q - 1) ** k for k in range(dim + 1)]
    assert hamming(dim, q, w).fiedler_value() == pytest.approx(q * w, rel=1e-13)


def test_h65_is_built_in_O_N_plus_E():
    """H(6,5): 15,625 vertices and 187,500 edges, its spectrum from the factors."""
    hamming(2, 2)  # imports warm
    start = time.perf_counter()
    G = hamming(6, 5)
    values, multiplicity, _ = G.product_spectrum().distinct()
    elapsed = time.perf_counter() - start
    assert (G.n, G.num_edges, values.size) == (15625, 187500, 7)
    assert elapsed < 1.0, elapsed
    tracemalloc.start()
    G = hamming(6, 5)
    G.product_spectrum().distinct()
    G.eigenvalues()
    G.degrees()
    G.components()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # One N x N float64 array alone would be 1.8 GiB.
    assert peak < 100 * 2**20, peak
    with pytest.raises(ValueError, match="not formed"):
        _ = G.weights
    with pytest.raises(ValueError, match="not formed"):
        G.spectrum()
    assert not G.dense


def test_large_sparse_graph_without_product_structure():
    n = 6000
    G = cycle(n)
    assert G.num_edges == n and G.is_connected()
    assert G.fiedler_value() == pytest.approx(2 - 2 * math.cos(2 * math.pi / n), rel=1e-4)
    with pytest.raises(ValueError, match="not formed"):
        G.eigenvalues()
    L = G.laplacian(sparse_format=True)
    assert sparse.issparse(L) and np.allclose(L @ np.ones(n), 0)


def test_large_random_graph_is_sparse_deterministic_connected():
    n, p = DENSE_LIMIT + 1000, 8 / (DENSE_LIMIT + 1000)
    G = random(n, p, seed=3)
    assert G == random(n, p, seed=3)
    assert G.is_connected()
    g, h, w = G.edge_arrays()
    assert np.all(g < h) and np.all((w >= 0.5) & (w <= 1.5))
    assert 3 * n < G.num_edges < 5 * n  # mean degree about 8
    # Small graphs: the same draw as the dense generator always made.
    rng = np.random.default_rng(0)
    upper = np.triu(rng.random((6, 6)) < 0.5, 1)
    assert np.array_equal(random(6, 0.5, 0).weights > 0, (upper | upper.T) | (
        random(6, 0.5, 0).weights > 0) & ~(upper | upper.T))


def test_sparse_and_dense_construction_agree():
    w = reference_hamming(2, 3, 1.5)
    assert Graph(w) == Graph(sparse.csr_array(w)) == hamming(2, 3, 1.5)
    assert hash(Graph(w)) == hash(hamming(2, 3, 1.5))
    with pytest.raises(InputError, match="symmetric"):
        Graph(sparse.csr_array(np.triu(w)))
    with pytest.raises(InputError, match="negative"):
        Graph(sparse.csr_array(-w))


@pytest.mark.parametrize("graph,match", [
    ({"kind": "hamming", "dim": 3}, "needs graph.dim and graph.choices"),
    ({"kind": "hamming", "dim": 3, "choices": 1}, r"graph.choices = 1: must be in 2"),
    ({"kind": "hamming", "dim": 2, "choices": 3, "n": 8}, "does not match"),
    ({"kind": "product"}, "needs graph.factors"),
    ({"kind": "product", "factors": []}, "non-empty list"),
    ({"kind": "product", "factors": [{"kind": "file"}]},
     r"graph.factors\[0\].kind = 'file'"),
    ({"kind": "product", "factors": [{"kind": "path", "n": 2, "colour": 1}]},
     "unknown key 'colour'"),
    ({"kind": "product", "factors": [{"kind": "path"}]}, r"graph.factors\[0\].*needs graph.n"),
    ({"kind": "path", "n": 3, "labels": ["a", "b"]}, "2 entries but the graph has 3"),
    ({"kind": "path", "n": 2, "labels": ["a", ""]}, "non-empty string"),
])
def test_graph_config_errors(graph, match):
    with pytest.raises(InputError, match=match):
        graph_from_settings(settings_from_dict({"graph": graph}))


def test_labels_from_file(tmp_path):
    f = tmp_path / "names.csv"
    f.write_text("vertex,label\n2,c\n0,a\n1,b\n")
    s = settings_from_dict({"graph": {"kind": "path", "n": 3, "labels": str(f)}})
    assert graph_from_settings(s).labels == ("a", "b", "c")
    f.write_text("vertex,name\n0,a\n")
    with pytest.raises(InputError, match="line 1: no 'label' column"):
        graph_from_settings(s)
    assert build_graph("path", n=2, labels=["u", "v"]).label(1) == "v"
