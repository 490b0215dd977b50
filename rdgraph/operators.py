"""The global operator ``A = blockdiag(K_g) + C`` of MODEL.md, assembled without N² forms.

``M`` and the vertex operators ``K_g`` are assembled once each from two compiled forms; the
graph coupling ``C`` is built from ``M`` (laplacian) or from one compiled weighted-mass
form re-assembled per directed edge (gibbs).
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
    """

    def __init__(self, model: Model, layout: BlockLayout):
        self.model = model
        self.layout = layout
        self.pattern = ScalarPattern(model.mass_form)
        graph = model.graph
        self.mass = self.pattern.assemble(model.mass_form)
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
                    weighted = w * self.pattern.assemble(model.rate_form)  # w M[k_ab]
                    blocks[a, a] += weighted
                    blocks[b, a] = -weighted
        self.blocks = blocks

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
