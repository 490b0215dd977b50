"""
Particles against finite elements
=================================

The reaction–diffusion system is the forward (Fokker–Planck) equation of a Markov process
on :math:`\\Omega \\times G`, and that process is the architecture-search algorithm itself:
a particle :math:`(x, g)` is a network with architecture :math:`g` and weights :math:`x`.
Each step of length :math:`\\tau` it takes a noisy gradient step on its loss,

.. math::

    x \\leftarrow x - \\tau \\nabla V_g(x) + \\sqrt{2\\beta\\tau}\\, \\xi,
    \\qquad \\xi \\sim N(0, I),

is reflected at the walls (the no-flux condition), and jumps to a neighbouring
architecture :math:`h` with probability about :math:`\\tau k_{gh}(x)`, with the rates of
the coupling term (``gibbs``: :math:`k_{gh} = w_{gh} e^{(V_g - V_h)/2\\beta}`). The fraction
of particles on vertex :math:`g` estimates the vertex mass fraction
:math:`\\int\\rho_g / \\sum_h \\int \\rho_h`, with binomial standard error
:math:`\\sqrt{p(1 - p)/P}`. This example runs both pictures of one small problem and
compares them. ``rdgraph particles --compare`` does the same from the command line, with a
statistical verdict in its exit status.
"""

# %%
# A small problem
# ---------------
# Three architectures on a path, one weight each (:math:`x \in [-2, 2]`), bowls around
# different optima with offsets that make architecture 2 the best.

import matplotlib.pyplot as plt
import numpy as np

import rdgraph
from rdgraph.particles.run import compare_fractions, simulate, z_limit

settings = rdgraph.settings_from_dict({
    "mesh": {"shape": "interval", "cells": [200], "lower": [-2.0], "upper": [2.0]},
    "graph": {"kind": "path", "n": 3, "weight": 1.0},
    "model": {"coupling": "gibbs", "beta": 0.2,
              "potential": "0.5*(x[0] - 0.8*(g - 1))**2 - 0.2*g",
              "initial": "1"},
    "time": {"scheme": "implicit-euler", "dt": 0.01, "t_end": 2.0},
})

# %%
# The finite-element solution
# ---------------------------
# The vertex fractions at every step, and the final densities.

sim = rdgraph.Simulation(settings)
history = sim.run()
fem_t = np.array([d.t for d in history])
fem_fractions = np.array([d.vertex_masses / d.mass for d in history])
x = sim.model.V.tabulate_dof_coordinates()[:, 0]
order = np.argsort(x)
final_density = [u.x.array[order].copy() for u in sim.functions]
total_mass = history[-1].mass
sim.destroy()

# %%
# The particles
# -------------
# :func:`rdgraph.particles.run.simulate` runs the sampler (NumPy only) with four particle
# steps per finite-element step, since both pictures carry O(τ) time errors. It returns the
# vertex fractions at 20 output times and the positions at the end.

P = 20000
result = simulate(settings, particles=P, seed=0, substeps=4, outputs=20, snapshots=1)
fem_at_outputs = fem_fractions[result.steps]
z = compare_fractions(result.fractions, fem_at_outputs, P)
print(f"{P} particles, {z.size} comparisons: max |z| = {np.abs(z).max():.2f} "
      f"(limit {z_limit(z.size):.2f})")

# %%
# Both pictures agree within the noise. The z-scores
# :math:`(\hat p - p)/\sqrt{p(1 - p)/P}` of the particle fractions against the
# finite-element ones stay below the limit ``rdgraph particles --compare`` applies (3, raised
# by Bonferroni for many comparisons, so that a correct run fails 1 % of the time), the
# fractions follow the curves (left), and the histogram of each architecture's weights
# follows its density (right, scaled to the total mass).

fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
for g in range(3):
    line, = ax.plot(fem_t, fem_fractions[:, g], label=f"FEM, g = {g}")
    ax.errorbar(result.times, result.fractions[:, g], yerr=3 * result.standard_errors[:, g],
                fmt="o", ms=3, color=line.get_color(), label=f"particles ±3 SE, g = {g}")
ax.set(xlabel="t", ylabel="vertex fraction", title="vertex fractions")
ax.legend(fontsize=7)
bins = np.linspace(-2, 2, 41)
positions, labels = result.positions[-1][:, 0], result.labels[-1]
for g in range(3):
    counts, _ = np.histogram(positions[labels == g], bins=bins)
    line, = bx.plot(x[order], final_density[g] / total_mass, label=f"FEM, g = {g}")
    bx.stairs(counts / (P * np.diff(bins)), bins, color=line.get_color(), alpha=0.6)
bx.set(xlabel="x", ylabel="density / total mass", title=f"t = {result.times[-1]:g}")
bx.legend(fontsize=7)
fig.tight_layout()
