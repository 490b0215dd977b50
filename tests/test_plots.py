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


# -- what the figures show ------------------------------------------------------------------
def assert_readable(fig) -> None:
    """Every visible axis has its labels; every colour-mapped artist has a colour bar.

    A colour map counts as explained when it has its own colour bar, or when a colour bar
    of the figure shows the same map over the same range (panels on one shared scale).
    """
    bars = [(a._colorbar.cmap.name, a._colorbar.norm.vmin, a._colorbar.norm.vmax)
            for a in fig.axes if getattr(a, "_colorbar", None) is not None]
    for ax in fig.axes:
        bar = getattr(ax, "_colorbar", None)
        if bar is not None:
            assert bar.ax.get_ylabel() or bar.ax.get_xlabel(), "a colour bar without a label"
            continue
        if not ax.axison:
            continue
        assert ax.get_xlabel(), f"no x label on {ax.get_title()!r}"
        assert ax.get_ylabel(), f"no y label on {ax.get_title()!r}"
        for artist in ax.collections + ax.images:
            if artist.get_array() is None:
                continue  # single-coloured (edges, lines)
            key = (artist.cmap.name, artist.norm.vmin, artist.norm.vmax)
            assert artist.colorbar is not None or key in bars, (
                f"no colour bar in {ax.get_title()!r}")


def colour_mapped(fig) -> list:
    """The colour-mapped artists of the figure's panels (not of its colour bars)."""
    return [a for ax in fig.axes if getattr(ax, "_colorbar", None) is None
            for a in ax.collections if a.get_array() is not None]


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("shared", [False, True])
def test_density_figures_are_labelled(tmp_path, dim, shared):
    data = synthetic(dim, 4)
    fig = plot_density(data, tmp_path / "d.png", shared=shared, masses=np.arange(1.0, 5.0))
    assert_readable(fig)
    images = colour_mapped(fig)
    if dim > 1:
        assert len(images) == 4
        # Own scales: each panel spans its own density; shared: one range for all.
        ranges = {(a.norm.vmin, a.norm.vmax) for a in images}
        assert len(ranges) == (1 if shared else 4)
        bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
        assert len(bars) == (1 if shared else 4)


def test_3d_density_slices_through_each_maximum(tmp_path):
    """A well in a corner of the box is in its panel (the middle plane misses it)."""
    data = synthetic(3, 3, points=9)
    x = data["x"]
    corners = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.5)]
    data["rho"] = np.array([np.exp(-20 * np.sum((x - c) ** 2, axis=1)) for c in corners])
    fig = plot_density(data, tmp_path / "d.png")
    images = colour_mapped(fig)
    for g, image in enumerate(images):
        assert image.get_array().max() == pytest.approx(data["rho"][g].max())
        assert f"x₂ = {corners[g][2]:.3g}" in fig.axes[fig.axes.index(image.axes)].get_title()


def diagnostics(n=3, steps=20, limit=None):
    t = np.linspace(0, 2, steps + 1)
    masses = np.array([0.2 + 0.1 * g + 0.3 * np.exp(-t * (g + 1)) for g in range(n)])
    free = -1.0 + np.exp(-t)
    diag = {"step": np.arange(steps + 1.0), "t": t, "mass": masses.sum(axis=0),
            "free_energy": free, "rel_entropy": 10 * np.exp(-t)}
    diag.update({f"mass_{g}": masses[g] for g in range(n)})
    return diag


def test_masses_draw_the_limits_dashed_in_each_vertex_colour(tmp_path):
    from rdgraph.output.plots import plot_masses

    targets = np.array([0.2, 0.3, 0.4])
    fig = plot_masses(diagnostics(), tmp_path / "m.png", targets, "Gibbs state")
    assert_readable(fig)
    linear, log = fig.axes[:2]
    assert log.get_yscale() == "log" and linear.get_yscale() == "linear"
    for ax in (linear, log):
        solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(solid) == 3 and len(dashed) == 3
        for curve, target, value in zip(solid, dashed, targets, strict=True):
            assert curve.get_color() == target.get_color()
            assert target.get_ydata()[0] == pytest.approx(value)


def test_energy_is_plotted_against_the_gibbs_free_energy(tmp_path):
    from rdgraph.output.plots import plot_energy

    diag = diagnostics()
    fig = plot_energy(diag, tmp_path / "e.png", free_energy_limit=-1.5)
    assert_readable(fig)
    excess = fig.axes[1].get_lines()[0].get_ydata()
    assert np.allclose(excess, diag["free_energy"] + 1.5)  # F − F_∞, not F − F(T)
    assert excess[-1] > 0.4
    # An older run directory without F_∞ says so instead of inventing one.
    fig = plot_energy(diag, tmp_path / "e.png")
    assert_readable(fig)
    assert "older run" in fig.axes[1].get_title()
    assert np.allclose(fig.axes[1].get_lines()[0].get_ydata(), diag["rel_entropy"])


def test_graph_layouts_follow_the_kind_of_graph(tmp_path):
    from rdgraph.output.plots import MAX_GRAPH_VERTICES, TOP_VERTICES, _layout, plot_graph
    from rdgraph.problem import graph as gr

    ring = _layout(gr.cycle(6), "cycle")
    radii = [np.linalg.norm(p) for p in ring.values()]
    assert np.allclose(radii, radii[0])
    for dim in (2, 3, 4, 6):
        cube = np.array(list(_layout(gr.hypercube(dim), "hypercube").values()))
        gaps = np.linalg.norm(cube[:, None] - cube[None], axis=2) + np.eye(cube.shape[0])
        assert gaps.min() > 1e-3, dim  # no two corners drawn on top of each other
    for graph, kind in ((gr.cycle(6), "cycle"), (gr.hypercube(3), "hypercube"),
                        (gr.grid(3, 4), "grid")):
        assert_readable(plot_graph(graph, np.arange(1.0, graph.n + 1), tmp_path / "g.png", kind))
    # A large graph: the heaviest vertices and their neighbours only.
    big = gr.path(MAX_GRAPH_VERTICES + 40)
    masses = np.ones(big.n)
    masses[[10, 50, 51, 90, 99]] = 100.0
    fig = plot_graph(big, masses, tmp_path / "g.png", "path")
    drawn = colour_mapped(fig)[0]
    neighbours = {h for g in (10, 50, 51, 90, 99) for h in big.neighbours(g)}
    assert drawn.get_offsets().shape[0] == len(neighbours | {10, 50, 51, 90, 99})
    assert f"{TOP_VERTICES} heaviest" in fig.axes[0].get_title()
