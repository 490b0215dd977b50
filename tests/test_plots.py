"""``rdgraph plot`` and ``[output] plots``: valid PNGs for 1-D, 2-D and 3-D runs, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tomli_w
from conftest import make_config
from PIL import Image

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.output.plots import MAX_PANELS, PLOT_FILES, plot_density, plot_run
from rdgraph.problem.config import load_settings

comm = MPI.COMM_WORLD


def write_config(path, data) -> str:
    if comm.rank == 0:
        path.write_text(tomli_w.dumps(data))
    comm.Barrier()
    return str(path)


def check_png(path, min_size=(200, 150)) -> None:
    """A complete PNG of at least ``min_size`` pixels with more than one colour."""
    with Image.open(path) as image:
        image.verify()  # checks the chunks and their CRCs
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size >= min_size
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or [0, 0]) > 1


def test_run_with_plots_writes_every_figure(shared_tmp):
    config = write_config(shared_tmp / "c.toml", make_config(
        graph={"kind": "cycle", "n": 5},
        model={"coupling": "gibbs", "beta": 0.5, "potential": "(x[0] - 0.2*g)**2"},
        time={"dt": 0.02, "t_end": 0.1}))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet", "--set", "output.plots=true"]) == 0
    comm.Barrier()  # rank 0 draws after the others have returned
    if comm.rank == 0:
        assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(PLOT_FILES)
        for name in PLOT_FILES:
            check_png(out / "plots" / name)
    # Redrawing from the files alone (e.g. on a laptop) gives the same set.
    if comm.rank == 0:
        for name in PLOT_FILES:
            (out / "plots" / name).unlink()
    comm.Barrier()
    assert main(["plot", str(out), "--quiet"]) == 0
    comm.Barrier()
    if comm.rank == 0:
        for name in PLOT_FILES:
            check_png(out / "plots" / name)


def test_plots_are_off_unless_asked_and_on_for_the_default_problem(shared_tmp):
    config = write_config(shared_tmp / "c.toml", make_config(time={"dt": 0.01, "t_end": 0.01}))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    assert not (out / "plots").exists()
    assert load_settings(None).output.plots
    assert not load_settings(config).output.plots
    with pytest.raises(InputError, match="output.plots"):
        load_settings(config, ["output.plots='yes'"])


def test_the_default_run_draws_its_figures(shared_tmp):
    """``rdgraph run`` without a config (the quick start), made small."""
    out = shared_tmp / "default"
    assert main(["run", "--out", str(out), "--quiet", "--set", "mesh.cells=[8,8]",
                 "--set", "time.t_end=0.1", "--set", "output.fields_every=0"]) == 0
    comm.Barrier()
    if comm.rank == 0:
        for name in PLOT_FILES:
            check_png(out / "plots" / name)


def test_plot_without_npz_and_config_draws_what_it_can(shared_tmp):
    config = write_config(shared_tmp / "c.toml", make_config(
        mesh={"shape": "interval", "cells": [8]}, time={"dt": 0.01, "t_end": 0.02},
        output={"npz": False}))
    out = shared_tmp / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0
    if comm.rank == 0:
        (out / "config.toml").unlink()
    comm.Barrier()
    assert main(["plot", str(out), "--quiet"]) == 0
    comm.Barrier()
    if comm.rank == 0:
        assert sorted(p.name for p in (out / "plots").iterdir()) == ["energy.png", "masses.png"]


@pytest.mark.parametrize("case", ["missing", "empty", "not-a-csv"])
def test_bad_run_directory_exits_2(shared_tmp, capsys, case):
    run_dir = shared_tmp / case
    if comm.rank == 0 and case != "missing":
        run_dir.mkdir()
        if case == "not-a-csv":
            (run_dir / "diagnostics.csv").write_text("hello\n")
    comm.Barrier()
    assert main(["plot", str(run_dir)]) == 2
    if comm.rank == 0:
        err = capsys.readouterr().err
        assert err.count("rdgraph: error:") == 1 and str(run_dir) in err
        assert not (run_dir / "plots").exists()


def synthetic(dim: int, n: int, points: int = 6):
    """Nodal values on a grid of the unit cube's first ``dim`` axes, padded to 3 columns."""
    axes = [np.linspace(0, 1, points)] * dim
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    x = np.zeros((grid.shape[0], 3))
    x[:, :dim] = grid
    rho = np.array([1 + g + np.cos(np.pi * x[:, 0]) for g in range(n)])
    return {"x": x, "rho": rho, "t": np.array(0.5)}


@pytest.mark.parametrize("dim, n", [(1, 3), (2, 2), (3, 4), (2, MAX_PANELS + 4)])
def test_density_panels_in_every_dimension(tmp_path, dim, n):
    path = tmp_path / "density.png"
    plot_density(synthetic(dim, n), path)
    check_png(path)


def test_plot_run_refuses_a_mismatched_npz(tmp_path):
    (tmp_path / "diagnostics.csv").write_text(
        "step,t,mass,mass_0,mass_1,free_energy,rel_entropy,min_density,ksp_iterations\n"
        "0,0.0,2.0,1.0,1.0,0.5,0.1,0.0,0\n")
    np.savez(tmp_path / "final.npz", **synthetic(1, 3))
    with pytest.raises(InputError, match="does not match"):
        plot_run(tmp_path)
