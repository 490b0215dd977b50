"""Graphs: generators, spectra, validation, edge files (pure NumPy, no MPI, no DOLFINx)."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from rdgraph.errors import InputError
from rdgraph.problem import graph as gr


# -- generators -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "graph, edges, degrees",
    [
        (gr.path(4, 2.0), 3, [2, 4, 4, 2]),
        (gr.path(1), 0, [0]),
        (gr.cycle(5), 5, [2] * 5),
        (gr.cycle(3, 0.5), 3, [1] * 3),
        (gr.complete(4), 6, [3] * 4),
        (gr.complete(1), 0, [0]),
        (gr.star(5), 4, [4, 1, 1, 1, 1]),
        (gr.star(2, 3.0), 1, [3, 3]),
        (gr.hypercube(1), 1, [1, 1]),
        (gr.hypercube(3), 12, [3] * 8),
        (gr.grid(2, 3), 7, [2, 3, 2, 2, 3, 2]),
        (gr.grid(1, 4), 3, [1, 2, 2, 1]),
        (gr.grid(3, 3, 0.5), 12, [1, 1.5, 1, 1.5, 2, 1.5, 1, 1.5, 1]),
    ],
)
def test_generators(graph, edges, degrees):
    assert len(graph.edges) == edges
    assert np.allclose(graph.degrees(), degrees)
    assert graph.max_degree == pytest.approx(max(degrees))
    L = graph.laplacian()
    assert np.allclose(L.sum(axis=1), 0)
    assert np.allclose(L, L.T)
    assert np.allclose(np.diag(L), degrees)
    assert graph.is_connected()


def test_edges_are_sorted_and_match_weights():
    graph = gr.Graph.from_edges(4, [(3, 1, 2.0), (0, 2), (2, 1, 0.5)])
    assert graph.edges == [(0, 2, 1.0), (1, 2, 0.5), (1, 3, 2.0)]
    assert all(isinstance(v, int) for g, h, _ in graph.edges for v in (g, h))
    assert graph.weights[3, 1] == graph.weights[1, 3] == 2.0
    assert list(graph.neighbours(1)) == [2, 3]
    assert list(graph.neighbours(0)) == [2]


def test_hypercube_and_grid_layout():
    for g, h, _ in gr.hypercube(4).edges:
        assert bin(g ^ h).count("1") == 1
    cols = 3
    for g, h, _ in gr.grid(2, cols).edges:
        assert h - g == 1 and g // cols == h // cols or h - g == cols
    assert set(gr.star(4).neighbours(0)) == {1, 2, 3}


def test_graph_validates_and_freezes_its_matrix():
    source = np.array([[0.0, 1.0], [1.0, 0.0]])
    graph = gr.Graph(source)
    source[0, 1] = 5.0  # a copy is stored
    assert graph.weights[0, 1] == 1.0
    assert graph.weights.dtype == np.float64
    with pytest.raises(ValueError):
        graph.weights[0, 1] = 2.0  # read-only
    assert graph == gr.path(2) and hash(graph) == hash(gr.path(2))
    assert graph != gr.path(2, 2.0)
    assert repr(gr.path(3)) == "Graph(n=3, edges=2)"
    cases = [
        ([[0, 1], [2, 0]], "symmetric"),
        ([[1, 0], [0, 0]], "self loop"),
        ([[0, -1], [-1, 0]], "negative"),
        ([[0, np.nan], [np.nan, 0]], "not finite"),
        ([[0, 1, 0], [1, 0, 0]], "square"),
        (np.zeros((0, 0)), "square"),
        ([["a", "b"], ["c", "d"]], "numeric"),
    ]
    for weights, message in cases:
        with pytest.raises(InputError, match=message):
            gr.Graph(weights)
    with pytest.raises(InputError, match="not in 0..2"):
        gr.path(3).neighbours(-1)


def test_components():
    graph = gr.build_graph("edges", n=5, edges=[[0, 2], [3, 4]])
    assert [list(c) for c in graph.components()] == [[0, 2], [1], [3, 4]]
    assert not graph.is_connected()
    assert gr.path(1).is_connected()


# -- spectra ----------------------------------------------------------------------------------
def test_known_spectra():
    n = 6
    values, vectors = gr.path(n).spectrum()
    assert np.allclose(values, 2 - 2 * np.cos(np.pi * np.arange(n) / n))
    assert np.allclose(vectors.T @ vectors, np.eye(n))
    assert values[0] == 0.0  # exactly
    assert np.all(np.diff(values) >= 0)
    values, _ = gr.cycle(n).spectrum()
    assert np.allclose(values, np.sort(2 - 2 * np.cos(2 * np.pi * np.arange(n) / n)))
    values, _ = gr.complete(n, 0.5).spectrum()
    assert np.allclose(values, [0] + [0.5 * n] * (n - 1))
    values, _ = gr.star(n).spectrum()
    assert np.allclose(values, [0] + [1] * (n - 2) + [n])
    dim, w = 4, 1.5
    values, _ = gr.hypercube(dim, w).spectrum()
    expected = np.sort(np.concatenate([[2 * k * w] * comb(dim, k) for k in range(dim + 1)]))
    assert np.allclose(values, expected)
    # A grid is a Cartesian product: its eigenvalues are sums of the paths'.
    a, b = gr.path(2).spectrum()[0], gr.path(3).spectrum()[0]
    assert np.allclose(gr.grid(2, 3).spectrum()[0], np.sort(np.add.outer(a, b).ravel()))


def test_spectrum_eigenpairs_and_exact_zeros():
    graph = gr.random(9, p=0.4, seed=7, weight=3.0)
    values, vectors = graph.spectrum()
    L = graph.laplacian()
    assert np.allclose(L @ vectors, vectors * values)
    assert np.allclose(vectors.T @ vectors, np.eye(graph.n))
    assert np.count_nonzero(values == 0.0) == 1
    # One exact zero per connected component.
    split = gr.build_graph("edges", n=6, edges=[[0, 1, 1e3], [2, 3, 1e3], [4, 5, 1e-3]])
    assert np.count_nonzero(split.spectrum()[0] == 0.0) == 3


# -- random graphs ----------------------------------------------------------------------------
def test_random_graphs_are_deterministic_and_connected():
    a, b = gr.random(12, p=0.1, seed=3), gr.random(12, p=0.1, seed=3)
    assert np.array_equal(a.weights, b.weights)
    assert a.is_connected()
    assert not np.array_equal(a.weights, gr.random(12, p=0.1, seed=4).weights)
    w = gr.random(30, p=0.5, seed=1, weight=2.0).weights
    assert w[w > 0].min() >= 1.0 and w.max() <= 3.0
    empty = gr.random(5, p=0.0, seed=0)  # no draws: components chained, fewest edges
    assert empty.is_connected() and len(empty.edges) == 4
    assert len(gr.random(6, p=1.0).edges) == 15
    assert gr.random(1).n == 1
    for seed in range(20):
        assert gr.random(15, p=0.05, seed=seed).is_connected()
    assert gr.build_graph("random", n=12, p=0.1, seed=3) == a


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 1.5}, "graph.p = 1.5"),
        ({"p": -0.1}, "graph.p"),
        ({"p": True}, "graph.p"),
        ({"seed": -1}, "graph.seed = -1"),
        ({"seed": 1.0}, "graph.seed = 1.0"),
        ({"weight": 0.0}, "graph.weight"),
    ],
)
def test_random_validation(kwargs, message):
    with pytest.raises(InputError, match=message):
        gr.random(5, **kwargs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gr.path(0), "graph.n = 0"),
        (lambda: gr.path(2.0), "graph.n = 2.0: expected an integer"),
        (lambda: gr.cycle(2), "must be >= 3"),
        (lambda: gr.complete(3, -1.0), "graph.weight = -1.0"),
        (lambda: gr.star(3, float("inf")), "finite and > 0"),
        (lambda: gr.star(3, float("nan")), "finite and > 0"),
        (lambda: gr.hypercube(0), "graph.dim = 0"),
        (lambda: gr.grid(2, 0), r"graph.shape\[1\] = 0"),
        (lambda: gr.path(3, "1"), "expected a number"),
    ],
)
def test_generator_validation(call, message):
    with pytest.raises(InputError, match=message):
        call()


# -- edge lists -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edges, n, message",
    [
        ([[0, 0, 1.0]], 2, "self loop"),
        ([[0, 1, -1.0]], 2, "finite and >= 0"),
        ([[0, 1, float("nan")]], 2, "finite and >= 0"),
        ([[0, 1, float("inf")]], 2, "finite and >= 0"),
        ([[0, 5, 1.0]], 3, "vertex 5 is out of range 0..2"),
        ([[-1, 1, 1.0]], 3, "vertex -1 is out of range"),
        ([[1.5, 1, 1.0]], 2, "vertex g = 1.5 is not an integer"),
        ([[0, 1.0, 1.0]], 2, "vertex h = 1.0 is not an integer"),
        ([[True, 1, 1.0]], 2, "not an integer"),
        ([[0, 1, 1.0], [1, 0, 2.0]], 2, "duplicate edge 0-1"),
        ([[0, 1], [0, 1]], 2, "duplicate edge"),
        ([[0, 1, "a"]], 2, "not a number"),
        ([[0, 1, True]], 2, "not a number"),
        ([[0]], 2, "expected [g, h, w]"),
        ([[0, 1, 2, 3]], 2, "expected [g, h, w]"),
        (["01"], 2, "expected [g, h, w]"),
    ],
)
def test_edge_validation(edges, n, message):
    with pytest.raises(InputError) as info:
        gr.build_graph("edges", n=n, edges=edges)
    text = str(info.value)
    assert message in text
    assert f"graph.edges[{len(edges) - 1}]" in text  # names the offending edge's index


def test_from_edges():
    graph = gr.Graph.from_edges(3, [(0, 1), (1, 2, 0.25)])
    assert graph.edges == [(0, 1, 1.0), (1, 2, 0.25)]
    assert gr.Graph.from_edges(2, [(0, 1, 0.0)]).edges == []  # weight 0 is no edge
    assert gr.Graph.from_edges(3, np.array([[0, 1], [1, 2]])) == gr.path(3)
    assert gr.Graph.from_edges(3, [(np.int64(0), np.int32(1), np.float32(2.0))]).n == 3
    with pytest.raises(InputError, match=r"edges.csv\[1\] = \[2, 2\]: self loop"):
        gr.Graph.from_edges(3, [(0, 1), [2, 2]], source="edges.csv")
    for n in (0, 1.0, True):
        with pytest.raises(InputError, match="number of vertices"):
            gr.Graph.from_edges(n, [])


# -- build_graph ------------------------------------------------------------------------------
def test_build_graph_dispatch():
    assert gr.build_graph("path", n=4, weight=2.0) == gr.path(4, 2.0)
    assert gr.build_graph("cycle", n=4) == gr.cycle(4)
    assert gr.build_graph("complete", n=4) == gr.complete(4)
    assert gr.build_graph("star", n=4) == gr.star(4)
    assert gr.build_graph("hypercube", dim=2) == gr.hypercube(2)
    assert gr.build_graph("hypercube", dim=3, n=8).n == 8
    assert gr.build_graph("grid", shape=[2, 3]) == gr.grid(2, 3)
    assert gr.build_graph("grid", shape=(2, 2), n=4).n == 4
    assert gr.build_graph("grid", n=9) == gr.grid(3, 3)
    assert gr.build_graph("edges", edges=[[0, 2, 1.0]]).n == 3
    assert gr.build_graph("edges", n=5, edges=[[0, 2]]).n == 5
    assert gr.build_graph("edges", n=3, edges=[]).edges == []  # allowed: disconnected
    assert gr.build_graph("edges", n=1, edges=[]).n == 1
    assert gr.build_graph("path", n=1).n == 1


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        ("hypercub", {"dim": 3}, "did you mean 'hypercube'"),
        ("tree", {}, "must be one of path, cycle, complete, star, hypercube, grid, random, "
                     "edges, file"),
        (3, {}, "graph.kind = 3"),
        ("path", {}, "graph.kind = 'path' needs graph.n"),
        ("random", {}, "needs graph.n"),
        ("hypercube", {}, "needs graph.dim"),
        ("hypercube", {"dim": 3, "n": 4}, "graph.n = 4 does not match graph.dim = 3"),
        ("hypercube", {"dim": 2.0}, "graph.dim = 2.0: expected an integer"),
        ("grid", {}, "needs graph.shape"),
        ("grid", {"n": 8}, "graph.n = 8 is not a perfect square"),
        ("grid", {"shape": [2, 3], "n": 5}, "graph.n = 5 does not match graph.shape"),
        ("grid", {"shape": [2]}, "graph.shape = [2]: expected [rows, cols]"),
        ("grid", {"shape": [2, 1.5]}, "graph.shape[1] = 1.5"),
        ("edges", {}, "needs graph.edges"),
        ("edges", {"edges": []}, "no edges, and graph.n is not given"),
        ("edges", {"edges": "0,1"}, "graph.edges = '0,1'"),
        ("file", {}, "needs graph.file"),
        ("file", {"file": 3}, "graph.file = 3: expected a path"),
        ("path", {"n": 0}, "graph.n = 0: must be >= 1"),
        ("path", {"n": 3.0}, "graph.n = 3.0: expected an integer"),
        ("path", {"n": True}, "graph.n = True: expected an integer"),
        ("hypercube", {"dim": 1, "n": True}, "graph.n = True"),
        ("star", {"n": 3, "weight": 0.0}, "graph.weight = 0.0"),
    ],
)
def test_build_graph_errors(kind, kwargs, message):
    with pytest.raises(InputError) as info:
        gr.build_graph(kind, **kwargs)
    assert message in str(info.value)


# -- edge files -------------------------------------------------------------------------------
def test_edge_file_with_header_comments_and_declared_n(tmp_path):
    good = tmp_path / "g.csv"
    good.write_text("g,h,w\n# a comment\n0,1,2.5\n\n1 2 0.5\n# n = 5\n  2 , 3\n3\t1,  1e-1\n")
    n, edges = gr.read_edge_file(good)
    assert n == 5
    assert edges == [(0, 1, 2.5), (1, 2, 0.5), (2, 3, 1.0), (3, 1, 0.1)]
    graph = gr.build_graph("file", file=str(good))
    assert graph.n == 5 and not graph.is_connected()
    assert graph.weights[1, 3] == pytest.approx(0.1)
    assert gr.build_graph("file", file=good, n=7).n == 7
    plain = tmp_path / "plain.txt"
    plain.write_text("0 1\n1 2\n")
    # A line without a weight is an edge of weight 1 (documented in the README and the
    # messages), also next to weighted lines.
    assert gr.read_edge_file(plain) == (3, [(0, 1, 1.0), (1, 2, 1.0)])
    plain.write_text("0,1,2.5\n1,2\n")
    assert gr.read_edge_file(plain) == (3, [(0, 1, 2.5), (1, 2, 1.0)])
    plain.write_text("0 1\n1 2\n")
    assert gr.build_graph("file", file=str(plain)) == gr.path(3)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("0,1,1\n0,x,1\n", 2, "vertex indices must be integers"),
        ("g,h,w\n0,1\n1.5,2\n", 3, "vertex indices must be integers"),
        ("0,1,1\n\n# c\n0,1,2,3\n", 4, "expected 'g,h,w' or 'g,h'"),
        ("0\n", 1, "expected 'g,h,w' or 'g,h' (a missing weight w means 1)"),
        ("0,,1\n", 1, "expected 'g,h,w' or 'g,h'"),
        ("0,1,abc\n", 1, "the weight 'abc' is not a number"),
        ("0,1,-2\n", 1, "finite and >= 0"),
        ("0,1,nan\n", 1, "finite and >= 0"),
        ("-1,1\n", 1, "vertex indices must be integers >= 0"),
        ("0,1\n1,1\n", 2, "self loop at vertex 1"),
        ("0,1\n1,2\n1,0,3\n", 3, "duplicate edge 0-1 (first on line 1)"),
        ("h,g\nx,y\n", 2, "vertex indices must be integers"),  # only one header
        ("# n = 0\n0,1\n", 1, "n must be an integer >= 1"),
        ("# n = 4\n# n = 5\n0,1\n", 2, "n was already declared as 4"),
    ],
)
def test_malformed_edge_files(tmp_path, text, line, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(InputError) as info:
        gr.read_edge_file(bad)
    msg = str(info.value)
    assert message in msg
    assert str(bad) in msg and f"line {line}: " in msg
    quoted = text.splitlines()[line - 1].strip()
    assert repr(quoted) in msg  # quotes the line


def test_edge_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        gr.read_edge_file(tmp_path / "nope.csv")
    assert "nope.csv" in str(info.value)
    with pytest.raises(InputError, match="does not exist"):
        gr.build_graph("file", file=str(tmp_path / "nope.csv"))
    with pytest.raises(InputError, match="cannot be read"):
        gr.read_edge_file(tmp_path)  # a directory
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(InputError, match="cannot be read"):
        gr.read_edge_file(binary)
    for text in ("# nothing\n", "", "g,h,w\n", "# n = 4\n"):
        empty = tmp_path / "empty.csv"
        empty.write_text(text)
        with pytest.raises(InputError, match="holds no edges"):
            gr.read_edge_file(empty)
    small = tmp_path / "small.csv"
    small.write_text("# n = 2\n0,3\n")
    with pytest.raises(InputError, match=r"'# n = 2' but vertex 3 appears"):
        gr.read_edge_file(small)
    three = tmp_path / "three.csv"
    three.write_text("0,2\n")
    with pytest.raises(InputError, match="graph.n = 2 is smaller than the 3 vertices"):
        gr.build_graph("file", file=str(three), n=2)
