"""The global operator ``A = blockdiag(K_g) + C`` of MODEL.md, assembled without N² forms.

``M`` and the vertex operators ``K_g`` are assembled once each from two compiled forms; the
graph coupling ``C`` is built from ``M`` (laplacian) or from one compiled weighted-mass
form re-assembled per directed edge (gibbs).

With ``lumping`` the mass matrix (time derivative, and the laplacian coupling ``L ⊗ M``) and
the weighted mass matrices of the gibbs rates are replaced by their row sums on the diagonal.
Row sums are unchanged, so vertex masses and the exact conservation of total mass are too.
For P1 the lumped system ``M_L + τ K`` is an M-matrix when the mesh Péclet number
``|∇V| h / β`` is moderate, so the step keeps densities non-negative even for time steps far
below ``h² / β``, where the consistent mass matrix produces undershoots. The price: the
consistent mass is superconvergent for the time derivative, the lumped one adds an
``O(h²)`` quadrature error (P1 keeps its orders; for P2 lumping is not positive and is
not recommended).
"""

from __future__ import annotations

import numpy as np

from rdgraph.blocks import BlockLayout, ScalarPattern
from rdgraph.compat import PETSc
from rdgraph.model import Model

__all__ = ["BlockOperators"]


class BlockOperators:
    """Values of the mass matrix and of every block of ``A`` on the shared scalar pattern.

    Args:
        model: The model whose forms are assembled.
        layout: The block layout of the unknowns.
        lumping: Replace the mass and weighted-mass matrices by their row-sum diagonals.
    """

    def __init__(self, model: Model, layout: BlockLayout, lumping: bool = False):
        self.model = model
        self.layout = layout
        self.pattern = ScalarPattern(model.mass_form)
        self.lumping = lumping
        graph = model.graph
        self._diagonal = self._diagonal_positions() if lumping else None
        self.mass = self._lumped(self.pattern.assemble(model.mass_form))
        blocks: dict[tuple[int, int], np.ndarray] = {}
        for g in range(graph.n):
            model.set_vertex(g)
            blocks[g, g] = self.pattern.assemble(model.stiffness_form)
        if model.coupling == "laplacian":
            # C = L ⊗ M
            for g, h, w in graph.edges:
                blocks[g, g] += w * self.mass
                blocks[h, h] += w * self.mass
                blocks[g, h] = -w * self.mass
                blocks[h, g] = -w * self.mass
        else:
            # C_gg = Σ_h w_gh M[k_gh],  C_gh = -w_gh M[k_hg],  k_gh = exp((V_g - V_h)/2β)
            for g, h, w in graph.edges:
                for a, b in ((g, h), (h, g)):
                    model.set_vertex(a, b)
                    weighted = w * self._lumped(self.pattern.assemble(model.rate_form))
                    blocks[a, a] += weighted
                    blocks[b, a] = -weighted
        self.blocks = blocks

    def _diagonal_positions(self) -> np.ndarray:
        """Index in the CSR value array of each owned row's diagonal entry."""
        start = self.pattern.row_start
        rows = np.repeat(np.arange(len(self.pattern.indptr) - 1), np.diff(self.pattern.indptr))
        positions = np.flatnonzero(self.pattern.indices == rows + start)
        if len(positions) != len(self.pattern.indptr) - 1:
            raise RuntimeError("the scalar pattern lacks diagonal entries")
        return positions

    def _lumped(self, values: np.ndarray) -> np.ndarray:
        """Row sums on the diagonal, zero elsewhere (same pattern), if lumping is on."""
        if not self.lumping:
            return values
        lumped = np.zeros_like(values)
        lumped[self._diagonal] = np.add.reduceat(values, self.pattern.indptr[:-1])
        return lumped

    def matrix(self, mass_coefficient: float, operator_coefficient: float) -> PETSc.Mat:
        """The monolithic matrix ``a (I ⊗ M) + b A``."""
        combined = {}
        for (g, h), values in self.blocks.items():
            combined[g, h] = operator_coefficient * values
            if g == h and mass_coefficient != 0:
                combined[g, h] = combined[g, h] + mass_coefficient * self.mass
        if operator_coefficient == 0:
            combined = {(g, g): mass_coefficient * self.mass for g in range(self.layout.num_blocks)}
        return self.layout.matrix(self.pattern, combined)

    def mass_row_sums(self) -> np.ndarray:
        """``M 1`` on the owned dofs: vertex masses are its dot product with each block."""
        sums = np.zeros(self.layout.size_local)
        np.add.at(sums, np.repeat(np.arange(len(sums)), np.diff(self.pattern.indptr)), self.mass)
        return sums

    def destroy(self) -> None:
        self.pattern.destroy()
