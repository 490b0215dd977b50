"""Large graphs: bounded PETSc/MPI objects, the vertex-mass file, the CSV aggregates, the
fields written and the end table. Every test runs serially and under ``mpiexec -n 2``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tomli_w
from conftest import make_config, put

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.output.diagnostics import CSV_VERTEX_COLUMNS, csv_header, mass_aggregates
from rdgraph.output.masses import MASSES_FILE, MASSES_HEADER, read_vertex_masses
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation, written_vertices

COMM = MPI.COMM_WORLD


def header_and_rows(path) -> tuple[list[str], np.ndarray]:
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def large_config(n: int, **sections) -> dict:
    """A path of ``n`` vertices on a 2 × 2 mesh, laplacian coupling, spectral solver."""
    data = make_config(
        mesh={"shape": "rectangle", "cells": [2, 2]},
        graph={"kind": "path", "n": n},
        model={"coupling": "laplacian", "potential": "(x[0] - 0.5)**2",
               "initial": "1 + 0.5 * sin(g) * x[0]"},
        time={"dt": 0.01, "t_end": 0.03},
        solver={"type": "spectral"},
        output={"fields_every": 1, "checkpoint_every": 1},
    )
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def test_3000_vertices_run_with_bounded_objects(shared_tmp, capsys):
    """3000 vertices: one Function per vertex would need 3000 communicators (MPI has about
    2000 per process); the run makes Functions for the 16 written vertices only."""
    n = 3000
    config = put(shared_tmp / "c.toml", tomli_w.dumps(large_config(n)))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    if COMM.rank == 0:
        header, rows = header_and_rows(out / "diagnostics.csv")
        assert header == csv_header(n) and "mass_0" not in header
        assert rows.shape == (4, len(header))
        steps, t, masses = read_vertex_masses(out)
        assert np.array_equal(steps, np.arange(4)) and np.allclose(t, 0.01 * steps)
        assert masses.shape == (4, n)
        # The CSV's aggregates are those of the binary records, row by row.
        for row, m in zip(rows, masses, strict=True):
            assert row[header.index("mass")] == pytest.approx(m.sum(), rel=1e-12)
            assert row[header.index("mass_max")] == pytest.approx(m.max(), rel=1e-12)
            assert row[header.index("mass_max_vertex")] == np.argmax(m)
        # Laplacian coupling conserves the total mass.
        assert abs(masses[-1].sum() - masses[0].sum()) <= 1e-10 * masses[0].sum()
        with np.load(out / "final.npz") as f:
            assert f["rho"].shape[0] == n
        summary = json.loads((out / "summary.json").read_text())
        assert np.allclose(summary["final_vertex_masses"], masses[-1], rtol=1e-12)
        # The end table: the ten heaviest vertices, not 3000 rows.
        assert f"the 10 of {n} vertices with the most mass" in printed
        table = printed.split("Gibbs share")[1].split("winner")[0].strip().splitlines()
        listed = [int(line.split()[0]) for line in table]
        heaviest = np.lexsort((np.arange(n), -masses[-1]))[:10]
        assert listed == [int(g) for g in heaviest]
        # fields.bp holds the default top:16 vertices only.
        names = (out / "fields.bp" / "md.idx").exists() and sorted(
            p.name for p in (out / "fields.bp").iterdir())
        assert names


def test_simulation_keeps_no_function_per_vertex():
    settings = settings_from_dict(large_config(40))
    sim = Simulation(settings)
    try:
        assert sim._functions is None  # made only if a script asks for sim.functions
        sim.advance()
        values = sim.nodal_values()
        assert values.shape == (40, sim.model.num_owned)
        u = sim.vertex_function(3)
        assert np.array_equal(u.x.array[: sim.model.num_owned], values[3])
        # Diagnostics from the block vector agree with those from per-vertex Functions.
        d = sim.diagnostics()
        masses = np.array([sim.comm.allreduce(sim.operators.mass_row_sums() @ v)
                           for v in values])
        assert np.allclose(d.vertex_masses, masses, rtol=1e-13)
        functions = sim.functions  # the compatibility view: copies of the state
        assert len(functions) == 40
        assert np.array_equal(functions[7].x.array[: sim.model.num_owned], values[7])
    finally:
        sim.destroy()


def test_csv_keeps_vertex_columns_up_to_the_limit():
    small = csv_header(CSV_VERTEX_COLUMNS)
    assert small[:3] == ["step", "t", "mass"]
    assert small[3:3 + CSV_VERTEX_COLUMNS] == [f"mass_{g}" for g in range(CSV_VERTEX_COLUMNS)]
    assert small[-4:] == ["free_energy", "rel_entropy", "min_density", "ksp_iterations"]
    large = csv_header(CSV_VERTEX_COLUMNS + 1)
    assert large == ["step", "t", "mass", "mass_max", "mass_max_vertex",
                     "mass_effective_vertices", "free_energy", "rel_entropy", "min_density",
                     "ksp_iterations"]
    assert mass_aggregates(np.array([1.0, 3.0, 3.0, 1.0])) == pytest.approx(
        [3.0, 1, np.exp(-2 * (0.125 * np.log(0.125) + 0.375 * np.log(0.375)))])
    assert mass_aggregates(np.full(5, 0.2))[2] == pytest.approx(5.0)


@pytest.mark.parametrize("n", [CSV_VERTEX_COLUMNS, CSV_VERTEX_COLUMNS + 1])
def test_csv_switches_to_aggregates_beyond_the_limit(shared_tmp, n):
    config = put(shared_tmp / "c.toml", tomli_w.dumps(
        large_config(n, time={"t_end": 0.01}, output={"fields_every": 0})))
    out = shared_tmp / f"run{n}"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    if COMM.rank == 0:
        header, rows = header_and_rows(out / "diagnostics.csv")
        _, _, masses = read_vertex_masses(out)
        assert header == csv_header(n)
        if n <= CSV_VERTEX_COLUMNS:
            columns = [header.index(f"mass_{g}") for g in range(n)]
            assert np.array_equal(rows[:, columns], masses)  # repr round-trips float64
        else:
            assert not any(h.startswith("mass_") and h[5:].isdigit() for h in header)


def test_masses_file_survives_a_torn_record_and_resume_cuts_it(shared_tmp):
    n = 70
    base = large_config(n, time={"t_end": 0.06}, output={"fields_every": 0,
                                                          "checkpoint_every": 2})
    config = put(shared_tmp / "c.toml", tomli_w.dumps(base))
    full, part = shared_tmp / "full", shared_tmp / "part"
    assert main(["run", config, "--out", str(full), "--quiet"]) == 0
    assert main(["run", config, "--out", str(part), "--quiet", "--set", "time.t_end=0.05"]) == 0
    if COMM.rank == 0:
        # A kill in the middle of a record, after a later step than the checkpoint: the
        # reader drops the torn record, and the resume cuts back to step 5.
        with open(part / MASSES_FILE, "ab") as f:
            f.write(np.arange(n + 2, dtype="<f8").tobytes())  # a bogus step 0 record ...
            f.write(b"\x00" * 13)  # ... and a torn one
        steps, _, _ = read_vertex_masses(part)
        assert steps.size == 7
        header = json.loads((part / MASSES_HEADER).read_text())
        assert header["vertices"] == n and header["record_length"] == n + 2
    COMM.Barrier()
    assert main(["run", config, "--resume", str(part), "--quiet"]) == 0
    if COMM.rank == 0:
        a, b = read_vertex_masses(full), read_vertex_masses(part)
        assert np.array_equal(b[0], np.arange(7))
        assert np.allclose(a[2], b[2], rtol=1e-10, atol=1e-13)
        assert (part / MASSES_FILE).stat().st_size == 7 * (n + 2) * 8


def test_fields_vertices_parsing_and_refusals():
    data = make_config(graph={"kind": "path", "n": 20})
    for value, parsed in [([3, 1], [3, 1]), ("top:4", "top:4"), (" top : 2 ", "top:2")]:
        data["output"]["fields_vertices"] = value
        assert settings_from_dict(data).output.fields_vertices == parsed
    for bad in ["top:0", "top:-1", "top", "all", "bottom:3", [], [1, 1], [-1], [1.5], True,
                {"a": 1}]:
        data["output"]["fields_vertices"] = bad
        with pytest.raises(InputError, match="output.fields_vertices"):
            settings_from_dict(data)
    # An index beyond the graph is refused before the mesh is built.
    data["output"]["fields_vertices"] = [0, 20]
    with pytest.raises(InputError, match="vertex 20 does not exist"):
        Simulation(settings_from_dict(data))


def test_written_vertices_defaults_and_top_k():
    gibbs = np.array([0.1, 0.4, 0.1, 0.3, 0.1])
    assert written_vertices(None, gibbs) == [0, 1, 2, 3, 4]  # N <= 16: every vertex
    assert written_vertices("top:2", gibbs) == [1, 3]
    assert written_vertices("top:3", gibbs) == [0, 1, 3]  # a tie goes to the smaller index
    assert written_vertices("top:9", gibbs) == [0, 1, 2, 3, 4]
    assert written_vertices([4, 2], gibbs) == [4, 2]
    many = np.linspace(1.0, 2.0, 40)
    assert written_vertices(None, many) == list(range(24, 40))  # top:16


def test_fields_bp_holds_the_chosen_vertices(shared_tmp):
    config = put(shared_tmp / "c.toml", tomli_w.dumps(large_config(
        30, time={"t_end": 0.01}, output={"fields_vertices": [2, 17]})))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    if COMM.rank == 0:
        text = b"".join(p.read_bytes() for p in (out / "fields.bp").iterdir() if p.is_file())
        assert b"rho_2" in text and b"rho_17" in text
        assert b"rho_3" not in text and b"rho_0" not in text


def test_small_graph_table_lists_every_vertex_with_gibbs_shares(shared_tmp, capsys):
    config = put(shared_tmp / "c.toml", tomli_w.dumps(make_config(
        graph={"kind": "path", "n": 3},
        model={"coupling": "gibbs", "potential": "(x[0] - 0.4*g)**2"})))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    if COMM.rank == 0:
        summary = json.loads((out / "summary.json").read_text())
        table = printed.split("Gibbs share")[1].split("winner")[0].strip().splitlines()
        assert [int(line.split()[0]) for line in table] == [0, 1, 2]  # in vertex order
        shares = [float(line.split()[-1].rstrip("%")) / 100 for line in table]
        assert np.allclose(shares, summary["gibbs_vertex_fractions"], atol=5e-5)
