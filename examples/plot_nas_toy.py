"""
Architecture search as a gradient flow
======================================

This is the built-in default problem of ``rdgraph run`` on a coarser mesh: a toy neural
architecture search. Eight architectures sit on the vertices of a 3-cube, an edge joining
two architectures one network morphism apart. Architecture :math:`g` has 2-D weights
:math:`x \\in [-2, 2]^2` and a loss

.. math::

    V_g(x) = \\tfrac12 |x - c_g|^2 - d_g\\, e^{-2|x - c_g|^2},
    \\qquad d_g = 0.3 + 0.6\\, e^{-(g - 5)^2/2},

a bowl around its own optimum :math:`c_g` with a well of depth :math:`d_g`: architecture 5
has the deepest well. A population of networks, uniform at first, follows the gradient
flow of the free energy :math:`F(\\rho) = \\sum_g \\int \\beta\\rho_g\\log\\rho_g + V_g\\rho_g`
with the detailed-balance (``gibbs``) coupling: networks move down their loss with noise of
temperature :math:`\\beta = 0.1`, and jump to neighbouring architectures at rates
:math:`w\\, e^{(V_g - V_h)/2\\beta}`, which favour a lower loss at the same weights.
"""

# %%
# The settings
# ------------
# ``load_settings(None, overrides)`` starts from the built-in default (``examples/nas_toy.toml``
# writes it out) and applies ``--set``-style overrides: a 32 × 32 mesh and six time units
# keep this page quick (the default is 64 × 64 to ``t = 10``).

import matplotlib.pyplot as plt
import numpy as np

import rdgraph

settings = rdgraph.load_settings(None, ["mesh.cells=[32, 32]", "time.t_end=6.0"])
print(f"{settings.graph.kind} graph, coupling {settings.model.coupling}, "
      f"beta = {settings.model.beta}, {settings.num_steps} steps of dt = {settings.time.dt}")

# %%
# Running in memory
# -----------------
# :class:`rdgraph.Simulation` builds the mesh, the forms, the block solver and the initial
# state; :meth:`~rdgraph.Simulation.run` time-steps to ``t_end`` and returns the
# diagnostics of every step (the rows of ``diagnostics.csv``). Nothing is written to disk.

sim = rdgraph.Simulation(settings)
history = sim.run()
t = np.array([d.t for d in history])
masses = np.array([d.vertex_masses for d in history])
gibbs = history[0].mass * sim.model.gibbs_fractions
print(f"{sim.num_dofs} dofs per vertex; total mass drift "
      f"{abs(history[-1].mass - history[0].mass):.1e}")

# %%
# Where the population goes
# -------------------------
# The vertex masses :math:`m_g(t) = \int \rho_g` move from the uniform 1/8 towards the Gibbs
# state :math:`\pi_g \propto e^{-V_g/\beta}` (dashed), which puts most of the mass on
# architecture 5. The total mass is conserved to round-off, and the free energy decreases
# at every step.

fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
for g in range(sim.graph.n):
    line, = ax.plot(t, masses[:, g], label=f"g = {g}")
    ax.axhline(gibbs[g], color=line.get_color(), ls="--", lw=0.8)
ax.set(xlabel="t", ylabel="vertex mass", title="vertex masses (dashed: Gibbs state)")
ax.legend(ncol=2, fontsize=8)
bx.semilogy(t, [d.rel_entropy for d in history])
bx.set(xlabel="t", ylabel=r"$H(\rho\,|\,\rho_\pi)$", title="relative entropy to the Gibbs state")
fig.tight_layout()

# %%
# The winning architecture's weights
# ----------------------------------
# The density of architecture 5 concentrates in its well; the population on architecture 6,
# a neighbour on the cube with the second-deepest well, is still draining into it.

V = sim.model.V
xy = V.tabulate_dof_coordinates()[:, :2]
cells = V.dofmap.list
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
for ax, g in zip(axes, (5, 6), strict=True):
    image = ax.tripcolor(xy[:, 0], xy[:, 1], cells, sim.functions[g].x.array,
                         shading="gouraud")
    ax.set(title=fr"$\rho_{g}$ at t = {sim.t:g}", xlabel="x[0]", aspect="equal")
    fig.colorbar(image, ax=ax, shrink=0.8)
axes[0].set_ylabel("x[1]")
fig.tight_layout()
sim.destroy()
