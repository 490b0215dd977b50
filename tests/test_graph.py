"""Graphs: generators, spectra, validation, edge files (pure NumPy)."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from rdgraph import graph as gr
from rdgraph.errors import InputError


@pytest.mark.parametrize(
    "graph, edges, degrees",
    [
        (gr.path(4, 2.0), 3, [2, 4, 4, 2]),
        (gr.cycle(5), 5, [2] * 5),
        (gr.complete(4), 6, [3] * 4),
        (gr.star(5), 4, [4, 1, 1, 1, 1]),
        (gr.hypercube(3), 12, [3] * 8),
        (gr.grid(2, 3), 7, [2, 3, 2, 2, 3, 2]),
    ],
)
def test_generators(graph, edges, degrees):
    assert len(graph.edges) == edges
    assert np.allclose(graph.degrees(), degrees)
    assert np.allclose(graph.laplacian().sum(axis=1), 0)
    assert np.allclose(graph.laplacian(), graph.laplacian().T)
    assert graph.is_connected()


def test_known_spectra():
    n = 6
    values, vectors = gr.path(n).spectrum()
    assert np.allclose(values, 2 - 2 * np.cos(np.pi * np.arange(n) / n))
    assert np.allclose(vectors.T @ vectors, np.eye(n))
    assert values[0] == 0.0  # exactly
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


def test_random_graphs_are_deterministic_and_connected():
    a, b = gr.random(12, p=0.1, seed=3), gr.random(12, p=0.1, seed=3)
    assert np.array_equal(a.weights, b.weights)
    assert a.is_connected()
    assert not np.array_equal(a.weights, gr.random(12, p=0.1, seed=4).weights)
    w = gr.random(30, p=0.5, seed=1, weight=2.0).weights
    assert w[w > 0].min() >= 1.0 and w.max() <= 3.0
    assert gr.random(5, p=0.0, seed=0).is_connected()


@pytest.mark.parametrize(
    "edges, n, message",
    [
        ([[0, 0, 1.0]], 2, "self loop"),
        ([[0, 1, -1.0]], 2, "finite and >= 0"),
        ([[0, 1, float("nan")]], 2, "finite and >= 0"),
        ([[0, 1, float("inf")]], 2, "finite and >= 0"),
        ([[0, 5, 1.0]], 3, "out of range"),
        ([[0.0, 1, 1.0]], 2, "not an integer"),
        ([[True, 1, 1.0]], 2, "not an integer"),
        ([[0, 1, 1.0], [1, 0, 2.0]], 2, "duplicate edge"),
        ([[0, 1, "a"]], 2, "not a number"),
        ([[0]], 2, "expected [g, h, w]"),
    ],
)
def test_edge_validation(edges, n, message):
    with pytest.raises(InputError) as info:
        gr.build_graph("edges", n=n, edges=edges)
    assert message in str(info.value)
    assert "graph.edges[" in str(info.value)


def test_build_graph_dispatch_and_errors():
    assert gr.build_graph("hypercube", dim=2).n == 4
    assert gr.build_graph("grid", shape=[2, 2]).n == 4
    assert gr.build_graph("grid", n=9).n == 9
    assert gr.build_graph("edges", edges=[[0, 2, 1.0]]).n == 3
    assert gr.build_graph("path", n=1).n == 1
    with pytest.raises(InputError, match="did you mean 'hypercube'"):
        gr.build_graph("hypercub", dim=3)
    with pytest.raises(InputError, match="needs graph.n"):
        gr.build_graph("path")
    with pytest.raises(InputError, match="does not match"):
        gr.build_graph("hypercube", dim=3, n=4)
    with pytest.raises(InputError, match="graph.weight"):
        gr.build_graph("path", n=3, weight=0.0)
    with pytest.raises(InputError, match="graph.n"):
        gr.build_graph("path", n=0)
    with pytest.raises(InputError, match="empty"):
        gr.build_graph("edges", edges=[])


def test_edge_files(tmp_path):
    good = tmp_path / "g.csv"
    good.write_text("g,h,w\n# a comment\n0,1,2.5\n\n1 2 0.5\n# n = 5\n2,3\n")
    n, edges = gr.read_edge_file(good)
    assert n == 5 and edges == [(0, 1, 2.5), (1, 2, 0.5), (2, 3, 1.0)]
    graph = gr.build_graph("file", file=str(good))
    assert graph.n == 5 and not graph.is_connected()
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1,1\n0,x,1\n")
    with pytest.raises(InputError, match="line 2"):
        gr.read_edge_file(bad)
    with pytest.raises(InputError, match="does not exist"):
        gr.read_edge_file(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="no edges"):
        gr.read_edge_file(empty)
    loop = tmp_path / "loop.csv"
    loop.write_text("1,1,1\n")
    with pytest.raises(InputError, match="self loop"):
        gr.build_graph("file", file=str(loop))
