"""PNG figures of a finished run directory: ``rdgraph plot RUN_DIR`` and ``[output] plots``.

Reads only the run directory's files (``diagnostics.csv``, ``final.npz``, ``config.toml``,
``summary.json``),
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
from rdgraph.output.masses import MASSES_FILE, read_vertex_masses
from rdgraph.problem.config import load_settings
from rdgraph.problem.validation import graph_from_settings

__all__ = [
    "MAX_CURVES",
    "MAX_GRAPH_VERTICES",
    "MAX_PANELS",
    "DISTRIBUTION_FILE",
    "PLOT_FILES",
    "plot_density",
    "plot_energy",
    "plot_graph",
    "plot_mass_distribution",
    "plot_masses",
    "plot_run",
    "read_diagnostics",
]

#: The figures :func:`plot_run` can write into ``RUN_DIR/plots``.
PLOT_FILES = ("masses.png", "energy.png", "density.png", "density-shared.png", "graph.png")
#: Written as well when the graph has more than :data:`MAX_CURVES` vertices: the final masses
#: of all vertices, sorted, and their histogram.
DISTRIBUTION_FILE = "mass-distribution.png"
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
    # mass_<g> only: a large graph's CSV has mass_max, mass_max_vertex, ... instead.
    return sorted((k for k in diag if k.startswith("mass_") and k[5:].isdigit()),
                  key=lambda k: int(k[5:]))


def _figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.2), share: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharex=share, sharey=share)


def _vertex_colours(n: int) -> list:
    """One colour per vertex: tab10/tab20 while they last, then evenly spaced on turbo."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](g) for g in range(n)]
    if n <= 20:
        return [colormaps["tab20"](g) for g in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


#: Vertices drawn at most in ``masses.png`` (the ones with the largest final mass).
MAX_CURVES = 20


def plot_masses(diag: dict[str, np.ndarray], path: Path, targets: np.ndarray | None = None,
                target_label: str = "Gibbs state", labels=None):
    """Vertex masses m_g(t), linear and log scale, with their limits as dashed lines.

    Args:
        diag: The columns of ``diagnostics.csv``.
        path: The PNG to write.
        targets: The vertex masses the run relaxes to (the Gibbs state's), drawn dashed in
            each vertex's colour; ``None``: not known (an older run directory).
        target_label: What the dashed lines are, for the legend.
        labels: The graph's vertex names, shown in the legend beside the indices.

    Returns:
        The matplotlib figure.
    """
    fig, axes = _figure(1, 2, size=(11, 4.2))
    t = diag["t"]
    names = _mass_columns(diag)
    final = np.array([diag[k][-1] for k in names])
    shown = np.arange(len(names))
    if len(names) > MAX_CURVES:
        shown = np.sort(np.argsort(final)[::-1][:MAX_CURVES])
    colours = _vertex_colours(len(names))
    for ax, log in zip(axes[0], (False, True), strict=True):
        for g in shown:
            values = diag[names[g]]
            keep = values > 0 if log else np.ones(values.size, dtype=bool)
            ax.plot(t[keep], values[keep], lw=1.4, color=colours[g],
                    label=None if log or shown.size > 12 else f"g = {g}" if labels is None
                    else f"g = {g} ({labels[g]})")
            if targets is not None and (targets[g] > 0 or not log):
                # Alternate the dash phase: equal limits of neighbouring vertices (a
                # symmetric problem) then show both colours instead of the last one drawn.
                ax.axhline(targets[g], color=colours[g], ls=(5 * (g % 2), (5, 5)), lw=1.2)
        if log:
            ax.set_yscale("log")
        ax.set(xlabel="t", ylabel="vertex mass $m_g(t)$" + (" (log scale)" if log else ""))
    subset = f" ({shown.size} of {len(names)}: the largest final masses)" if shown.size < len(
        names) else ""
    drift = abs(diag["mass"][-1] - diag["mass"][0]) / max(abs(diag["mass"][0]), 1e-300)
    note = (f"dashed: {target_label}" if targets is not None
            else "no limit drawn: summary.json has no gibbs_vertex_fractions")
    fig.suptitle(f"Vertex masses{subset}; {note}; total mass drift {drift:.2g}")
    if shown.size <= 12:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if targets is not None:
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], color="0.3", ls="--", lw=1.0))
            labels.append(target_label)
        axes[0, 0].legend(handles, labels, fontsize="small", ncols=2 if len(labels) > 6 else 1)
    fig.savefig(path, dpi=110)
    return fig


def plot_mass_distribution(masses: np.ndarray, path: Path, targets: np.ndarray | None = None,
                           target_label: str = "Gibbs state", labels=None):
    """How the final mass is spread over all vertices, for graphs too large for one curve
    per vertex: the masses sorted (largest first, log-log) and their histogram.

    Args:
        masses: The final vertex masses.
        path: The PNG to write.
        targets: The masses the run relaxes to, drawn sorted as a dashed line.
        target_label: What ``targets`` are, for the legend.
        labels: The graph's vertex names: the heaviest vertices are named on the curve.

    Returns:
        The matplotlib figure.
    """
    fig, axes = _figure(1, 2, size=(11, 4.2))
    rank = np.arange(1, masses.size + 1)
    ax = axes[0, 0]
    ordered = np.sort(masses)[::-1]
    keep = ordered > 0
    ax.plot(rank[keep], ordered[keep], lw=1.4, label="final")
    if targets is not None:
        limit = np.sort(targets)[::-1]
        ax.plot(rank[limit > 0], limit[limit > 0], ls="--", lw=1.2, color="0.3",
                label=target_label)
    # The top three named at their points (rank 1, 2, 3), so the winners are read off.
    for position, g in enumerate(np.argsort(-masses, kind="stable")[:3]):
        if masses[g] > 0:
            name = f"g = {g}" + (f" ({labels[g]})" if labels is not None else "")
            ax.annotate(name, (position + 1, masses[g]), fontsize="x-small",
                        xytext=(4, -4 - 8 * position), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="vertices, by final mass (rank)",
           ylabel="vertex mass $m_g(T)$")
    ax.legend(fontsize="small")
    ax = axes[0, 1]
    positive = masses[masses > 0]
    if positive.size:
        low, high = positive.min(), positive.max()
        bins = np.geomspace(low, high * (1 + 1e-12), 41) if high > low else 10
        ax.hist(positive, bins=bins)
        if high > low:
            ax.set_xscale("log")
    ax.set(xlabel="vertex mass $m_g(T)$", ylabel="vertices")
    total = masses.sum()
    top = np.sort(masses)[::-1][:MAX_CURVES].sum() / total if total else float("nan")
    fig.suptitle(f"Final mass over {masses.size} vertices; the {min(MAX_CURVES, masses.size)} "
                 f"largest hold {top:.1%}")
    fig.savefig(path, dpi=110)
    return fig


def _add_vertex_masses(diag: dict[str, np.ndarray], run_dir: Path) -> None:
    """Give ``diag`` a ``mass_<g>`` column per vertex from ``vertex_masses.bin`` when the
    CSV has only the aggregates (a large graph); the records are matched by step."""
    if _mass_columns(diag) or not (run_dir / MASSES_FILE).is_file():
        return
    try:
        steps, _, masses = read_vertex_masses(run_dir)
    except (OSError, ValueError, KeyError):
        return  # the figures then show the totals only
    row = {int(s): i for i, s in enumerate(steps)}
    index = [row.get(int(s), -1) for s in diag["step"]]
    if not steps.size or min(index) < 0:
        return
    masses = masses[index]
    for g in range(masses.shape[1]):
        diag[f"mass_{g}"] = masses[:, g]


def plot_energy(diag: dict[str, np.ndarray], path: Path, free_energy_limit: float | None = None,
                note: str = ""):
    """Free energy F(t), and its excess F(t) − F_∞ over the Gibbs state's on a log scale.

    ``F_∞`` is ``summary.json``'s ``gibbs_free_energy`` (the free energy of the Gibbs state
    with the run's component masses). Older run directories do not have it: the right panel
    then shows the relative entropy H(ρ | ρ_π) of the CSV and says why.

    Args:
        diag: The columns of ``diagnostics.csv``.
        path: The PNG to write.
        free_energy_limit: ``F_∞``, or ``None`` when the run did not record it.
        note: A line under the figure (what the limit means for this run).

    Returns:
        The matplotlib figure.
    """
    fig, axes = _figure(1, 2, size=(11, 4.2))
    t, free = diag["t"], diag["free_energy"]
    ax = axes[0, 0]
    ax.plot(t, free, label="$F(t)$")
    if free_energy_limit is not None:
        # Round-off of a limit that is 0 (e.g. V = 0, mass 1 per unit volume) shows as 0.
        shown = free_energy_limit if abs(free_energy_limit) > 1e-12 * np.abs(free).max() else 0.0
        ax.axhline(free_energy_limit, color="k", ls="--", lw=1.0,
                   label=f"$F_\\infty$ = {shown:.6g} (Gibbs state)")
    ax.set(xlabel="t", ylabel="free energy $F$", title="Free energy")
    ax.legend(fontsize="small")
    ax = axes[0, 1]
    if free_energy_limit is not None:
        values, label = free - free_energy_limit, "$F(t) - F_\\infty$"
        title = "Distance to equilibrium: $F(t) - F_\\infty$ (log scale)"
    else:
        values, label = diag["rel_entropy"], "$H(\\rho\\,|\\,\\rho_\\pi)$"
        title = ("$H(\\rho\\,|\\,\\rho_\\pi)$ (log scale): summary.json has no "
                 "gibbs_free_energy (older run), so no $F_\\infty$")
    keep = values > 0  # a log axis shows positive values only
    if keep.any():
        ax.semilogy(t[keep], values[keep])
    else:
        ax.text(0.5, 0.5, "no positive values", transform=ax.transAxes, ha="center")
    ax.set(xlabel="t", ylabel=label, title=title)
    if note:
        fig.supxlabel(note, fontsize="small")
    fig.savefig(path, dpi=110)
    return fig


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


def _slab(x: np.ndarray, level: float) -> np.ndarray:
    """The dofs within about one mesh size of the plane ``x₂ = level`` (3-D slices)."""
    # About one mesh size: the box volume per dof, to the power 1/3.
    h = float(np.prod(x.max(axis=0) - x.min(axis=0)) / x.shape[0]) ** (1 / 3)
    return np.abs(x[:, 2] - level) <= 0.6 * h


def plot_density(npz: dict[str, np.ndarray], path: Path, *, shared: bool = False,
                 masses: np.ndarray | None = None):
    """The final density of each vertex on the mesh, one panel per vertex.

    By default each panel has its own colour scale and colour bar, so that every vertex's
    density is visible however little mass it holds; ``shared`` puts all panels on one scale
    (one colour bar), which shows where the mass is. 1-D: a curve; 2-D: a colour map on a
    Delaunay triangulation of the dofs; 3-D: the same on the dofs within about one mesh size
    of the plane ``x₂ = const`` through that density's maximum (projected onto it; a scatter
    if they are too few to triangulate). With more than :data:`MAX_PANELS` vertices the
    ones with the largest final mass are drawn.

    Args:
        npz: ``final.npz``'s arrays (``x``, ``rho``, ``t``).
        path: The PNG to write.
        shared: One colour scale for all panels.
        masses: The final vertex masses, for the panel titles (their shares); default: the
            nodal sums rank the vertices and the titles give no share.

    Returns:
        The matplotlib figure.
    """
    x, rho = np.asarray(npz["x"], dtype=float), np.asarray(npz["rho"], dtype=float)
    n, dim = rho.shape[0], _dimension(x)
    ranking = masses if masses is not None else rho.sum(axis=1)
    shown = np.arange(n)
    if n > MAX_PANELS:
        shown = np.sort(np.argsort(ranking)[::-1][:MAX_PANELS])
    ncols = math.ceil(math.sqrt(shown.size))
    nrows = math.ceil(shown.size / ncols)
    side = 3.2 if ncols <= 4 else 2.4
    fig, axes = _figure(nrows, ncols, size=(side * ncols + (1.2 if shared else 0.5),
                                            side * 0.95 * nrows + 0.6))
    vmin, vmax = float(rho[shown].min()), float(rho[shown].max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    total = float(masses.sum()) if masses is not None else 0.0
    triangulations: dict[float | None, tuple] = {}

    def triangulation(level: float | None):
        """The points of the panel's plane and their triangulation (cached by plane)."""
        if level not in triangulations:
            keep = np.ones(x.shape[0], dtype=bool) if level is None else _slab(x, level)
            try:
                tri = _triangulation(x[keep, 0], x[keep, 1])
            except (ValueError, RuntimeError):
                # Fewer than three points, or all on a line, in a 3-D slice: scatter them.
                tri = None
            triangulations[level] = (keep, tri)
        return triangulations[level]

    order = np.argsort(x[:, 0], kind="stable")
    image = None
    for k in range(nrows * ncols):
        ax = axes[k // ncols, k % ncols]
        if k >= shown.size:
            ax.set_axis_off()
            continue
        g = int(shown[k])
        title = f"$\\rho_{{{g}}}$"
        if total > 0:
            title += f", mass share {masses[g] / total:.1%}"
        lo, hi = (vmin, vmax) if shared else (float(rho[g].min()), float(rho[g].max()))
        if hi <= lo:
            hi = lo + max(abs(lo), 1.0) * 1e-6
        if dim == 1:
            ax.plot(x[order, 0], rho[g, order])
            if shared:
                ax.set_ylim(vmin - 0.05 * (vmax - vmin), vmax + 0.05 * (vmax - vmin))
            ax.set_xlabel("x₀", fontsize="small")
            ax.set_ylabel("density", fontsize="small")
        else:
            level = None
            if dim == 3:
                # The plane through this density's maximum: a plane through the middle
                # of the box misses wells near the faces and corners.
                level = float(x[np.argmax(rho[g]), 2])
                title += f"\nslice x₂ = {level:.3g} (through its max)"
            keep, tri = triangulation(level)
            if tri is not None:
                image = ax.tripcolor(tri, rho[g, keep], shading="gouraud", cmap="viridis",
                                     vmin=lo, vmax=hi)
            else:
                image = ax.scatter(x[keep, 0], x[keep, 1], c=rho[g, keep], s=6,
                                   cmap="viridis", vmin=lo, vmax=hi)
            ax.set_aspect("equal")
            ax.set_xlabel("x₀", fontsize="small")
            ax.set_ylabel("x₁", fontsize="small")
            if not shared:
                bar = fig.colorbar(image, ax=ax, shrink=0.85)
                bar.set_label(f"$\\rho_{{{g}}}$", fontsize="small")
                bar.ax.tick_params(labelsize="x-small")
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelsize="x-small")
    if shared and image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="density (one scale for all panels)")
    subset = f" ({shown.size} of {n} vertices)" if shown.size < n else ""
    scale = "one colour scale" if shared else "each panel its own scale"
    if dim == 1:
        scale = "one y-scale" if shared else "each panel its own y-scale"
    t = float(npz["t"]) if "t" in npz else math.nan
    fig.suptitle(f"Final densities at t = {t:.4g}{subset}, {scale}")
    fig.savefig(path, dpi=100)
    return fig


def _layout(graph, kind: str | None, shape=None) -> dict[int, np.ndarray]:
    """Vertex positions chosen by the kind of graph (deterministic).

    Cycles on a circle, paths on a line, grids on their grid, stars with the centre in the
    middle, hypercubes by a fixed projection of their corners (bits to directions), other
    graphs by a seeded spring layout.
    """
    n = graph.n
    if kind in ("cycle", "complete") or (kind == "path" and n > 12):
        angle = 2 * np.pi * np.arange(n) / n
        return {g: np.array([np.sin(angle[g]), np.cos(angle[g])]) for g in range(n)}
    if kind == "path":
        return {g: np.array([float(g), 0.0]) for g in range(n)}
    if kind == "star":
        angle = 2 * np.pi * np.arange(n - 1) / max(n - 1, 1)
        pos = {0: np.zeros(2)}
        pos.update({g: np.array([np.sin(angle[g - 1]), np.cos(angle[g - 1])])
                    for g in range(1, n)})
        return pos
    if kind == "grid" and (shape is not None or math.isqrt(n) ** 2 == n):
        rows, cols = shape if shape is not None else (math.isqrt(n), math.isqrt(n))
        return {g: np.array([g % cols, -(g // cols)], dtype=float) for g in range(n)}
    if kind == "hypercube" and n > 1:
        dim = n.bit_length() - 1
        # Bit b moves a corner along direction b: bits 0 and 1 span a square, bit 2 shifts
        # it back and up (the usual drawing of a cube), further bits by shrinking offsets
        # in other directions, so that no two corners coincide.
        directions = [np.array([1.0, 0.0]), np.array([0.0, 1.0])][:dim]
        for b in range(2, dim):
            angle = np.pi / 4 + (b - 2) * np.pi / 3
            directions.append(0.45 ** (b - 1) * np.array([np.cos(angle), np.sin(angle)]))
        bits = (np.arange(n)[:, None] >> np.arange(dim)) & 1
        coordinates = bits @ np.array(directions)
        return {g: coordinates[g] for g in range(n)}
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_weighted_edges_from(graph.edges)
    return nx.spring_layout(G, seed=0)


#: Vertices ``graph.png`` draws with their neighbours when the graph is larger.
MAX_GRAPH_VERTICES = 60
#: The heaviest vertices ``graph.png`` keeps on a large graph.
TOP_VERTICES = 5


def plot_graph(graph, masses: np.ndarray, path: Path, kind: str | None = None,
               shape=None):
    """The graph; vertex area and colour by share of the final mass, edge width by weight.

    The layout follows ``kind`` (the ``graph.kind`` of the run: a circle for cycles, a
    projection of the cube for hypercubes, the grid for grids). A graph of more than
    :data:`MAX_GRAPH_VERTICES` vertices is shown as its :data:`TOP_VERTICES` heaviest
    vertices and their neighbours (spring layout of that subgraph).

    Returns:
        The matplotlib figure.
    """
    import networkx as nx

    total = float(masses.sum())
    share = masses / total if total > 0 else np.full(graph.n, 1.0 / graph.n)
    vertices = np.arange(graph.n)
    title = "Graph: vertex size and colour by final mass share"
    if graph.n > MAX_GRAPH_VERTICES:
        top = np.argsort(share)[::-1][:TOP_VERTICES]
        keep = set(int(g) for g in top)
        for g in top:
            keep.update(int(h) for h in graph.neighbours(int(g)))
        vertices = np.array(sorted(keep))
        title = (f"The {TOP_VERTICES} heaviest of {graph.n} vertices and their neighbours "
                 f"({vertices.size} shown)")
        kind = None
    G = nx.Graph()
    G.add_nodes_from(int(g) for g in vertices)
    G.add_weighted_edges_from(e for e in graph.edges if e[0] in G and e[1] in G)
    pos = _layout(graph, kind, shape) if vertices.size == graph.n else nx.spring_layout(
        G, seed=0)
    fig, axes = _figure(size=(6.4, 5.2))
    ax = axes[0, 0]
    weights = np.array([w for _, _, w in G.edges(data="weight")])
    widths = 0.6 + 2.4 * weights / weights.max() if weights.size else 1.0
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, edge_color="0.7")
    sizes = 120 + 2400 * share[vertices]
    nodes = nx.draw_networkx_nodes(G, pos, ax=ax, nodelist=[int(g) for g in vertices],
                                   node_size=sizes, node_color=share[vertices],
                                   cmap="viridis", vmin=0.0, vmax=max(float(share.max()), 1e-12),
                                   edgecolors="0.25", linewidths=0.6)
    if vertices.size <= 40:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        top = max(float(share.max()), 1e-12)
        for g in vertices:
            # Black on the light end of viridis, white on the dark end.
            light = sum(cmap(float(share[g]) / top)[:3]) > 1.5
            ax.text(*pos[int(g)], str(int(g)), ha="center", va="center", fontsize=9,
                    fontweight="bold", color="black" if light else "white")
    fig.colorbar(nodes, ax=ax, label="share of the final mass")
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.margins(0.12)
    ax.set_title(title, fontsize="medium")
    fig.savefig(path, dpi=110)
    return fig


def _limits(diag: dict[str, np.ndarray], settings, graph, summary: dict):
    """The vertex masses the run relaxes to and what they are, or ``(None, "")``.

    The laplacian coupling with a linear scheme has ``m' = −L m`` exactly: each component's
    masses tend to their mean. Every other flow (gibbs, upwind, jko, accelerated) relaxes
    to the Gibbs state, whose vertex fractions the run wrote into ``summary.json``.
    """
    initial = np.array([diag[k][0] for k in _mass_columns(diag)])
    if (settings is not None and graph is not None and graph.n == initial.size
            and settings.model.coupling == "laplacian" and settings.time.scheme != "accelerated"):
        limit = np.empty_like(initial)
        for component in graph.components():
            limit[component] = initial[component].mean()
        return limit, "limit of m' = −L m"
    fractions = summary.get("gibbs_vertex_fractions")
    if fractions is not None and len(fractions) == initial.size:
        return np.asarray(fractions, dtype=float) * initial.sum(), "Gibbs state"
    return None, ""


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a run still going, or an older one: the figures say what is missing
    return data if isinstance(data, dict) else {}


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the PNG figures of a run directory into ``run_dir/plots``; return their paths.

    ``density.png`` and ``density-shared.png`` need ``final.npz``, ``graph.png``
    ``config.toml``; each is skipped when its file is absent. The limits in ``masses.png``
    and ``energy.png`` come from ``summary.json`` (and ``config.toml``); without them the
    figures say so. Serial: call it on one rank.

    Raises:
        InputError: ``run_dir`` is not a run directory (no readable ``diagnostics.csv``),
            or its ``config.toml`` or ``final.npz`` is invalid.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {str(run_dir)!r} does not exist")
    diag = read_diagnostics(run_dir / "diagnostics.csv")
    _add_vertex_masses(diag, run_dir)
    masses = np.array([diag[k][-1] for k in _mass_columns(diag)])
    settings = graph = None
    if (run_dir / "config.toml").is_file():
        settings = load_settings(run_dir / "config.toml")
        graph = graph_from_settings(settings)
    summary = _read_json(run_dir / "summary.json")
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
    targets, label = _limits(diag, settings, graph, summary)
    names = graph.labels if graph is not None and graph.n == masses.size else None
    plot_masses(diag, written[0], targets, label, labels=names)
    if masses.size > MAX_CURVES:
        written.append(out / DISTRIBUTION_FILE)
        plot_mass_distribution(masses, written[-1], targets, label, labels=names)
    limit = summary.get("gibbs_free_energy")
    note = ""
    if label.startswith("limit of m'"):
        note = ("laplacian coupling: the flow ends in the Gibbs state "
                "($F(t) - F_\\infty \\to 0$) only when every $V_g$ is the same")
    plot_energy(diag, written[1], float(limit) if isinstance(limit, int | float) else None,
                note)
    if npz is not None:
        # The npz holds the last state; diagnostics.csv's last row is the same step.
        final = masses if np.isclose(float(npz.get("t", diag["t"][-1])), diag["t"][-1]) else None
        written += [out / "density.png", out / "density-shared.png"]
        plot_density(npz, written[-2], masses=final)
        plot_density(npz, written[-1], shared=True, masses=final)
    if graph is not None and graph.n == masses.size:
        written.append(out / "graph.png")
        plot_graph(graph, masses, written[-1], settings.graph.kind, settings.graph.shape)
    return written
