"""The ``--compare`` figure: vertex masses of particles and FEM, and positions vs density.

Rank 0 only, matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rdgraph.particles.result import ParticleResult

__all__ = ["bin_fractions", "chi_square", "plot_comparison"]

# Vertices shown in the density panels: the heaviest at the final time.
_SHOWN = 3
# Vertex curves in the fractions panel, at most.
_CURVES = 20


def bin_fractions(points: np.ndarray, density: np.ndarray, bins: list[np.ndarray]) -> np.ndarray:
    """Integrals of the FEM density over histogram bins (1-D or 2-D tensor bins).

    The density is the piecewise-linear interpolant of the nodal values (P1: the FEM
    function itself; higher degrees: its nodal interpolant), integrated by the midpoint rule
    on 16 (1-D) or 8 × 8 (2-D) sub-cells per bin.
    """
    if len(bins) == 1:
        edges = bins[0]
        sub = 16
        fine = np.linspace(edges[0], edges[-1], (edges.size - 1) * sub + 1)
        mid = 0.5 * (fine[1:] + fine[:-1])
        values = np.interp(mid, points[:, 0], density) * np.diff(fine)
        return values.reshape(edges.size - 1, sub).sum(axis=1)
    from matplotlib.tri import LinearTriInterpolator, Triangulation

    sub = 8
    fine = [np.linspace(e[0], e[-1], (e.size - 1) * sub + 1) for e in bins]
    mids = [0.5 * (f[1:] + f[:-1]) for f in fine]
    gx, gy = np.meshgrid(*mids, indexing="ij")
    interpolate = LinearTriInterpolator(Triangulation(points[:, 0], points[:, 1]), density)
    values = np.ma.filled(interpolate(gx, gy), 0.0) * np.outer(*[np.diff(f) for f in fine])
    shape = (bins[0].size - 1, sub, bins[1].size - 1, sub)
    return values.reshape(shape).sum(axis=(1, 3))


def chi_square(counts: np.ndarray, expected: np.ndarray, minimum: float = 5.0) -> float:
    """Pearson's χ² per degree of freedom over bins expecting at least ``minimum`` particles.

    About 1 when the particle histogram is a sample of the FEM density; the bins are a
    few of many (one vertex), so the statistic is χ²/dof over those bins, not a test of
    the whole law.
    """
    counts, expected = np.ravel(counts), np.ravel(expected)
    used = expected >= minimum
    if used.sum() < 2:
        return float("nan")
    return float(np.sum((counts[used] - expected[used]) ** 2 / expected[used]) / used.sum())


def plot_comparison(path: Path, result: ParticleResult, fem_dir: Path) -> dict[int, float]:
    """Write the comparison figure.

    Top: vertex fractions over time, FEM as lines, particles as points with 3-SE bars (every
    vertex up to 20, else the 20 heaviest at the end).
    Below, for the heaviest vertices at the final time: 1-D, a histogram of the particle
    positions against the FEM density; 2-D, the particle histogram above the FEM density on
    one colour scale. Densities are per unit total mass (a particle carries mass 1/P). 3-D
    runs get the top panel only.

    Args:
        path: The PNG to write.
        result: The particle result (with its comparison).
        fem_dir: The FEM run directory (its ``final.npz`` and ``summary.json``).

    Returns:
        For each vertex shown with a histogram, Pearson's χ²/dof of its particle histogram
        against the FEM density (see :func:`chi_square`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparison = result.comparison
    fem = np.load(fem_dir / "final.npz")
    total_mass = json.loads((fem_dir / "summary.json").read_text())["final_mass"]
    points, rho = fem["x"], fem["rho"]
    x, labels = result.positions[-1], result.labels[-1]
    dim = x.shape[1]
    shown = np.argsort(result.fractions[-1])[::-1][: min(_SHOWN, result.fractions.shape[1])]
    rows = {1: 2, 2: 3}.get(dim, 1)
    fig = plt.figure(figsize=(4.8 * len(shown), 3.6 * rows), constrained_layout=True)
    grid = fig.add_gridspec(rows, len(shown))

    ax = fig.add_subplot(grid[0, :])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # One curve per vertex up to _CURVES, else the heaviest _CURVES at the end (as the FEM
    # run's plots): thousands of curves are unreadable and slow to draw.
    curves = np.argsort(-result.fractions[-1], kind="stable")[:_CURVES]
    for g in sorted(curves.tolist()):
        c = colours[g % len(colours)]
        ax.plot(result.times, comparison.fem_fractions[:, g], color=c, lw=1.2)
        ax.errorbar(result.times, result.fractions[:, g], yerr=3 * result.standard_errors[:, g],
                    fmt="o", ms=3, color=c, capsize=2, label=f"g = {g}")
    k, g = comparison.worst
    ax.set_title(f"vertex masses / total: FEM (lines), {result.particles} particles (± 3 SE); "
                 f"max |z| = {comparison.max_abs_z:.2f} (g = {g}, t = {result.times[k]:.3g})")
    ax.set_xlabel("t")
    ax.set_ylabel("fraction")
    ax.legend(ncol=min(8, len(curves)), fontsize="small")

    fem_mass = comparison.fem_fractions[-1]
    # The mesh's corners are dof points: the FEM points span the box.
    lower, upper = points.min(axis=0), points.max(axis=0)
    t = result.snapshot_times[-1]
    chi2 = {}
    for j, g in enumerate(shown):
        # FEM density per unit total mass: the nodal values over the total mass.
        density = rho[g] / total_mass
        if dim == 1:
            ax = fig.add_subplot(grid[1, j])
            bins = np.linspace(lower[0], upper[0], 41)
            counts, _ = np.histogram(x[labels == g, 0], bins=bins)
            chi2[int(g)] = chi_square(
                counts, result.particles * bin_fractions(points, density, [bins]))
            width = np.diff(bins)
            ax.bar(bins[:-1], counts / (result.particles * width), width=width, align="edge",
                   alpha=0.5, label="particles")
            ax.plot(points[:, 0], density, "k-", lw=1.2, label="FEM")
            ax.set_title(f"g = {g}, t = {t:.3g}: FEM mass {fem_mass[g]:.3f}, "
                         f"χ²/dof {chi2[int(g)]:.2f}", fontsize="medium")
            ax.set_xlabel("x[0]")
            ax.set_ylabel("density / total mass")
            ax.legend(fontsize="small")
        elif dim == 2:
            bins = [np.linspace(lower[i], upper[i], 33) for i in range(2)]
            counts, _, _ = np.histogram2d(x[labels == g, 0], x[labels == g, 1], bins=bins)
            chi2[int(g)] = chi_square(
                counts, result.particles * bin_fractions(points, density, bins))
            hist = counts / (result.particles * np.diff(bins[0])[0] * np.diff(bins[1])[0])
            top = max(float(hist.max()), float(density.max()), 1e-300)
            ax = fig.add_subplot(grid[1, j])
            image = ax.pcolormesh(bins[0], bins[1], hist.T, vmin=0, vmax=top, cmap="viridis")
            ax.set_title(f"g = {g}, t = {t:.3g}: particles (χ²/dof {chi2[int(g)]:.2f})",
                         fontsize="medium")
            ax.set(xlabel="x[0]", ylabel="x[1]", aspect="equal")
            fig.colorbar(image, ax=ax, shrink=0.8).set_label("density / mass", fontsize="small")
            ax = fig.add_subplot(grid[2, j])
            image = ax.tripcolor(points[:, 0], points[:, 1], density, vmin=0, vmax=top,
                                 shading="gouraud", cmap="viridis")
            ax.set_title(f"g = {g}: FEM density (mass {fem_mass[g]:.3f})", fontsize="medium")
            ax.set(xlabel="x[0]", ylabel="x[1]", aspect="equal")
            fig.colorbar(image, ax=ax, shrink=0.8).set_label("density / mass", fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return chi2
