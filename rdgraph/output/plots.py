"""PNG figures of a finished run directory: ``rdgraph plot RUN_DIR`` and ``[output] plots``.

Reads only the run directory's files (``diagnostics.csv``, ``final.npz``, ``config.toml``),
so it also runs on a laptop on results copied from a cluster, serially. matplotlib is used
through its Agg canvas (no pyplot state, no display needed) and imported here only, as is
networkx: the solver does not need either.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from rdgraph.errors import InputError
from rdgraph.problem.config import load_settings
from rdgraph.problem.validation import graph_from_settings

__all__ = [
    "MAX_PANELS",
    "PLOT_FILES",
    "plot_density",
    "plot_energy",
    "plot_graph",
    "plot_masses",
    "plot_run",
    "read_diagnostics",
]

#: The figures :func:`plot_run` can write into ``RUN_DIR/plots``.
PLOT_FILES = ("masses.png", "energy.png", "density.png", "graph.png")
#: Density panels drawn at most (the vertices with the largest final mass).
MAX_PANELS = 36


def read_diagnostics(path: str | Path) -> dict[str, np.ndarray]:
    """``diagnostics.csv`` as ``{column: array}``.

    Raises:
        InputError: The file is missing, unreadable or has no complete data row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist (is this a run directory?)")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{str(path)!r} cannot be read: {e}") from None
    if len(rows) < 2 or "mass" not in rows[0]:
        raise InputError(f"{str(path)!r} is not a diagnostics file with data rows")
    header = rows[0]
    # A run killed while writing leaves at most one short last line: drop it.
    body = [row for row in rows[1:] if len(row) == len(header)]
    try:
        data = np.array(body, dtype=float)
    except ValueError as e:
        raise InputError(f"{str(path)!r} has a non-numeric value: {e}") from None
    if data.shape[0] == 0:
        raise InputError(f"{str(path)!r} has no complete data row")
    return {name: data[:, i] for i, name in enumerate(header)}


def _mass_columns(diag: dict[str, np.ndarray]) -> list[str]:
    return sorted((k for k in diag if k.startswith("mass_")), key=lambda k: int(k[5:]))


def _figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.2), share: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharex=share, sharey=share)


def plot_masses(diag: dict[str, np.ndarray], path: Path) -> None:
    """Vertex masses m_g(t) and the total mass over time."""
    fig, axes = _figure()
    ax = axes[0, 0]
    t = diag["t"]
    names = _mass_columns(diag)
    for name in names:
        # A legend of more than a dozen entries hides the curves.
        ax.plot(t, diag[name], lw=1.2, label=f"g = {name[5:]}" if len(names) <= 12 else None)
    ax.plot(t, diag["mass"], "k--", lw=1, label="total")
    ax.set(xlabel="t", ylabel="mass", title="Vertex masses")
    ax.legend(fontsize="small", ncols=2 if len(names) > 6 else 1)
    fig.savefig(path, dpi=110)


def plot_energy(diag: dict[str, np.ndarray], path: Path) -> None:
    """Free energy F(t) (linear: it can be negative), and F(t) − F(T) and H(ρ|ρ_π) (log)."""
    fig, axes = _figure(1, 2, size=(10, 4))
    t = diag["t"]
    axes[0, 0].plot(t, diag["free_energy"])
    axes[0, 0].set(xlabel="t", ylabel="F", title="Free energy")
    ax = axes[0, 1]
    excess = diag["free_energy"] - diag["free_energy"][-1]
    for values, label in ((excess, "F(t) − F(T)"), (diag["rel_entropy"], "H(ρ | ρ_π)")):
        keep = values > 0  # a log axis shows positive values only
        if keep.any():
            ax.semilogy(t[keep], values[keep], label=label)
    ax.set(xlabel="t", title="Decay (log scale)")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def _triangulation(x: np.ndarray, y: np.ndarray):
    """A Delaunay triangulation of the points without the triangles that bridge holes.

    ``final.npz`` stores nodal values without cells, so Delaunay refills the holes and
    notches of a non-convex domain; those triangles have an edge much longer than the
    typical mesh edge and are masked.
    """
    from matplotlib.tri import Triangulation

    tri = Triangulation(x, y)
    pts = np.column_stack([x, y])[tri.triangles]
    longest = np.linalg.norm(pts - np.roll(pts, 1, axis=1), axis=2).max(axis=1)
    tri.set_mask(longest > 3.0 * np.median(longest))
    return tri


def _dimension(x: np.ndarray) -> int:
    """The geometric dimension of the points (``final.npz`` pads them to 3 coordinates)."""
    extent = x.max(axis=0) - x.min(axis=0)
    return max(1, int(np.count_nonzero(extent > 1e-12 * max(1.0, float(extent.max())))))


def plot_density(npz: dict[str, np.ndarray], path: Path) -> None:
    """The final density of each vertex on the mesh, one panel per vertex, one colour scale.

    1-D: a curve; 2-D: a colour map on a Delaunay triangulation of the dofs; 3-D: the same
    for the dofs within about one mesh size of the middle plane of the last coordinate
    (projected onto it; a scatter if they are too few to triangulate). With
    more than :data:`MAX_PANELS` vertices the ones with the largest final mass are drawn.
    """
    x, rho = np.asarray(npz["x"], dtype=float), np.asarray(npz["rho"], dtype=float)
    n, dim = rho.shape[0], _dimension(x)
    shown = np.arange(n)
    if n > MAX_PANELS:
        # The same ranking as the panels' titles: the nodal sum stands in for the mass.
        shown = np.sort(np.argsort(rho.sum(axis=1))[::-1][:MAX_PANELS])
    ncols = math.ceil(math.sqrt(shown.size))
    nrows = math.ceil(shown.size / ncols)
    side = 3.0 if ncols <= 4 else 2.2
    # Shared axes: every panel shows the same domain; tick labels on the outer panels only
    # read better and halve matplotlib's layout time.
    fig, axes = _figure(nrows, ncols, size=(side * ncols + 1.2, side * 0.9 * nrows + 0.5),
                        share=True)
    # One colour scale for every panel, so that the panels show where the mass went.
    vmin, vmax = float(rho[shown].min()), float(rho[shown].max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    slab = np.ones(x.shape[0], dtype=bool)
    note = ""
    if dim == 3:
        z = x[:, 2]
        mid = 0.5 * (z.min() + z.max())
        # About one mesh size: the box volume per dof, to the power 1/3.
        h = float(np.prod(x.max(axis=0) - x.min(axis=0)) / x.shape[0]) ** (1 / 3)
        slab = np.abs(z - mid) <= 0.6 * h
        note = f", slice x₂ ≈ {mid:.3g}"
    tri = None
    if dim >= 2:
        try:
            tri = _triangulation(x[slab, 0], x[slab, 1])
        except (ValueError, RuntimeError):
            # Fewer than three points, or all on a line, in the 3-D slice: scatter them.
            tri = None
    order = np.argsort(x[:, 0], kind="stable")
    image = None
    for k in range(nrows * ncols):
        ax = axes[k // ncols, k % ncols]
        if k >= shown.size:
            ax.set_axis_off()
            # The panel above is the last of its column: it shows the shared x labels.
            axes[k // ncols - 1, k % ncols].tick_params(labelbottom=True)
            continue
        g = int(shown[k])
        if dim == 1:
            ax.plot(x[order, 0], rho[g, order])
            ax.set_ylim(vmin - 0.05 * (vmax - vmin), vmax + 0.05 * (vmax - vmin))
            ax.set_xlabel("x₀", fontsize="small")
        elif tri is not None:
            image = ax.tripcolor(tri, rho[g, slab], shading="gouraud", cmap="viridis",
                                 vmin=vmin, vmax=vmax)
            ax.set_aspect("equal")
        else:
            image = ax.scatter(x[slab, 0], x[slab, 1], c=rho[g, slab], s=6, cmap="viridis",
                               vmin=vmin, vmax=vmax)
            ax.set_aspect("equal")
        ax.set_title(f"ρ_{g}", fontsize="small")
        ax.tick_params(labelsize="x-small")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="density")
    subset = f" ({shown.size} of {n} vertices)" if shown.size < n else ""
    t = float(npz["t"]) if "t" in npz else math.nan
    fig.suptitle(f"Final densities at t = {t:.4g}{note}{subset}")
    fig.savefig(path, dpi=100)


def plot_graph(graph, masses: np.ndarray, path: Path) -> None:
    """The graph; vertex area and colour by share of the final mass, edge width by weight."""
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(graph.n))
    G.add_weighted_edges_from(graph.edges)
    # A fixed seed: the same run gives the same picture.
    pos = nx.spring_layout(G, seed=0)
    fig, axes = _figure(size=(6, 5))
    ax = axes[0, 0]
    total = float(masses.sum())
    share = masses / total if total > 0 else np.full(graph.n, 1.0 / graph.n)
    weights = np.array([w for _, _, w in graph.edges])
    widths = 0.5 + 2.5 * weights / weights.max() if weights.size else 1.0
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, edge_color="0.6")
    nodes = nx.draw_networkx_nodes(G, pos, ax=ax, node_size=60 + 2000 * share,
                                   node_color=share, cmap="viridis", vmin=0.0)
    if graph.n <= 40:
        nx.draw_networkx_labels(G, pos, ax=ax, font_size=8, font_color="tab:red")
    fig.colorbar(nodes, ax=ax, label="share of the final mass")
    ax.set_axis_off()
    ax.set_title("Graph: vertex size and colour by final mass")
    fig.savefig(path, dpi=110)


def _graph_of_run(run_dir: Path):
    return graph_from_settings(load_settings(run_dir / "config.toml"))


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the PNG figures of a run directory into ``run_dir/plots``; return their paths.

    ``density.png`` needs ``final.npz`` and ``graph.png`` ``config.toml``; each is skipped
    when its file is absent. Serial: call it on one rank.

    Raises:
        InputError: ``run_dir`` is not a run directory (no readable ``diagnostics.csv``),
            or its ``config.toml`` or ``final.npz`` is invalid.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {str(run_dir)!r} does not exist")
    diag = read_diagnostics(run_dir / "diagnostics.csv")
    masses = np.array([diag[k][-1] for k in _mass_columns(diag)])
    graph = _graph_of_run(run_dir) if (run_dir / "config.toml").is_file() else None
    npz = None
    if (run_dir / "final.npz").is_file():
        try:
            with np.load(run_dir / "final.npz") as f:
                npz = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise InputError(f"{str(run_dir / 'final.npz')!r} cannot be read: {e}") from None
        if "x" not in npz or "rho" not in npz or npz["rho"].shape[0] != masses.size:
            raise InputError(f"{str(run_dir / 'final.npz')!r} does not match "
                             f"diagnostics.csv ({masses.size} vertices)")
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = [out / "masses.png", out / "energy.png"]
    plot_masses(diag, written[0])
    plot_energy(diag, written[1])
    if npz is not None:
        written.append(out / "density.png")
        plot_density(npz, written[-1])
    if graph is not None and graph.n == masses.size:
        written.append(out / "graph.png")
        plot_graph(graph, masses, written[-1])
    return written
