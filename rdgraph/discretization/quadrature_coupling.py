"""The gibbs coupling with weighted-mass rates, applied at the quadrature points.

The gibbs blocks of docs/model.md are ``C_gh = −w_gh M[k_hg]`` and
``C_gg = Σ_h w_gh M[k_gh]`` with ``k_gh = exp((V_g − V_h)/2β) = a_g / a_h``,
``a_g = exp(V_g/2β)``. With ``B`` the basis functions at the quadrature points of the owned
cells and ``W`` the quadrature weights times ``|det J|``, ``M[k] = Bᵀ W diag(k) B``, so for a
block vector ``X``

    (C X)_g = Bᵀ W [ a_g (Σ_h w_gh / a_h) (B X)_g − (1/a_g) Σ_h w_gh a_h (B X)_h ].

This is the rule the assembled forms use, so the product equals the per-edge matrices to
round-off, but what is stored is ``B``, ``Bᵀ`` and a few ``(N × points)`` arrays: memory
linear in N whatever the number of edges. Per-edge matrices are cheaper for sparse graphs
(a path has N − 1 edges) and on meshes with many points per dof (3-D), so
:func:`quadrature_is_smaller` compares the two.

``a_g`` is scaled per point by ``exp(−c(x)/2β)``, ``c`` the mid-range of the ``V_g(x)``: rates
are ratios, so they do not change, and ``a_g`` stays in range as long as
``max_g V_g − min_g V_g ≤ 2β × 700``.
"""

from __future__ import annotations

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.blocks import dense_columns
from rdgraph.errors import InputError

__all__ = ["QuadratureCoupling", "QuadratureNotApplicable", "quadrature_is_smaller"]

# Points per chunk of the pointwise work: a few (N × chunk) buffers stay in cache.
_CHUNK = 4096
# Largest spread of V_g(x)/2β over the vertices at one point: the rates reach exp(spread).
_MAX_SPREAD = 700.0


class QuadratureNotApplicable(InputError):
    """The element or the potentials do not allow the quadrature form (see the message)."""


def quadrature_is_smaller(num_edges: int, num_vertices: int, pattern_nnz: int,
                          num_points: int, dofs_per_cell: int) -> bool:
    """Whether the quadrature form stores less than one weighted mass matrix per edge.

    Per directed edge: the values (8 bytes per pattern entry) and the PETSc matrix made from
    them (12 bytes). Quadrature: five ``(N × points)`` arrays, and ``B`` and ``Bᵀ``.
    Arguments are global counts, so every rank decides alike.
    """
    per_edge = 20.0 * 2 * num_edges * pattern_nnz
    quadrature = 40.0 * num_vertices * num_points + 24.0 * num_points * dofs_per_cell
    return quadrature < per_edge


class QuadratureCoupling:
    """``X ↦ C X`` for the gibbs weighted-mass coupling, from the quadrature points.

    Args:
        model: The model (:class:`rdgraph.discretization.model.Model`), gibbs with
            weighted-mass rates.
        layout: The block layout of the unknowns.

    Raises:
        QuadratureNotApplicable: The element needs dof transformations (Lagrange degree
            > 2), or the potentials spread too far at some point for the scaled ``a_g``.
    """

    def __init__(self, model, layout):
        V, comm = model.V, layout.comm
        if V.element.needs_dof_transformations:
            raise QuadratureNotApplicable(
                "the quadrature gibbs coupling needs an element without dof transformations "
                f"(Lagrange degree <= 2), got degree {model.degree}")
        reference, coordinates, weights = model.quadrature_points()
        # V_g at the points; kept only when β may change (a temperature schedule), to
        # recompute the a_g.
        potentials = np.array(model.potentials_at(coordinates), dtype=np.float64)
        largest, smallest = potentials.max(axis=0, initial=-np.inf), potentials.min(
            axis=0, initial=np.inf)
        # The rates spread most at the smallest β of the run.
        beta_min = min(model.beta_range)
        spread = comm.allreduce(float(np.max(largest - smallest, initial=0.0)), op=MPI.MAX)
        spread /= 2 * beta_min
        if not np.isfinite(spread) or spread > _MAX_SPREAD:
            raise QuadratureNotApplicable(
                f"the quadrature gibbs coupling needs (max_g V_g - min_g V_g) / (2 beta) <= "
                f"{_MAX_SPREAD:g} at every point, got {spread:.4g}; use "
                "solver.gibbs_coupling = 'per-edge'")
        self._potentials = potentials if len(set(model.beta_range)) > 1 else None
        self._weights = weights
        N = layout.num_blocks
        edges = model.graph.edges
        # Dense graphs: one small matrix product per chunk; sparse ones: a row update per
        # directed edge.
        self._graph = model.graph.weights if model.graph.dense else None
        self._directed = [(g, h, w) for g, h, w in edges] + [(h, g, w) for g, h, w in edges]
        self.scale = potentials if self._potentials is None else np.empty_like(potentials)
        self.leaving_weight = np.zeros_like(self.scale)
        self.gain_weight = np.empty_like(self.scale)
        self.set_beta(model.beta_value, potentials)
        width = min(_CHUNK, weights.size)
        self._scaled, self._gains = np.empty((N, width)), np.zeros((N, width))
        self._row = np.empty(width)
        self.tabulation = self._tabulation(V, reference, weights.size, layout)
        self.tabulation_transposed = self.tabulation.transpose(PETSc.Mat())  # a new matrix
        # The blocks, and the weighted values at the points, as columns of dense matrices.
        self._columns, self._dense = dense_columns((layout.size_local, layout.size_global), N,
                                                   comm)
        self._at_points = self.tabulation.matMult(self._dense)
        self._weighted, self._weighted_dense = dense_columns(
            (weights.size, PETSc.DETERMINE), N, comm)
        self._result = self.tabulation_transposed.matMult(self._weighted_dense)

    def set_beta(self, beta: float, potentials: np.ndarray | None = None) -> None:
        """Recompute the ``a_g = exp(V_g/2β)`` at the points for a new β.

        Args:
            beta: The temperature.
            potentials: The centred ``V_g`` at the points (default: the stored ones).
        """
        if potentials is None:
            potentials = self._potentials
        exponents = np.divide(potentials, 2 * beta, out=self.scale)
        exponents -= 0.5 * (exponents.max(axis=0, initial=-np.inf)
                            + exponents.min(axis=0, initial=np.inf))
        np.exp(exponents, out=self.scale)  # a_g at the points, (N, P)
        # W / a_g and W a_g Σ_h w_gh / a_h: what multiplies the gains and B X per vertex.
        np.divide(self._weights, self.scale, out=self.gain_weight)
        inverse = 1.0 / self.scale
        self.leaving_weight[:] = 0.0
        for g, h, w in self._directed:
            self.leaving_weight[g] += w * inverse[h]
        self.leaving_weight *= self.scale
        self.leaving_weight *= self._weights

    @staticmethod
    def _tabulation(V, reference: np.ndarray, num_points: int, layout) -> PETSc.Mat:
        """``B``: row ``p`` holds the basis functions' values at point ``p`` (owned cells)."""
        table = V.element.basix_element.tabulate(0, reference)[0, :, :, 0]  # (q, dofs/cell)
        q, per_cell = table.shape
        cells = num_points // q
        imap = V.dofmap.index_map
        dofs = imap.local_to_global(V.dofmap.list[:cells].ravel()).reshape(cells, per_cell)
        order = np.argsort(dofs, axis=1)  # PETSc rows hold sorted columns
        columns = np.take_along_axis(dofs, order, axis=1)
        values = table[np.arange(q)[None, :, None], order[:, None, :]]  # (cells, q, dofs)
        indices = np.repeat(columns[:, None, :], q, axis=1).ravel()
        indptr = np.arange(0, indices.size + 1, per_cell)
        B = PETSc.Mat().createAIJ(
            size=((num_points, PETSc.DETERMINE), (layout.size_local, layout.size_global)),
            csr=(indptr.astype(PETSc.IntType), indices.astype(PETSc.IntType), values.ravel()),
            comm=layout.comm)
        B.assemble()
        return B

    def apply(self, blocks: np.ndarray) -> np.ndarray:
        """``C X`` for ``X`` of shape ``(N, owned dofs)``; a view valid until the next call."""
        self._columns.T[:] = blocks
        self.tabulation.matMult(self._dense, result=self._at_points)
        at_points = self._at_points.getDenseArray().T  # (N, P) view of B X
        weighted = self._weighted.T
        # Chunks of points small enough for the pointwise work to stay in cache.
        for start in range(0, at_points.shape[1], _CHUNK):
            chunk = slice(start, start + _CHUNK)
            self._pointwise(at_points[:, chunk], weighted[:, chunk], chunk)
        self.tabulation_transposed.matMult(self._weighted_dense, result=self._result)
        return self._result.getDenseArray().T

    def _pointwise(self, at_points: np.ndarray, out: np.ndarray, chunk: slice) -> None:
        """``out = a_g (Σ_h w_gh/a_h) W P_g − (W/a_g) Σ_h w_gh a_h P_h`` on a chunk of points."""
        width = at_points.shape[1]
        scaled, gains = self._scaled[:, :width], self._gains[:, :width]
        np.multiply(self.scale[:, chunk], at_points, out=scaled)
        np.multiply(self.leaving_weight[:, chunk], at_points, out=out)
        if self._graph is not None:
            np.matmul(self._graph, scaled, out=gains)
        else:
            gains[:] = 0.0
            row = self._row[:width]
            for g, h, w in self._directed:
                gains[g] += np.multiply(scaled[h], w, out=row)
        gains *= self.gain_weight[:, chunk]
        out -= gains

    def destroy(self) -> None:
        for obj in (self.tabulation, self.tabulation_transposed, self._dense, self._at_points,
                    self._weighted_dense, self._result):
            obj.destroy()
