"""
A convergence study against an exact solution
=============================================

Two vertices joined by one edge of weight :math:`w`, no potential, the ``laplacian``
coupling on :math:`\\Omega = (0, 1)`:

.. math::

    \\partial_t \\rho_g = \\beta\\, \\partial_{xx} \\rho_g - (L\\rho)_g, \\qquad
    L = \\begin{pmatrix} w & -w \\\\ -w & w \\end{pmatrix}.

The graph eigenvector :math:`(1, -1)` has eigenvalue :math:`2w`, and the cosine is an
eigenfunction of the Neumann Laplacian, so

.. math::

    \\rho_g(x, t) = 1 + (1 - 2g)\\Bigl(\\tfrac14 e^{-2wt}
        + \\tfrac12 \\cos(\\pi x)\\, e^{-(\\beta\\pi^2 + 2w)t}\\Bigr)

solves the problem exactly. ``examples/convergence_1d.toml`` holds the config. The study
below measures the error of P1 elements in space and of three time schemes, and reads the
orders of convergence off the slopes. ``rdgraph convergence`` runs the full set of such
studies (1-D to 3-D, P1 and P2, both linear couplings; see the verification page).
"""

# %%
# The exact solution and the error
# --------------------------------
# The error is the largest nodal error over both vertices at ``t_end``: for P1 on a uniform
# mesh it converges at the same order as the L² error.

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import rdgraph

try:
    CONFIG = Path(__file__).with_name("convergence_1d.toml")
except NameError:  # run cell by cell in an interactive session started in examples/
    CONFIG = Path("convergence_1d.toml")


def exact(x: np.ndarray, t: float, g: int, beta: float, w: float) -> np.ndarray:
    return 1 + (1 - 2 * g) * (0.25 * np.exp(-2 * w * t)
                              + 0.5 * np.cos(np.pi * x) * np.exp(-(beta * np.pi**2 + 2 * w) * t))


def error(overrides: list[str]) -> float:
    """Largest nodal error at t_end of one run of the config with ``--set`` overrides."""
    settings = rdgraph.load_settings(CONFIG, ["time.t_end=0.2", *overrides])
    sim = rdgraph.Simulation(settings)
    sim.run()
    x = sim.model.V.tabulate_dof_coordinates()[:, 0]
    beta, w = settings.model.beta, settings.graph.weight
    err = max(np.abs(u.x.array - exact(x, sim.t, g, beta, w)).max()
              for g, u in enumerate(sim.functions))
    sim.destroy()
    return float(err)


def orders(sizes, errors) -> np.ndarray:
    return np.log(np.array(errors[:-1]) / errors[1:]) / np.log(np.array(sizes[:-1]) / sizes[1:])


# %%
# Space: P1 with a step small enough not to matter
# ------------------------------------------------
# Crank–Nicolson with :math:`\tau = 10^{-4}` keeps the time error far below the space error.

cells = [8, 16, 32, 64]
space = [error([f"mesh.cells=[{n}]", "time.dt=1e-4"]) for n in cells]
h = 1.0 / np.array(cells)
print("h:", h, "\nerror:", np.array(space), "\norder:", orders(h, space).round(2))

# %%
# Time: each scheme on a fine mesh
# --------------------------------
# On 2048 cells the space error (about 1e-8) is below every time error measured here.
# Implicit Euler is first order; Crank–Nicolson and BDF2 (started by one implicit Euler
# step) are second order.

steps = [0.04, 0.02, 0.01, 0.005]
schemes = ["implicit-euler", "crank-nicolson", "bdf2"]
time_errors = {s: [error(["mesh.cells=[2048]", f"time.dt={dt}", f"time.scheme={s}"])
                   for dt in steps] for s in schemes}
for s, errs in time_errors.items():
    print(f"{s:15s} order:", orders(steps, errs).round(2))

# %%
# The two studies side by side, with reference slopes.

fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
ax.loglog(h, space, "o-", label="P1, max nodal error")
ax.loglog(h, space[0] * (h / h[0]) ** 2, "k--", lw=0.8, label="slope 2")
ax.set(xlabel="h", ylabel="error", title="space")
ax.legend()
for s, errs in time_errors.items():
    bx.loglog(steps, errs, "o-", label=s)
bx.loglog(steps, time_errors["implicit-euler"][0] * (np.array(steps) / steps[0]), "k:",
          lw=0.8, label="slope 1")
bx.loglog(steps, time_errors["crank-nicolson"][0] * (np.array(steps) / steps[0]) ** 2, "k--",
          lw=0.8, label="slope 2")
bx.set(xlabel=r"$\tau$", title="time")
bx.legend(fontsize=8)
fig.tight_layout()
