"""
A domain from gmsh
==================

Built-in meshes are intervals, rectangles and boxes; any other domain comes from a gmsh
``.msh`` file. This example uses ``meshes/plate_hole.msh``: the plate
:math:`[-2, 2] \\times [-1, 1]` with a circular hole (1828 triangles, made from
``meshes/plate_hole.geo`` by ``scripts/make_meshes.py``). The walls of the hole are walls
like the outer ones: no flux, so the populations flow around it.

In a config file the mesh is::

    [mesh]
    shape = "file"
    file = "../meshes/plate_hole.msh"   # relative to the config file's folder

A ``.msh`` file must tag its cells with a physical group of the top dimension (DOLFINx
reads only tagged cells); 2-D meshes are read as planar, in ``x[0]`` and ``x[1]``.
"""

# %%
# The problem
# -----------
# Two architectures joined by one edge: architecture 0 has its best weights left of the
# hole, architecture 1 right of it, behind the hole, with a lower minimum. Both start
# uniform, with equal masses.

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import rdgraph

try:
    MESHES = Path(__file__).resolve().parents[1] / "meshes"
except NameError:  # run cell by cell in an interactive session started in examples/
    MESHES = Path("..", "meshes").resolve()

settings = rdgraph.settings_from_dict({
    "mesh": {"shape": "file", "file": str(MESHES / "plate_hole.msh")},
    "graph": {"kind": "path", "n": 2, "weight": 1.0},
    "model": {"coupling": "gibbs", "beta": 0.5,
              "potentials": ["0.5*((x[0] + 1.3)**2 + x[1]**2)",
                             "0.5*((x[0] - 1.3)**2 + x[1]**2) - 0.5"],
              "initial": "1"},
    "time": {"scheme": "bdf2", "dt": 0.05, "t_end": 4.0},
})

# %%
# Running it
# ----------
# Nothing changes for a mesh file: the same forms, solvers and diagnostics. ``Simulation``
# reads the mesh on every rank of its communicator and distributes it.

sim = rdgraph.Simulation(settings)
history = sim.run()
masses = np.array([d.vertex_masses / d.mass for d in history])
print(f"{sim.mesh.topology.index_map(2).size_global} triangles, {sim.num_dofs} dofs per vertex")
print(f"vertex fractions at t = 0: {masses[0].round(3)}, at t = {sim.t:g}: {masses[-1].round(3)},"
      f" Gibbs state: {sim.model.gibbs_fractions.round(3)}")

# %%
# The mesh and the final densities
# --------------------------------
# With the ``gibbs`` coupling the state tends to :math:`\rho_g \propto e^{-V_g/\beta}`:
# architecture 1, whose bowl is lower, gains mass on its way to the Gibbs fractions printed
# above, and each density gathers in its own bowl, the right one bent around the hole.

V = sim.model.V
xy = V.tabulate_dof_coordinates()[:, :2]
cells = V.dofmap.list
fig, axes = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True)
axes[0].triplot(xy[:, 0], xy[:, 1], cells, lw=0.3, color="0.3")
axes[0].set(title="plate_hole.msh", aspect="equal")
top = max(u.x.array.max() for u in sim.functions)
for g, ax in enumerate(axes[1:]):
    image = ax.tripcolor(xy[:, 0], xy[:, 1], cells, sim.functions[g].x.array,
                         shading="gouraud", vmin=0, vmax=top)
    ax.set(title=fr"$\rho_{g}$ at t = {sim.t:g}", aspect="equal")
fig.colorbar(image, ax=axes, shrink=0.6, label="density")
sim.destroy()
