"""Compare the three dynamics on the default NAS toy (issue 8): docs/dynamics.md's figures.

    python scripts/compare_dynamics.py --out docs/dynamics   # 32x32 mesh, ~10 min on 1 core
    python scripts/compare_dynamics.py --quick --out /tmp/dyn       # 16x16 mesh, t <= 12
    python scripts/compare_dynamics.py --from-json docs/dynamics/dynamics.json --out docs/dynamics
    mpiexec -n 2 python scripts/compare_dynamics.py --quick --out /tmp/dyn

Runs the built-in default problem (``rdgraph.problem.defaults``: 8 architectures on a 3-cube, gibbs
coupling, beta = 0.1) with

* the gradient flow: the default linear gibbs coupling, implicit Euler;
* the JKO scheme (``time.scheme = "jko"``, gibbs mobility: the same gradient flow);
* the accelerated flow (``time.scheme = "accelerated"``) with ``damping = "nesterov"`` and
  restart, and with a constant damping, each with the gibbs mobility and with the log-mean
  mobility (``coupling = "laplacian"``), and a small-step probe (gibbs, dt = 2e-4).

A run whose Newton solve fails (after the retries with halved dt) is kept up to its last
good step and reported with the solver's message. For the failures it also integrates the
reduced ODE of one mesh node and two vertices (scipy, Radau): the lumped accelerated flow
there, with the largest potential gap between neighbouring architectures on the mesh, which
reaches vacuum (u = log rho -> -inf) in finite time.

Free energies are lumped (vertex quadrature), with their exact discrete minimum: see
:class:`LumpedEnergy`. Writes ``dynamics.json`` (all series and figures), ``dynamics.png``
(mass of the best architecture and F - F_inf against t) and ``dynamics.md`` (the tables)
into ``--out``. Also tries Newton variants on the first accelerated step (``--no-trials``
skips them).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from rdgraph.compat import MPI
from rdgraph.errors import SolverError
from rdgraph.problem.config import settings_from_dict
from rdgraph.problem.defaults import default_config
from rdgraph.simulation import Simulation

COMM = MPI.COMM_WORLD
BEST = 5  # the architecture with the deepest well (rdgraph.problem.defaults)
LEVEL = 0.9  # concentration: mass_5 reaches LEVEL times its Gibbs-state value
GAP_TIMES = (0.25, 1.0, 5.0, 10.0)
PROBE = "accelerated, 3/t, gibbs, dt = 2e-4"
NODE_BETAS = (0.3, 0.5, 1.0)  # node ODE also at these temperatures

#: name -> (time settings, model.coupling, what it discretizes)
RUNS = {
    "gradient flow": ({"scheme": "implicit-euler"}, "gibbs",
                      "linear gibbs coupling, implicit Euler (the default run)"),
    "JKO": ({"scheme": "jko"}, "gibbs", "minimizing movement, gibbs mobility"),
    "accelerated, 3/t + restart, gibbs": (
        {"scheme": "accelerated", "damping": "nesterov", "restart": True}, "gibbs",
        "damped Hamiltonian flow, gibbs mobility"),
    "accelerated, gamma = 1, gibbs": (
        {"scheme": "accelerated", "damping": 1.0, "restart": False}, "gibbs",
        "damped Hamiltonian flow, gibbs mobility"),
    "accelerated, 3/t + restart, log-mean": (
        {"scheme": "accelerated", "damping": "nesterov", "restart": True}, "laplacian",
        "damped Hamiltonian flow, log-mean mobility"),
    "accelerated, gamma = 1, log-mean": (
        {"scheme": "accelerated", "damping": 1.0, "restart": False}, "laplacian",
        "damped Hamiltonian flow, log-mean mobility"),
    # Small steps up to the vacuum, to compare the state before the failure with the node ODE.
    PROBE: ({"scheme": "accelerated", "damping": "nesterov", "restart": False, "dt": 2e-4,
             "t_end": 0.01}, "gibbs", "damped Hamiltonian flow, gibbs mobility, small steps"),
}


def say(*args) -> None:
    if COMM.rank == 0:
        print(*args, flush=True)


def settings_for(name: str, cells: int, dt: float, t_end: float, beta: float | None = None):
    time_settings, coupling, _ = RUNS[name]
    config = default_config()
    if beta is not None:
        config["model"]["beta"] = beta  # a hotter toy: smaller gaps delta = dV/beta
    config["mesh"]["cells"] = [cells, cells]
    config["model"]["coupling"] = coupling
    config["time"] = {"dt": dt, "t_end": t_end, **time_settings}
    config["output"] = {"fields_every": 0, "plots": False}
    return settings_from_dict(config)


class LumpedEnergy:
    """The free energy with vertex quadrature (lumped mass ``m``) and its exact minimum.

    ``F_h(ρ) = Σ_g Σ_i m_i ρ_gi (β log ρ_gi + V_gi)`` is minimal at fixed mass ``M`` at
    ``ρ_gi = M exp(−V_gi/β) / Z_h``, ``Z_h = Σ_g Σ_i m_i exp(−V_gi/β)``, where it equals
    ``M β log(M / Z_h)``: so ``F_h − min F_h ≥ 0`` (Gibbs' inequality) on every mesh, for every
    scheme. The vertex fractions of that minimizer define the concentration target.
    """

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.owned = sim.model.num_owned
        self.m = sim.operators.mass_row_sums()
        self.beta = sim.settings.model.beta
        self.V = [sim.model.potential_nodal(g)[: self.owned] for g in range(sim.graph.n)]
        self.shift = COMM.allreduce(min(float(np.min(v, initial=np.inf)) for v in self.V),
                                    op=MPI.MIN)
        local = np.array([self.m @ np.exp(-(v - self.shift) / self.beta) for v in self.V])
        weights = COMM.allreduce(local, op=MPI.SUM)
        self.log_z = math.log(weights.sum()) - self.shift / self.beta
        self.fractions = weights / weights.sum()

    def gap(self) -> tuple[float, float]:
        """``(M, F_h − min F_h)`` of the simulation's current densities (collective)."""
        mass, free = 0.0, 0.0
        for v, rho in zip(self.V, self.sim.nodal_values(), strict=True):
            # Nodal undershoots of the linear schemes (if any) count as 0 in ρ log ρ.
            entropy = np.where(rho > 0, rho * np.log(np.maximum(rho, 1e-300)), 0.0)
            mass += self.m @ rho
            free += self.m @ (self.beta * entropy + v * rho)
        mass, free = COMM.allreduce(np.array([mass, free]), op=MPI.SUM)
        return float(mass), float(free - mass * self.beta * (math.log(mass) - self.log_z))


def run_one(name: str, cells: int, dt: float, t_end: float, beta: float | None = None) -> dict:
    """Time-step one dynamics to t_end or to its first unrecoverable solver failure."""
    sim = Simulation(settings_for(name, cells, dt, t_end, beta), COMM)
    energy = LumpedEnergy(sim)
    series = {"t": [], "mass_best": [], "free_energy": [], "gap": [], "min_density": []}
    failure = None

    def record() -> None:
        d = sim.diagnostics()
        series["t"].append(sim.t)
        series["mass_best"].append(float(d.vertex_masses[BEST]))
        series["free_energy"].append(d.free_energy)
        series["gap"].append(energy.gap()[1])
        series["min_density"].append(d.min_density)

    start = time.perf_counter()
    record()
    dt, t_end = sim.settings.time.dt, sim.settings.time.t_end  # the probe sets its own
    steps = round(t_end / dt)
    try:
        for _ in range(steps):
            sim.advance()
            record()
    except SolverError as e:
        failure = str(e)
    wall = COMM.allreduce(time.perf_counter() - start, op=MPI.MAX)
    mass = energy.gap()[0]
    smallest = smallest_log_density(sim) if sim.settings.time.scheme == "accelerated" else None
    fraction = float(energy.fractions[BEST])
    sim.destroy()
    target = LEVEL * fraction * mass
    pairs = zip(series["t"], series["mass_best"], strict=True)
    hit = next((t for t, m in pairs if m >= target), None)
    gaps = {}
    for t_gap in GAP_TIMES:
        index = round(t_gap / dt)
        gaps[f"{t_gap:g}"] = series["gap"][index] if index < len(series["t"]) else None
    return {"series": series, "concentration_time": hit, "target_mass": target,
            "gibbs_fraction": fraction, "failure": failure,
            "reached": series["t"][-1], "wall_seconds": wall, "gaps": gaps,
            "what": RUNS[name][2], "smallest_u": smallest, "dt": dt}


def smallest_log_density(sim: Simulation) -> dict:
    """Where u = log ρ is smallest in the accelerated stepper's last good state (collective)."""
    stepper = sim.stepper
    owned = sim.model.num_owned
    u = stepper.w.x.array.reshape(-1, 2 * stepper.n)[:owned, : stepper.n]
    local = (np.inf, 0, [0.0, 0.0], [])
    if u.size:
        i, g = np.unravel_index(int(np.argmin(u)), u.shape)
        x = stepper.W.tabulate_dof_coordinates()[i, :2]
        local = (float(u[i, g]), int(g), x.tolist(), u[i].tolist())
    value, g, x, column = min(COMM.allgather(local), key=lambda item: item[0])
    return {"u": value, "vertex": g, "x": x, "u_all": column}


#: Newton variants tried on the first step of the accelerated flow (gibbs, 3/t, dt = 0.01):
#: name -> (PETSc options under rd_acc_, step cap on max |Δu| or None, "scale" | "clip").
SOLVER_TRIALS = {
    "newtonls + bt (default)": ({}, None, None),
    "newtonls + bt, 100 its": ({"snes_max_it": 100}, None, None),
    "newtontr": ({"snes_type": "newtontr", "snes_max_it": 100}, None, None),
    "newtonls + l2": ({"snes_linesearch_type": "l2", "snes_max_it": 100}, None, None),
    "newtonls + cp": ({"snes_linesearch_type": "cp", "snes_max_it": 100}, None, None),
    "bt, step scaled to max abs(du) <= 1": ({"snes_max_it": 100}, 1.0, "scale"),
    "bt, step scaled to max abs(du) <= 3": ({"snes_max_it": 100}, 3.0, "scale"),
    "bt, du clipped to [-1, 1]": ({"snes_max_it": 100}, 1.0, "clip"),
}


def solver_trial(name: str, cells: int, dt: float = 0.01) -> dict:
    """One accelerated step (gibbs, 3/t) from the toy's start with a Newton variant, no retry."""
    options, cap, mode = SOLVER_TRIALS[name]
    settings = settings_for("accelerated, 3/t + restart, gibbs", cells, dt, dt)
    settings.solver.max_retries = 0
    sim = Simulation(settings, COMM, {f"acc_{k}": v for k, v in options.items()})
    stepper = sim.stepper
    snes = stepper.problem.solver
    if cap is not None:
        n = stepper.n

        def precheck(x, y):
            # y is the Newton direction (x_new = x - lambda y); its u components are
            # the first n of each node's 2n values.
            du = y.array.reshape(-1, 2 * n)[:, :n]
            if mode == "clip":
                np.clip(du, -cap, cap, out=du)
            else:
                largest = COMM.allreduce(float(np.max(np.abs(du), initial=0.0)), op=MPI.MAX)
                if largest > cap:
                    y.scale(cap / largest)

        snes.setLineSearchPreCheck(precheck)
    start = time.perf_counter()
    try:
        sim.advance()
    except SolverError:
        pass
    result = {"reason": int(snes.getConvergedReason()), "iterations": snes.getIterationNumber(),
              "wall_seconds": COMM.allreduce(time.perf_counter() - start, op=MPI.MAX)}
    sim.destroy()
    return result


def largest_gap(cells: int, beta: float | None = None) -> dict:
    """The largest |V_g - V_h| over the mesh nodes and the graph's edges (nodal values)."""
    sim = Simulation(settings_for("gradient flow", cells, 0.05, 0.05, beta), COMM)
    potentials = [sim.model.potential_nodal(g) for g in range(sim.graph.n)]
    coords = sim.model.V.tabulate_dof_coordinates()[: len(potentials[0])]
    local = (-1.0, 0, 0, [0.0, 0.0])
    for g, h, _ in sim.graph.edges:
        diff = np.abs(potentials[g] - potentials[h])
        if len(diff) and diff.max() > local[0]:
            i = int(np.argmax(diff))
            # Higher potential first: the node ODE's vertex 1 is the one that empties.
            high, low = (g, h) if potentials[g][i] > potentials[h][i] else (h, g)
            local = (float(diff[i]), high, low, coords[i, :2].tolist())
    gap, g, h, x = max(COMM.allgather(local), key=lambda item: item[0])
    weight = sim.settings.graph.weight
    beta = sim.settings.model.beta
    mass = 1.0 / (sim.graph.n * 16.0)  # the uniform initial density of the toy
    sim.destroy()
    return {"dV": gap, "vertices": [g, h], "x": x, "weight": weight, "beta": beta,
            "rho0": mass}


def node_ode(dv: float, beta: float, weight: float, rho0: float, mobility: str, damping,
             t_end: float = 5.0, at: float | None = None):
    """Vacuum time of one lumped node with two vertices under the accelerated flow.

    ``H = ½ θ(ρ)(S_1 − S_2)² + Σ ρ_g (β log ρ_g + V_g)``, ``V_1 − V_2 = dv``, ``ρ(0) = rho0``,
    ``S(0) = 0``: ``ρ̇ = ∂H/∂S``, ``Ṡ = −∂H/∂ρ − γ S``, in ``u = log ρ``; no restart.

    Returns:
        The time at which Radau stops because ``u_1 → −∞`` (``None`` if it reaches t_end);
        with ``at``, also ``(u_1, u_2)`` at that time.
    """
    from scipy.integrate import solve_ivp

    delta = dv / beta if mobility == "gibbs" else 0.0

    def sinhc_and_slope(y):
        if abs(y) < 1e-4:
            return 1 + y * y / 6, y / 3
        value = np.sinh(y) / y
        return value, (np.cosh(y) - value) / y

    def rhs(t, z):
        u1, u2, s1, s2 = z
        gamma = 3.0 / t if damping == "nesterov" else float(damping)
        y = (u1 - u2 + delta) / 2
        c, dc = sinhc_and_slope(y)
        e = np.exp((u1 + u2) / 2)
        theta = weight / beta * e * c
        # ∂θ/∂u_1 and ∂θ/∂u_2
        d1 = weight / beta * e * (c / 2 + dc / 2)
        d2 = weight / beta * e * (c / 2 - dc / 2)
        ds = s1 - s2
        r1, r2 = np.exp(u1), np.exp(u2)
        return [theta * ds / r1, -theta * ds / r2,
                -(0.5 * d1 * ds * ds / r1 + beta * (u1 + 1) + dv) - gamma * s1,
                -(0.5 * d2 * ds * ds / r2 + beta * (u2 + 1)) - gamma * s2]

    z0 = [math.log(rho0), math.log(rho0), 0.0, 0.0]
    t0 = 1e-9 if damping == "nesterov" else 0.0
    with np.errstate(all="ignore"):  # near vacuum exp overflows: Radau then stops
        sol = solve_ivp(rhs, (t0, t_end), z0, method="Radau", rtol=1e-9, atol=1e-12,
                        dense_output=at is not None)
    vacuum = None if sol.status == 0 else float(sol.t[-1])
    if at is None:
        return vacuum
    return vacuum, sol.sol(at)[:2].tolist()


def markdown(results: dict, node: dict, meta: dict, trials: dict) -> str:
    lines = [f"Mesh {meta['cells']}x{meta['cells']}, beta = {meta.get('beta', 0.1):g}, "
             f"dt = {meta['dt']}, t_end = {meta['t_end']}, "
             f"{meta['ranks']} rank(s). Concentration: first t with mass_{BEST} >= {LEVEL} x "
             f"its Gibbs-state value ({LEVEL} x {meta['gibbs_fraction']:.4f} of the mass). "
             "F - F_inf: lumped free energy minus its discrete minimum (negative nodal "
             "densities count as 0 in rho log rho); min density: over the whole run.", "",
             "| dynamics | concentration time | "
             + " | ".join(f"F - F_inf at t = {t:g}" for t in GAP_TIMES)
             + " | min density | reached t | wall [s] |",
             "|---|---|" + "---|" * len(GAP_TIMES) + "---|---|---|"]
    for name, r in results.items():
        hit = "not reached" if r["concentration_time"] is None else f"{r['concentration_time']:g}"
        gaps = " | ".join("-" if v is None else f"{v:.3e}" for v in r["gaps"].values())
        reached = f"{r['reached']:g}" + (" (solver failure)" if r["failure"] else "")
        low = min(r["series"]["min_density"])
        lines.append(f"| {name} | {hit} | {gaps} | {low:.2g} | {reached} | "
                     f"{r['wall_seconds']:.1f} |")
    lines += ["", "Solver failures:", ""]
    for name, r in results.items():
        if r["failure"]:
            lines.append(f"* {name}: {r['failure']}")
    lines += ["", f"Node ODE (largest neighbour gap |V_g - V_h| = {node['dV']:.3f} between "
              f"architectures {node['vertices'][0]} and {node['vertices'][1]} at x = "
              f"({node['x'][0]:g}, {node['x'][1]:g}), delta = {node['dV'] / node['beta']:.1f}, "
              f"rho0 = {node['rho0']:g}): vacuum time of the accelerated flow without restart",
              "", "| beta | delta | mobility | damping | vacuum time |", "|---|---|---|---|---|"]
    for row in node["vacuum"]:
        when = "none before t = 5" if row["time"] is None else f"{row['time']:.4g}"
        lines.append(f"| {row['beta']:g} | {node['dV'] / row['beta']:.1f} | {row['mobility']} | "
                     f"{row['damping']} | {when} |")
    for name, r in results.items():
        low = r["smallest_u"]
        if low is not None and r["reached"] > 0:
            lines.append(f"\n{name}: last good state t = {r['reached']:g}; smallest u = log rho "
                         f"{low['u']:.3f} on architecture {low['vertex']} at x = "
                         f"({low['x'][0]:g}, {low['x'][1]:g}).")
    if node.get("at_probe"):
        u1, u2 = node["at_probe"]["u"]
        lines.append(f"\nNode ODE (gibbs, 3/t) at t = {node['at_probe']['t']:g}: u_1 = {u1:.3f} "
                     f"(architecture {node['vertices'][0]}), u_2 = {u2:.3f} "
                     f"(architecture {node['vertices'][1]}).")
    if trials:
        lines += ["", "First accelerated step (gibbs, 3/t, dt = 0.01, 16x16 mesh, no retry) "
                  "with Newton variants (SNES reason < 0: diverged):", "",
                  "| Newton variant | SNES reason | iterations | wall [s] |", "|---|---|---|---|"]
        for name, r in trials.items():
            lines.append(f"| {name} | {r['reason']} | {r['iterations']} | "
                         f"{r['wall_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """mass_5(t) and F - F_inf(t) on a log time axis (t > 0), gaps below 1e-8 not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, r in results.items():
        t = np.array(r["series"]["t"])
        mass, gap = np.array(r["series"]["mass_best"]), np.array(r["series"]["gap"])
        keep = t > 0
        line, = left.plot(t[keep], mass[keep], label=name)
        shown = keep & (gap > 1e-8)
        right.plot(t[shown], gap[shown], color=line.get_color(), label=name)
        if r["failure"]:
            left.plot(t[-1:], mass[-1:], "x", color=line.get_color())
    target = next(iter(results.values()))["target_mass"]
    left.axhline(target, color="k", lw=0.8, ls=":", label=f"{LEVEL} x Gibbs value")
    left.set(xlabel="t", ylabel=f"mass of architecture {BEST}", xscale="log",
             title="concentration on the best architecture (x: solver failure)")
    right.set(xlabel="t", ylabel="F - F_inf (lumped)", xscale="log", yscale="log",
              title="free-energy gap")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, payload: dict) -> None:
    """dynamics.json, dynamics.md and dynamics.png from the collected results (rank 0)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "dynamics.json").write_text(json.dumps(payload, indent=1))
    (out / "dynamics.md").write_text(markdown(payload["runs"], payload["node_ode"],
                                              payload["meta"], payload["solver_trials"]))
    plot(payload["runs"], out / "dynamics.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16x16 mesh, t_end = 12")
    parser.add_argument("--cells", type=int, default=None, help="cells per side (default 32)")
    parser.add_argument("--dt", type=float, default=0.05)
    parser.add_argument("--t-end", type=float, default=None, help="default 20 (12 with --quick)")
    parser.add_argument("--beta", type=float, default=None,
                        help="temperature of the toy (default: the default problem's 0.1)")
    parser.add_argument("--out", type=Path, default=Path("results/dynamics"))
    parser.add_argument("--no-trials", action="store_true",
                        help="skip the Newton variants on the first accelerated step")
    parser.add_argument("--only", action="append", choices=list(RUNS), default=None,
                        help="run only these dynamics (repeatable)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="only rewrite the table and plot of a previous dynamics.json")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        if COMM.rank == 0:
            write_outputs(args.out, json.loads(args.from_json.read_text()))
        return 0
    cells = args.cells or (16 if args.quick else 32)
    t_end = args.t_end or (12.0 if args.quick else 20.0)
    if cells < 2 or args.dt <= 0 or t_end < args.dt:
        parser.error("need --cells >= 2, --dt > 0 and --t-end >= --dt")

    results = {}
    for name in args.only or RUNS:
        say(f"{name} ...")
        results[name] = r = run_one(name, cells, args.dt, t_end, args.beta)
        say(f"  concentration time {r['concentration_time']}, reached t = {r['reached']:g}, "
            f"{r['wall_seconds']:.1f} s" + (f"; FAILED: {r['failure']}" if r["failure"] else ""))

    trials = {}
    if not args.no_trials:
        for name in SOLVER_TRIALS:
            trials[name] = r = solver_trial(name, 16)
            say(f"trial {name}: SNES reason {r['reason']}, {r['iterations']} iterations")

    node = largest_gap(cells, args.beta)
    node["vacuum"] = []
    if COMM.rank == 0:
        # The toy's β with three dampings; then hotter toys (same gap): how small δ must be.
        cases = [(node["beta"], d) for d in ("nesterov", 1.0, 10.0)]
        cases += [(beta, d) for beta in NODE_BETAS for d in ("nesterov", 1.0)]
        for beta, damping in cases:
            for mobility in ("gibbs", "log-mean"):
                vacuum = node_ode(node["dV"], beta, node["weight"], node["rho0"],
                                  "gibbs" if mobility == "gibbs" else "laplacian", damping)
                node["vacuum"].append({"beta": beta, "mobility": mobility,
                                       "damping": str(damping), "time": vacuum})
        probe = results.get(PROBE)
        if probe is not None and probe["smallest_u"] is not None:
            _, values = node_ode(node["dV"], node["beta"], node["weight"], node["rho0"],
                                 "gibbs", "nesterov", at=probe["reached"])
            node["at_probe"] = {"t": probe["reached"], "u": values}
    node["vacuum"] = COMM.bcast(node["vacuum"], root=0)
    node["at_probe"] = COMM.bcast(node.get("at_probe"), root=0)

    first = next(iter(results.values()))
    meta = {"cells": cells, "dt": args.dt, "t_end": t_end, "ranks": COMM.size,
            "beta": args.beta if args.beta is not None else default_config()["model"]["beta"],
            "level": LEVEL, "best": BEST, "gibbs_fraction": first["gibbs_fraction"]}
    if COMM.rank == 0:
        payload = {"meta": meta, "runs": results, "node_ode": node, "solver_trials": trials}
        write_outputs(args.out, payload)
        print((args.out / "dynamics.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
