"""JKO against implicit Euler: both are first-order in τ approximations of one flow.

:func:`jko_vs_implicit_euler` runs the linearized JKO step (:mod:`rdgraph.timestepping.jko`) and
implicit Euler (with mass lumping, the same vertex quadrature as the JKO step's time derivative) on
the same problem, mesh and time step, refining ``τ`` and ``h`` together (``h ∝ τ``, so the ``O(h²)``
difference between the two spatial discretizations is of higher order), and reports the lumped-L²
distance of the final states, ``sqrt(Σ_g mᵀ (ρ_jko − ρ_IE)²)``, with the observed order
``log(e_k/e_{k+1}) / log(τ_k/τ_{k+1})``; it should tend to 1. ``rdgraph convergence`` runs it (study
family ``jko``).
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

__all__ = ["JKOStudy", "STUDY_PROBLEM", "jko_vs_implicit_euler"]

# Two vertices on (0, 1) with different potentials (gibbs), a positive non-equilibrium start.
STUDY_PROBLEM = {
    "mesh": {"shape": "interval", "lower": [0.0], "upper": [1.0]},
    "space": {"degree": 1, "lumping": True},
    "graph": {"kind": "path", "n": 2, "weight": 2.0},
    "model": {
        "coupling": "gibbs",
        "beta": 0.5,
        "potentials": ["(x[0] - 0.3)**2", "0.5*(x[0] - 0.7)**2 + 0.1"],
        "initials": ["1 + 0.8*cos(pi*x[0])", "0.5 + 0.4*sin(2*pi*x[0])"],
    },
    "time": {"scheme": "implicit-euler"},
    "solver": {"type": "direct"},
    "output": {"fields_every": 0, "npz": False},
}


@dataclass
class JKOStudy:
    """Rows of the study: time steps, cells, distances and observed orders."""

    dt: list[float] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    distance: list[float] = field(default_factory=list)
    newton_per_step: list[float] = field(default_factory=list)

    @property
    def orders(self) -> list[float]:
        """Observed orders between consecutive rows (``nan`` before the first)."""
        out = [float("nan")]
        for k in range(1, len(self.dt)):
            out.append(float(np.log(self.distance[k - 1] / self.distance[k])
                             / np.log(self.dt[k - 1] / self.dt[k])))
        return out

    def table(self) -> str:
        """A Markdown table, as in the verification report."""
        lines = ["JKO vs implicit Euler (expected order 1 in tau, h ~ tau)",
                 "| tau | cells | \u2016rho_jko - rho_IE\u2016 | order | Newton/step |",
                 "|----:|------:|------:|------:|------:|"]
        columns = (self.dt, self.cells, self.distance, self.orders, self.newton_per_step)
        for row in zip(*columns, strict=True):
            dt, cells, dist, order, newton = row
            shown = "-" if np.isnan(order) else f"{order:.2f}"
            lines.append(f"| {dt:.4g} | {cells} | {dist:.3e} | {shown} | {newton:.2f} |")
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        """The rows as CSV (call on one rank)."""
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["tau", "cells", "distance", "order", "newton_per_step"])
            columns = (self.dt, self.cells, self.distance, self.orders,
                       self.newton_per_step)
            for row in zip(*columns, strict=True):
                out.writerow(["" if isinstance(v, float) and np.isnan(v) else v for v in row])

    def plot(self, path: Path) -> None:
        """Distance against τ on log axes with a slope-1 reference (call on one rank)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        tau = np.array(self.dt)
        ax.loglog(tau, self.distance, "o-", label="JKO vs implicit Euler")
        ax.loglog(tau, self.distance[-1] * tau / tau[-1], "k:", lw=0.8, label="slope 1")
        ax.set_xlabel("tau (h ~ tau)")
        ax.set_ylabel("lumped L2 distance at t_end")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)


def _final_state(config: dict, comm: MPI.Comm) -> tuple[np.ndarray, np.ndarray, float]:
    sim = Simulation(settings_from_dict(config), comm)
    try:
        newton = 0
        for _ in range(sim.num_steps):
            newton += sim.advance()
        state = sim.state.array_r.copy()
        weights = np.tile(sim.operators.mass_row_sums(), sim.graph.n)
        return state, weights, newton / sim.num_steps
    finally:
        sim.destroy()


def jko_vs_implicit_euler(steps: list[int], *, t_end: float = 0.2, cells_per_step: int = 5,
                          comm: MPI.Comm = MPI.COMM_WORLD,
                          problem: dict | None = None) -> JKOStudy:
    """Distance between the JKO and implicit-Euler solutions as ``τ = t_end/steps → 0``.

    Args:
        steps: Numbers of time steps, increasing.
        t_end: Final time.
        cells_per_step: Mesh cells per time step (``h ∝ τ``).
        comm: Communicator of the runs.
        problem: A config dict (1-D, P1, positive initial data); default ``STUDY_PROBLEM``.
    """
    study = JKOStudy()
    for n in steps:
        config = copy.deepcopy(problem or STUDY_PROBLEM)
        config["mesh"]["cells"] = [cells_per_step * n]
        config["time"].update({"dt": t_end / n, "t_end": t_end})
        config["time"]["scheme"] = "implicit-euler"
        implicit, weights, _ = _final_state(config, comm)
        config["time"]["scheme"] = "jko"
        jko, _, newton = _final_state(config, comm)
        local = float(np.sum(weights * (jko - implicit) ** 2))
        study.dt.append(t_end / n)
        study.cells.append(cells_per_step * n)
        study.distance.append(float(np.sqrt(comm.allreduce(local, op=MPI.SUM))))
        study.newton_per_step.append(newton)
    return study


if __name__ == "__main__":  # pragma: no cover - manual run
    result = jko_vs_implicit_euler([5, 10, 20, 40, 80])
    if MPI.COMM_WORLD.rank == 0:
        print(result.table())
        result.write_csv(Path("jko_vs_ie.csv"))
        result.plot(Path("jko_vs_ie.png"))
