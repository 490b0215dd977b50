"""Per-architecture data (``[model] data``) and Hamming graphs in runs: the data table and its
errors, ``name[g]`` in expressions, separable potentials with data coefficients, the vertex
masses of a laplacian run on H(3,3), gibbs fractions with data offsets, labels in every
output. Every test runs serially and under ``mpiexec -n 2``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import tomli_w
from conftest import make_config

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.output.diagnostics import csv_header
from rdgraph.output.plots import plot_mass_distribution, plot_masses, read_diagnostics
from rdgraph.problem.config import settings_from_dict
from rdgraph.problem.data import read_vertex_data
from rdgraph.problem.expressions import parse
from rdgraph.problem.graph import hamming
from rdgraph.problem.separable import separate
from rdgraph.simulation import Simulation, run


def write_table(path, header: str, rows) -> str:
    """Rank 0 writes, every rank waits: the file is then the same for all."""
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(header + "\n" + "".join(row + "\n" for row in rows))
    MPI.COMM_WORLD.Barrier()
    return str(path)


def h33_laplacian() -> np.ndarray:
    """The Laplacian of H(3,3), built from the words (not by rdgraph)."""
    words = list(itertools.product(range(3), repeat=3))
    n = len(words)
    L = np.zeros((n, n))
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
                L[i, j] = -1.0
    L[np.diag_indices(n)] = -L.sum(axis=1)
    return L


LOSS = np.linspace(0.0, 1.0, 27) ** 2  # one number per vertex of H(3,3)


# -- the table --------------------------------------------------------------------------------
def test_rows_in_vertex_order_by_index_and_by_label(shared_tmp):
    n = 4
    plain = write_table(shared_tmp / "plain.csv", "loss,acc",
                        [f"{0.1 * g},{1 - 0.1 * g}" for g in range(n)])
    data = read_vertex_data(plain, n)
    assert data.names == ("loss", "acc")
    assert np.allclose(data["loss"], 0.1 * np.arange(n))
    indexed = write_table(shared_tmp / "indexed.csv", "vertex,loss",
                          [f"{g},{0.1 * g}" for g in (3, 1, 0, 2)])
    assert np.allclose(read_vertex_data(indexed, n)["loss"], 0.1 * np.arange(n))
    labels = hamming(2, 2).labels  # 0-0, 0-1, 1-0, 1-1
    named = write_table(shared_tmp / "named.csv", "label,loss",
                        [f"{labels[g]},{0.1 * g}" for g in (2, 0, 3, 1)])
    data = read_vertex_data(named, n, labels)
    assert np.allclose(data["loss"], 0.1 * np.arange(n))
    assert data.labels == labels


@pytest.mark.parametrize("header,rows,match", [
    ("loss", ["1", "2"], r"bad.csv' line 3: the file ends after 2 rows, but the graph has 3 "
                         r"vertices \(a missing row for vertex 2\)"),
    ("loss", ["1", "2", "3", "4"], r"bad.csv' line 5: an extra row"),
    ("loss,acc", ["1,2", "1,x", "3,4"], r"bad.csv' line 3, column 'acc': 'x' is not a finite"),
    ("loss", ["1", "nan", "3"], r"line 3, column 'loss': 'nan' is not a finite number"),
    ("loss", ["1", "", "3"], r"line 4: the file ends after 2 rows"),  # blank lines skipped
    ("loss,acc", ["1,2", "3,", "5,6"], r"line 3, column 'acc': '' is not a finite number"),
    ("loss,acc", ["1,2", "1", "3,4"], r"line 3: 1 fields, but the header has 2"),
    ("vertex,loss", ["0,1", "2,1", "0,3"], r"line 4, column 'vertex': vertex 0 appears again"),
    ("vertex,loss", ["0,1", "7,1", "1,3"], r"line 3, column 'vertex': vertex 7 is out of range"),
    ("vertex,loss", ["0,1", "2,1"], r"line 3: the file ends without a row for vertex 1"),
    ("loss,g", ["1,1", "2,2", "3,3"], r"line 1, column 2: the column name 'g' cannot be used"),
    ("loss,loss", ["1,1", "2,2", "3,3"], r"line 1, column 2: duplicate column 'loss'"),
])
def test_bad_tables_are_refused(shared_tmp, header, rows, match):
    path = write_table(shared_tmp / "bad.csv", header, rows)
    with pytest.raises(InputError, match=match):
        read_vertex_data(path, 3)


def test_missing_file_and_unknown_column(shared_tmp):
    with pytest.raises(InputError, match="model.data .*nothing.csv' does not exist"):
        read_vertex_data(shared_tmp / "nothing.csv", 3)
    path = write_table(shared_tmp / "t.csv", "loss", ["1", "2", "3"])
    data = read_vertex_data(path, 3)
    with pytest.raises(InputError, match=r"unknown data column 'los' \(did you mean 'loss'\?\): "
                                         r"model.data '.*t.csv' line 1 has the columns loss"):
        parse("x[0] + los[g]", data=data.columns, data_source=f"model.data {path!r}")
    with pytest.raises(InputError, match=r"indexed by the vertex, as loss\[g\]"):
        parse("loss[0]", data=data.columns)
    with pytest.raises(InputError, match=r"'loss' is a data column: write loss\[g\]"):
        parse("x[0] + loss", data=data.columns)
    with pytest.raises(InputError, match=r"no per-vertex data table .*model.data"):
        parse("x[0] + loss[g]")


def test_bad_data_file_exits_2(shared_tmp):
    path = write_table(shared_tmp / "short.csv", "loss", ["1", "2"])
    data = make_config(model={"potential": "x[0] + loss[g]", "data": path})
    config = shared_tmp / "case.toml"
    if MPI.COMM_WORLD.rank == 0:
        config.write_text(tomli_w.dumps(data))
    MPI.COMM_WORLD.Barrier()
    assert main(["run", str(config), "--out", str(shared_tmp / "run"), "--quiet"]) == 2


# -- expressions and separation ---------------------------------------------------------------
def test_data_in_expressions_and_separation():
    data = {"loss": np.array([0.0, 1.0, 4.0]), "c": np.array([0.1, 0.2, 0.3])}
    expr = parse("(x[0] - c[g])**2 + 2*loss[g]", data=data)
    assert expr.depends_on("g")
    x = np.array([[0.5, 0.7, 0.9]])
    assert np.allclose(expr.evaluate(x, g=np.arange(3)), (x[0] - data["c"]) ** 2 + 2 * data["loss"])
    assert np.allclose(expr.evaluate(x, g=1), (x[0] - 0.2) ** 2 + 2.0)
    # Σ_k c_k(g) φ_k(x): |x|², x and a constant: rank 2 whatever N.
    sep = separate(expr, 3)
    assert sep is not None and sep.rank == 2
    assert np.allclose(sep.evaluate(np.vstack([x, np.zeros((2, 3))])),
                       [(x[0] - c) ** 2 + 2 * v for c, v in zip(data["c"], data["loss"],
                                                                 strict=True)])


# -- runs -------------------------------------------------------------------------------------
def h33_config(shared_tmp, **model):
    path = write_table(shared_tmp / "archs.csv", "label,loss",
                       [f"{label},{float(v)!r}" for label, v in zip(hamming(3, 3).labels, LOSS,
                                                             strict=True)])
    return make_config(
        mesh={"cells": [4, 4]},
        graph={"kind": "hamming", "dim": 3, "choices": 3, "n": 27},
        model={"data": path, **model},
    )


def test_laplacian_masses_on_h33_follow_the_graph_laplacian(shared_tmp):
    dt = 0.05
    data = h33_config(shared_tmp, coupling="laplacian", beta=0.5,
                      potential="(x[0] - 0.5)**2 + loss[g]*x[1]",
                      initial="1 + loss[g]*x[0]")
    data["time"] = {"scheme": "implicit-euler", "dt": dt, "t_end": 0.25}
    data["solver"] = {"type": "auto"}
    sim = Simulation(settings_from_dict(data))
    assert sim.model.potential_separation is not None  # 1 + r assemblies, not N
    m = np.array([d.vertex_masses for d in sim.run()])
    L = h33_laplacian()
    assert np.allclose(L, sim.graph.laplacian())
    for k in range(1, len(m)):
        residual = (np.eye(27) + dt * L) @ m[k] - m[k - 1]
        assert np.abs(residual).max() <= 1e-10 * np.abs(m[k]).max(), (k, residual)
    # The initial masses differ by vertex (the data entered the initial density).
    assert np.ptp(m[0]) > 0.1
    sim.destroy()


def test_gibbs_fractions_with_data_offsets(shared_tmp):
    beta, s = 0.5, 0.8
    data = h33_config(shared_tmp, coupling="gibbs", beta=beta,
                      potential=f"(x[0] - 0.3)**2 + 0.5*x[1] + {s}*loss[g]",
                      initial="1 + x[0]*x[1]")
    data["time"] = {"scheme": "implicit-euler", "dt": 5.0, "t_end": 400.0}
    data["solver"] = {"type": "auto"}
    sim = Simulation(settings_from_dict(data))
    separation = sim.model.potential_separation
    assert separation is not None and sim.model.same_stiffness
    history = sim.run(keep_history=False)
    expected = np.exp(-s * LOSS / beta)
    expected /= expected.sum()
    assert np.allclose(history[-1].vertex_masses / history[-1].mass, expected, rtol=1e-8)
    assert np.allclose(sim.model.gibbs_fractions, expected, rtol=1e-9)
    sim.destroy()


def test_labels_round_trip_to_summary(shared_tmp):
    data = h33_config(shared_tmp, coupling="laplacian", potential="x[0] + loss[g]")
    data["time"] = {"dt": 0.01, "t_end": 0.02}
    out = shared_tmp / "labelled"
    run(settings_from_dict(data), out_dir=out, quiet=True)
    MPI.COMM_WORLD.Barrier()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vertex_labels"] == list(hamming(3, 3).labels)
    assert summary["vertex_labels"][5] == "0-1-2"
    # No labels, no key.
    plain = make_config(time={"dt": 0.01, "t_end": 0.01})
    run(settings_from_dict(plain), out_dir=shared_tmp / "plain", quiet=True)
    MPI.COMM_WORLD.Barrier()
    assert "vertex_labels" not in json.loads((shared_tmp / "plain" / "summary.json").read_text())


def test_labels_round_trip_to_every_output(shared_tmp, capsys):
    """summary.json (above), the end table, the vertex_masses.bin header and the plots name
    the vertices by their words; diagnostics.csv keeps its columns (an output contract)."""
    data = h33_config(shared_tmp, coupling="gibbs", beta=0.5,
                      potential="(x[0] - 0.3)**2 + loss[g]")
    data["time"] = {"dt": 0.5, "t_end": 1.0}
    out = shared_tmp / "named"
    run(settings_from_dict(data), out_dir=out)
    printed = capsys.readouterr().out
    MPI.COMM_WORLD.Barrier()
    words = list(hamming(3, 3).labels)
    header = json.loads((out / "vertex_masses.json").read_text())
    assert header["labels"] == words and header["vertices"] == 27
    if MPI.COMM_WORLD.rank != 0:
        return
    # The end table: the 10 heaviest (27 > 10), each row with its vertex's word.
    rows = printed.split("Gibbs share")[1].split("winner")[0].strip().splitlines()
    assert len(rows) == 10
    for line in rows:
        g, label = line.split()[:2]
        assert label == words[int(g)]
    with open(out / "diagnostics.csv") as f:
        assert f.readline().strip().split(",") == csv_header(27)
    diag = read_diagnostics(out / "diagnostics.csv")
    # Up to 12 curves the legend names each vertex (here the first 3 of the run's columns).
    few = {k: v for k, v in diag.items()
           if not k.startswith("mass_") or k in ("mass", "mass_0", "mass_1", "mass_2")}
    texts = [t.get_text() for t in plot_masses(few, shared_tmp / "f.png", labels=words)
             .axes[0].get_legend().get_texts()]
    assert "g = 2 (0-0-2)" in texts
    final = np.array([diag[f"mass_{g}"][-1] for g in range(27)])
    notes = [t.get_text() for t in plot_mass_distribution(final, shared_tmp / "d.png",
                                                          labels=words).axes[0].texts]
    top = int(np.argmax(final))
    assert notes[0] == f"g = {top} ({words[top]})"


def test_python_callables_for_potential_and_initial(shared_tmp):
    """Callables of (x, g) give the same run as the equivalent expressions (P1: the
    interpolant of a P1-representable potential is exact)."""
    loss = np.array([0.0, 0.5, 2.0])
    path = write_table(shared_tmp / "three.csv", "loss", [repr(float(v)) for v in loss])
    common = dict(graph={"kind": "path", "n": 3},
                  time={"scheme": "implicit-euler", "dt": 0.1, "t_end": 0.5})
    text = make_config(model={"coupling": "gibbs", "beta": 0.5, "data": path,
                              "potential": "x[0] + 0.5*x[1] + loss[g]",
                              "initial": "1 + loss[g]*x[0]"}, **common)
    sim = Simulation(settings_from_dict(text))
    expected = np.array([d.vertex_masses for d in sim.run()])
    sim.destroy()
    plain = make_config(model={"coupling": "gibbs", "beta": 0.5}, **common)
    sim = Simulation(settings_from_dict(plain),
                     potential=lambda x, g: x[0] + 0.5 * x[1] + loss[g],
                     initial=lambda x, g: 1 + loss[g] * x[0])
    got = np.array([d.vertex_masses for d in sim.run()])
    assert np.allclose(got, expected, rtol=1e-10)
    assert sim.model.potential_separation is None
    sim.destroy()
    with pytest.raises(InputError, match=r"potential=.*for g = 0: expected \d+ numbers"):
        Simulation(settings_from_dict(plain), potential=lambda x, g: np.ones(2))
