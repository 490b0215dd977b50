"""Measure the figures of the accelerated-flow section of docs/dynamics.md.

    python scripts/accelerated_study.py            # about 15 s on one core
    mpiexec -n 2 python scripts/accelerated_study.py

Prints: the one-layer Gaussian's mean and σ against the moment ODEs (γ = 0.4) on two meshes,
F − F∞ at t = 25 for the gradient flow and the accelerated flows, and the energy-law defect
of the two-layer case over Δt halvings, with Newton iterations and time per step.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.integrate import solve_ivp

from rdgraph.compat import MPI
from rdgraph.problem.config import settings_from_dict
from rdgraph.simulation import Simulation

BETA = LAMBDA = 0.04
GAUSSIAN = "exp(-(x[0] - 1)**2 / (2*0.25)) / sqrt(2*pi*0.25)"
COMM = MPI.COMM_WORLD


def say(*args) -> None:
    if COMM.rank == 0:
        print(*args, flush=True)


def config(cells, dt, t_end, time_settings, *, layers=1, lower=-8.0) -> dict:
    model = {"coupling": "laplacian", "beta": BETA, "initial": f"{1 / layers}*{GAUSSIAN}"}
    if layers == 1:
        graph, model["potential"] = {"kind": "path", "n": 1}, f"{LAMBDA / 2}*x[0]**2"
    else:
        graph = {"kind": "edges", "n": 2, "edges": [[0, 1, BETA]]}
        model["potentials"] = [f"{LAMBDA / 2}*x[0]**2", f"{LAMBDA / 2}*x[0]**2 + {BETA}*log(3)"]
    return {"mesh": {"shape": "interval", "cells": [cells], "lower": [lower], "upper": [-lower]},
            "graph": graph, "model": model, "solver": {"type": "direct"},
            "time": {"dt": dt, "t_end": t_end, **time_settings}, "output": {"fields_every": 0}}


def lumped(sim, values) -> float:
    return COMM.allreduce(sim.operators.mass_row_sums() @ values[: sim.model.num_owned])


def moments(sim) -> tuple[float, float]:
    x = sim.model.V.tabulate_dof_coordinates()[:, 0]
    rho = sim.vertex_function(0).x.array
    m0, m1, m2 = (lumped(sim, x**p * rho) for p in (0, 1, 2))
    return m1 / m0, np.sqrt(m2 / m0 - (m1 / m0) ** 2)


def gap(sim) -> float:
    """Lumped F − its minimum at the same mass (the discrete Gibbs state)."""
    V, rho = sim.model.potential_nodal(0), sim.vertex_function(0).x.array
    free = lumped(sim, BETA * rho * np.log(rho) + V * rho)
    mass, z = lumped(sim, rho), lumped(sim, np.exp(-V / BETA))
    return free - mass * BETA * (np.log(mass) - np.log(z))


def one_layer() -> None:
    rhs = lambda t, y: [y[1], -0.4 * y[1] - LAMBDA * y[0],  # noqa: E731
                        y[3], -0.4 * y[3] - LAMBDA * y[2] + BETA / y[2]]
    ref = solve_ivp(rhs, (0, 10), [1, 0, 0.5, 0], rtol=1e-11, atol=1e-13, dense_output=True)
    say("\none layer, γ = 0.4: errors against the moment ODEs")
    say(f"{'h':>6} {'dt':>6} {'t':>4} {'mean err':>10} {'σ err':>10} {'Newton avg/max':>15} "
        f"{'s/step':>7}")
    for cells, dt in ((160, 0.1), (320, 0.1)):
        sim = Simulation(settings_from_dict(
            config(cells, dt, 10.0, {"scheme": "accelerated", "damping": 0.4})), COMM)
        its, rows, start = [], [], time.perf_counter()
        while sim.step_index < sim.num_steps:
            sim.advance()
            its.append(sim.stepper.newton_iterations)
            if np.isclose(sim.t, 5.0) or np.isclose(sim.t, 10.0):
                mean, sigma = moments(sim)
                exact = ref.sol(sim.t)
                rows.append((sim.t, mean - exact[0], sigma - exact[2]))
        per_step = (time.perf_counter() - start) / sim.num_steps
        for t, em, es in rows:
            say(f"{16 / cells:>6.3g} {dt:>6.3g} {t:>4.0f} {em:>10.2e} {es:>10.2e} "
                f"{np.mean(its):>8.1f}/{max(its):<6d} {per_step:>7.4f}")
        sim.destroy()


def free_energy_gaps() -> None:
    say("\nF − F∞ at t = 25 (h = dt = 0.1)")
    cases = [("gradient flow (implicit Euler)", {"scheme": "implicit-euler"}),
             ("accelerated γ = 0.4", {"scheme": "accelerated", "damping": 0.4}),
             ("accelerated 3/t + restart", {"scheme": "accelerated", "damping": "nesterov",
                                            "restart": True}),
             ("accelerated 3/t, no restart", {"scheme": "accelerated", "damping": "nesterov"})]
    for name, settings in cases:
        sim = Simulation(settings_from_dict(config(160, 0.1, 25.0, settings)), COMM)
        while sim.step_index < sim.num_steps:
            sim.advance()
        say(f"  {name:<32} {gap(sim):.3e}")
        sim.destroy()


def energy_law() -> None:
    say("\nenergy law, two layers (log-mean), γ = 0.4, ν0 = 0: max |H' − H + 2γΔt KE|")
    defects = []
    for k in range(4):
        dt = 0.1 / 2**k
        sim = Simulation(settings_from_dict(config(
            32, dt, 1.0, {"scheme": "accelerated", "damping": 0.4, "viscosity": 0.0},
            layers=2, lower=-4.0)), COMM)
        st, worst = sim.stepper, 0.0
        h_old = st.hamiltonian()
        while sim.step_index < sim.num_steps:
            sim.advance()
            h_new = st.hamiltonian()
            worst = max(worst, abs(h_new - h_old + 2 * st.last_gamma * dt
                                   * st.midpoint_kinetic_energy()))
            h_old = h_new
        defects.append(worst)
        order = f"{np.log2(defects[-2] / worst):.2f}" if k else ""
        say(f"  dt = {dt:<8.4g} {worst:.3e} {order}")
        sim.destroy()


if __name__ == "__main__":
    one_layer()
    free_energy_gaps()
    energy_law()
