"""All vertices' densities at the quadrature points, in batches of vertices.

``assemble_scalar(f(ρ_g) * dx)`` evaluates ``ρ_g`` at the points of the quadrature rule of
``dx`` on this rank's owned cells and sums ``w_p f(ρ_g(x_p))``, ``w_p`` the rule's weights
times ``|det J|``. Doing that for every vertex in turn costs one assembly (a kernel call per
cell, Python and MPI overhead) per vertex. Here ``ρ_g(x_p)`` comes for a batch of vertices at
once as ``B X``: ``B`` the basis functions at the points (a sparse matrix from local dofs,
owned and ghost, to points), ``X`` the batch's nodal values side by side, its ghost rows
filled by one scatter of a DOLFINx vector with the batch as its block size. The pointwise
work is then NumPy on ``(points, batch)`` arrays, and one reduction over the ranks serves all
vertices. Same points, weights and owned cells as the forms, so the values agree with the
per-vertex assembly to rounding.

Elements that need dof transformations (Lagrange degree > 2) are not handled here
(:func:`PointValues.applicable`); the caller assembles per vertex.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse

from rdgraph.compat import MPI, dolfinx

__all__ = ["BATCH_ENTRIES", "PointValues", "batch_size", "batch_slices"]

#: Entries of one ``(points, batch)`` array (8 MiB): a few of them are alive at once, and
#: larger batches gain nothing once the per-batch overhead is amortized.
BATCH_ENTRIES = 1 << 20


def batch_size(width: int) -> int:
    """Rows of a ``(batch, width)`` array of at most :data:`BATCH_ENTRIES` entries (≥ 1)."""
    return max(1, BATCH_ENTRIES // max(width, 1))


def batch_slices(count: int, width: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(count)`` whose ``(batch, width)`` arrays hold at
    most :data:`BATCH_ENTRIES` entries (at least one row each)."""
    size = batch_size(width)
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


class PointValues:
    """The tabulation ``B`` of a scalar space at quadrature points, and batches of vertices.

    Args:
        V: The scalar Lagrange space (no dof transformations).
        reference: The rule's reference points ``(q, tdim)``.
        weights: The rule's weights times ``|det J|`` at the ``q × owned cells`` points, cell
            by cell (as :meth:`rdgraph.discretization.model.Model.quadrature_points`).
        num_vertices: Number of vertices ``N``.
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, reference: np.ndarray,
                 weights: np.ndarray, num_vertices: int):
        imap = V.dofmap.index_map
        self.num_owned = imap.size_local
        local = imap.size_local + imap.num_ghosts
        table = V.element.basix_element.tabulate(0, reference)[0, :, :, 0]  # (q, dofs/cell)
        q, per_cell = table.shape
        cells = weights.size // q
        dofs = V.dofmap.list[:cells]  # the owned cells come first
        rows = np.repeat(np.arange(cells * q), per_cell)
        columns = np.repeat(dofs[:, None, :], q, axis=1).ravel()
        values = np.broadcast_to(table, (cells, q, per_cell)).ravel()
        self.tabulation = sparse.csr_array((values, (rows, columns)),
                                           shape=(cells * q, local))
        self.weights = weights
        self.num_vertices = num_vertices
        # The same batch size on every rank: the ghost scatter is collective.
        self._width = V.mesh.comm.allreduce(max(cells * q, local, 1), op=MPI.MAX)
        self.batch = min(num_vertices, batch_size(self._width))
        self._ghosted = dolfinx.la.vector(imap, self.batch)

    @staticmethod
    def applicable(V: dolfinx.fem.FunctionSpace) -> bool:
        """Whether ``B`` is one table for all cells (no dof transformations)."""
        return not V.element.needs_dof_transformations

    def batches(self) -> Iterator[slice]:
        """The vertex batches, the same on every rank (iterate collectively)."""
        return batch_slices(self.num_vertices, self._width)

    def at_points(self, blocks: np.ndarray, batch: slice) -> np.ndarray:
        """``ρ_g(x_p)`` for the vertices of ``batch``, shape ``(points, batch size)``
        (collective: the ghost values are exchanged).

        Args:
            blocks: The owned nodal values of all vertices, shape ``(N, owned dofs)``.
            batch: One of :meth:`batches`.
        """
        size = batch.stop - batch.start
        nodal = self._ghosted.array.reshape(-1, self.batch)
        nodal[: self.num_owned, :size] = blocks[batch].T
        self._ghosted.scatter_forward()
        return self.tabulation @ nodal[:, :size]

    def interpolate(self, nodal: np.ndarray) -> np.ndarray:
        """Values at the points of functions given by local nodal values (owned and ghost)
        side by side, ``(local dofs, k)`` → ``(points, k)``; no communication."""
        return self.tabulation @ nodal
