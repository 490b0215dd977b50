"""The global operator ``A = blockdiag(K_g) + C`` of docs/model.md, assembled without N² forms.

``M`` and the vertex operators ``K_g`` come from two compiled forms (one ``K`` for all
vertices when the potential does not depend on ``g``; ``β S + Σ_k c_k(g) D[φ_k]`` from
``1 + r`` assemblies, formed per vertex only on demand, when the potentials are a sum of
``r < N`` shared functions, see :mod:`rdgraph.problem.separable`); the gibbs coupling from one
more weighted-mass form assembled per directed edge, or, where that stores less, applied from
the quadrature points (:mod:`rdgraph.discretization.quadrature_coupling`). Everything else lives
as value arrays on the shared scalar pattern. The laplacian coupling ``C = L ⊗ M`` is never stored:
it is applied from ``M`` and the graph's weights. From these pieces :class:`BlockOperators`
builds either an assembled monolithic matrix (for direct solvers and PETSc preconditioners
that need entries) or a matrix-free PETSc shell (memory linear in N, for every coupling but
the per-edge gibbs form on dense graphs).

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

import logging
import time

import basix
import numpy as np
from scipy import sparse

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.blocks import BlockLayout, ScalarPattern, dense_columns
from rdgraph.discretization.model import Model
from rdgraph.discretization.quadrature_coupling import (
    QuadratureCoupling,
    QuadratureNotApplicable,
    quadrature_is_smaller,
)
from rdgraph.errors import InputError

__all__ = ["SETUP_PROGRESS_SECONDS", "BlockOperators", "BlockShell"]

#: Long set-up loops report to the ``rdgraph.setup`` logger every this many seconds (printed
#: on rank 0 by the run's set-up progress).
SETUP_PROGRESS_SECONDS = 3.0
_SETUP_LOG = logging.getLogger("rdgraph.setup")


class BlockOperators:
    """The pieces of ``a (I ⊗ M) + b A`` on the shared scalar pattern.

    Attributes:
        mass: Values of ``M``.
        stiffness: Values of ``K_g`` per vertex (the same array for all when equal).
        diagonal: Values of ``K_g + C_gg`` per vertex.
        off_diagonal: gibbs only: values of ``C_gh`` per directed edge ``(g, h)``.
        equal_vertex_operators: Every ``K_g`` is the same.

    Args:
        model: The model whose forms are assembled.
        layout: The block layout of the unknowns.
        lumping: Replace the mass and weighted-mass matrices by their row-sum diagonals.
        gibbs_coupling: gibbs with weighted-mass rates: one matrix per directed edge
            (``"per-edge"``), the coupling applied from the quadrature points
            (``"quadrature"``, :mod:`rdgraph.discretization.quadrature_coupling`), or whichever
            stores less (``"auto"``).
    """

    def __init__(self, model: Model, layout: BlockLayout, lumping: bool = False,
                 gibbs_coupling: str = "auto"):
        self.model = model
        self.layout = layout
        self.graph = model.graph
        self.coupling = model.coupling
        self.pattern = ScalarPattern(model.mass_form)
        self.lumping = lumping
        n = self.graph.n
        self._diagonal_index = self.diagonal_positions() if lumping else None
        self.mass = self._lumped(self.pattern.assemble(model.mass_form))
        self.equal_vertex_operators = model.shared_potential
        if self.equal_vertex_operators:
            model.set_vertex(0)
            shared = self.pattern.assemble(model.stiffness_form)
            self.stiffness = [shared] * n
        elif model.potential_separation is not None:
            self.stiffness = self._separated_stiffness()
        else:
            self.stiffness = []
            started = reported = time.perf_counter()
            for g in range(n):
                model.set_vertex(g)
                self.stiffness.append(self.pattern.assemble(model.stiffness_form))
                if (now := time.perf_counter()) - reported > SETUP_PROGRESS_SECONDS:
                    reported = now
                    _SETUP_LOG.info("vertex operators: %d of %d assembled (%.0f s)", g + 1, n,
                                    now - started)
        self.off_diagonal: dict[tuple[int, int], np.ndarray] = {}
        # gibbs with gibbs_rates = "nodal": w_gh k_gh at the local dofs, per directed edge.
        self.rate_vectors: dict[tuple[int, int], np.ndarray] | None = None
        self.leaving_rates: np.ndarray | None = None  # Σ_h w_gh k_gh per vertex, nodal
        self.quadrature_coupling: QuadratureCoupling | None = None
        #: The β the values are assembled for (see :meth:`set_beta`).
        self.beta = model.beta_value
        self._beta_parts = None  # (β0, S, [(array, its values at β0)]), made on first change
        #: The coupling as ``C = L̄ ⊗ M`` with a sparse N × N graph matrix ``L̄``, where its
        #: rates are constants: laplacian (``L̄ = L``), and gibbs with potentials that differ by
        #: constants only (``L̄`` the vertex chain). ``None`` otherwise.
        self.chain: sparse.csr_array | None = None
        if self.coupling == "laplacian":
            self.chain = self.graph.laplacian(sparse_format=True).tocsr()
        elif (self.coupling == "gibbs" and model.same_stiffness and gibbs_coupling == "auto"
              and model.beta_range[0] == model.beta_range[1]):
            # Under a temperature schedule the rates change with β (:meth:`set_beta` updates
            # the per-edge matrices), so the chain is only for a fixed β.
            self.chain = self._constant_rate_chain()
        if self.coupling == "laplacian" and isinstance(self.stiffness, _Combined):
            # diag_g = β S + d_g M + Σ_k c_k(g) D[φ_k]: formed on demand, never N at once.
            diffusion, *drifts = self.stiffness.parts
            self.diagonal = _Combined([diffusion, self.mass, *drifts],
                                      np.column_stack([self.graph.degrees(),
                                                       self.stiffness.weights]))
        elif self.coupling == "laplacian":
            degrees = self.graph.degrees()
            # C = L ⊗ M: C_gg = d_g M; the off-diagonal -w_gh M is applied, not stored.
            # Vertices with the same K and degree share one array (and one scalar matrix).
            shared: dict[tuple[int, float], np.ndarray] = {}
            self.diagonal = []
            for g in range(n):
                key = (id(self.stiffness[g]), float(degrees[g]))
                if key not in shared:
                    shared[key] = self.stiffness[g] + degrees[g] * self.mass
                self.diagonal.append(shared[key])
        elif self.chain is not None:
            # gibbs with constant rates: every weighted mass matrix is k_gh M, so C = L̄ ⊗ M
            # as for laplacian: C_gg = L̄_gg M, the off-diagonal blocks applied, not stored.
            leaving = self.chain.diagonal()
            self.diagonal = _PerVertex(lambda g: self.stiffness[g] + leaving[g] * self.mass, n)
        elif self.coupling == "upwind":
            # Nonlinear: rdgraph.timestepping.upwind assembles its coupling itself; no linear C
            # here.
            self.diagonal = list(self.stiffness)
        elif model.settings.gibbs_rates == "nodal":
            # C_gg = M diag(Σ_h w_gh k_gh),  C_gh = -M diag(w_gh k_hg), rates at the nodes: only
            # nodal vectors are kept; blocks are formed on demand for assembled matrices.
            self.rate_vectors = self._nodal_rates()
            self.leaving_rates = np.zeros((n, len(model.potential_nodal(0))))
            for (g, _), rate in self.rate_vectors.items():
                self.leaving_rates[g] += rate
            self.diagonal = _PerVertex(self._nodal_gibbs_diagonal, n)
        elif (quadrature := self._quadrature_coupling(gibbs_coupling)) is not None:
            # C applied from the quadrature points (rdgraph.discretization.quadrature_coupling): no
            # per-edge matrices; the diagonal blocks left are the K_g.
            self.quadrature_coupling = quadrature
            self.diagonal = self.stiffness
        else:
            # C_gg = Σ_h w_gh M[k_gh],  C_gh = -w_gh M[k_hg],  k_gh = exp((V_g - V_h)/2β)
            self.diagonal = [self.stiffness[g].copy() for g in range(n)]
            for (a, b), weighted in self._weighted_masses():
                self.diagonal[a] += weighted
                self.off_diagonal[b, a] = -weighted

    def set_beta(self, beta: float) -> None:
        """Bring every value array to the temperature ``beta`` (collective when it changes).

        β enters ``K_g = β S + D_g`` linearly: the arrays that hold ``β S`` (the ``K_g``, and
        the laplacian diagonals ``K_g + d_g M``) become their values at the first β plus
        ``(β − β0) S``, from one stored ``S`` (no drift of round-off over many changes). The
        gibbs rates ``exp((V_g − V_h)/2β)`` are not linear in β: their weighted mass matrices
        (or nodal rates, or quadrature weights) are made again. Arrays change in place, so
        whatever shares them sees the new values; PETSc matrices made from them do not, and
        are made again by their owners (:class:`rdgraph.timestepping.linear.TimeStepper`).
        """
        self.model.set_beta(beta)
        if beta == self.beta:
            return
        if self._beta_parts is None:
            stiffness = self.stiffness.parts[:1] if isinstance(self.stiffness, _Combined) \
                else list(self.stiffness)
            diagonal = (self.diagonal.parts[:1] if isinstance(self.diagonal, _Combined)
                        else list(self.diagonal)) if self.coupling == "laplacian" else []
            unique = {id(a): a for a in [*stiffness, *diagonal]}
            self._beta_parts = (self.beta, self.pattern.assemble(self.model.laplace_form),
                                [(a, a.copy()) for a in unique.values()])
        beta0, laplace, arrays = self._beta_parts
        for array, start in arrays:
            np.add(start, (beta - beta0) * laplace, out=array)
        self.beta = beta
        if self.coupling != "gibbs":
            return
        if self.rate_vectors is not None:
            self.rate_vectors = self._nodal_rates()
            self.leaving_rates[:] = 0.0
            for (g, _), rate in self.rate_vectors.items():
                self.leaving_rates[g] += rate
        elif self.quadrature_coupling is not None:
            self.quadrature_coupling.set_beta(beta)
        else:
            for g in range(self.graph.n):
                self.diagonal[g][:] = self.stiffness[g]
            for (a, b), weighted in self._weighted_masses():
                self.diagonal[a] += weighted
                self.off_diagonal[b, a] = -weighted

    def change_factor(self, beta: float, other: float) -> float:
        """By how much the entries of ``A`` may differ between two temperatures: the ratio
        of the β's (for ``β S``) times, for gibbs, the largest change of a rate
        ``exp((V_g − V_h)/2β)``, ``exp(max|V_g − V_h| · |1/β − 1/β'| / 2)`` (collective on
        first call)."""
        if getattr(self, "_potential_difference", None) is None:
            local = 0.0
            if self.coupling == "gibbs":
                model = self.model
                local = max((float(np.max(np.abs(model.potential_nodal(g)
                                                  - model.potential_nodal(h)), initial=0.0))
                             for g, h, _ in self.graph.edges), default=0.0)
            self._potential_difference = self.layout.comm.allreduce(local, op=MPI.MAX)
        ratio = max(beta / other, other / beta)
        return ratio * float(np.exp(0.5 * self._potential_difference * abs(1 / beta - 1 / other)))

    @property
    def modes_decouple(self) -> bool:
        """The spectral transform splits ``a (I ⊗ M) + b A`` exactly into scalar problems:
        laplacian coupling and one operator for all vertices."""
        return self.equal_vertex_operators and self.coupling == "laplacian"

    @property
    def same_stiffness(self) -> bool:
        """Every vertex has the same ``K_g``: one potential, or potentials that differ by
        constants only (then the gibbs rates are constants too, and the spectral
        preconditioner is exact for either coupling)."""
        return self.model.same_stiffness

    def _weighted_masses(self):
        """``((g, h), w_gh M[k_gh])`` for every directed edge, assembled one at a time."""
        for g, h, w in self.graph.edges:
            for a, b in ((g, h), (h, g)):
                self.model.set_vertex(a, b)
                yield (a, b), w * self._lumped(self.pattern.assemble(self.model.rate_form))

    def _quadrature_coupling(self, gibbs_coupling: str) -> QuadratureCoupling | None:
        """The weighted-mass gibbs coupling applied from the quadrature points, if chosen.

        ``auto`` chooses it when it stores less than one matrix per directed edge and it
        applies (no lumping: lumped rates are row sums, kept per node; Lagrange degree ≤ 2;
        potentials that do not spread too far at a point).
        """
        if gibbs_coupling == "quadrature":
            if self.lumping:
                raise InputError("the quadrature gibbs coupling is for consistent weighted "
                                 "masses; with lumping use 'per-edge'")
            return QuadratureCoupling(self.model, self.layout)
        if gibbs_coupling == "per-edge" or self.lumping:
            return None
        model = self.model
        cells = model.mesh.topology.index_map(model.mesh.topology.dim).size_local
        points = cells * len(basix.make_quadrature(model.mesh.basix_cell(),
                                                   model.quadrature_degree)[1])
        # Global counts: every rank decides alike.
        nnz, points = self.layout.comm.allreduce(np.array([self.pattern.nnz, points]))
        if not quadrature_is_smaller(len(self.graph.edges), self.graph.n, int(nnz),
                                     int(points), model.V.dofmap.dof_layout.num_dofs):
            return None
        try:
            return QuadratureCoupling(model, self.layout)
        except QuadratureNotApplicable:
            return None

    def _separated_stiffness(self) -> _Combined:
        """``K_g = β S + Σ_k c_k(g) D[φ_k]`` from 1 + r assemblies, formed on demand; the
        terms whose ``c_k`` is the same at every vertex are added to the first part."""
        model = self.model
        separation = model.potential_separation
        coefficients = separation.coefficients
        # A term with the same coefficient at every vertex (a shared bowl beside per-vertex
        # offsets) joins the shared part: one sparse product less per block product.
        shared = np.all(coefficients == coefficients[:1], axis=0)
        common = self.pattern.assemble(model.diffusion_form)
        parts = []
        for k in range(separation.rank):
            model.set_basis_function(k)
            drift = self.pattern.assemble(model.drift_form)
            if shared[k]:
                common += coefficients[0, k] * drift
            else:
                parts.append(drift)
        return _Combined([common, *parts], coefficients[:, ~shared])

    def _constant_rate_chain(self) -> sparse.csr_array:
        """The vertex chain ``L̄`` of gibbs rates ``k_gh = exp((c_g − c_h)/2β)`` for potentials
        ``V + c_g``: ``L̄_gg = Σ_h w_gh k_gh`` (leaving), ``L̄_hg = −w_gh k_gh`` (h gains)."""
        model = self.model
        separation = model.potential_separation
        n = self.graph.n
        constants = np.zeros(n) if separation is None else separation.constants
        g, h, w = self.graph.edge_arrays()
        half = (constants[g] - constants[h]) / (2 * model.beta_value)
        forward, backward = w * np.exp(half), w * np.exp(-half)  # g -> h, h -> g
        gains = sparse.coo_array((np.concatenate([-forward, -backward]),
                                  (np.concatenate([h, g]), np.concatenate([g, h]))),
                                 shape=(n, n)).tocsr()
        leaving = -np.asarray(gains.sum(axis=0)).ravel()  # column sums: mass is conserved
        return (gains + sparse.diags_array(leaving)).tocsr()

    def _nodal_rates(self) -> dict[tuple[int, int], np.ndarray]:
        """``w_gh k_gh = w_gh exp((V_g − V_h)/2β)`` at the local dofs, both directions."""
        model = self.model
        rates = {}
        for g, h, w in self.graph.edges:
            half = (model.potential_nodal(g) - model.potential_nodal(h)) / (2 * model.beta_value)
            rates[g, h], rates[h, g] = w * np.exp(half), w * np.exp(-half)
        return rates

    def _mass_times_diagonal(self, nodal: np.ndarray) -> np.ndarray:
        """Values of ``M diag(nodal)`` on the pattern (columns may live on other ranks)."""
        matrix = self.pattern.matrix(self.mass, self.layout.comm)
        scale = matrix.createVecRight()
        scale.array[:] = nodal[: self.layout.size_local]
        matrix.diagonalScale(None, scale)
        values = matrix.getValuesCSR()[2].copy()
        matrix.destroy()
        scale.destroy()
        return values

    def _nodal_gibbs_diagonal(self, g: int) -> np.ndarray:
        return self.stiffness[g] + self._mass_times_diagonal(self.leaving_rates[g])

    def vertex_diagonals(self):
        """Values of ``K_g + C_gg`` per vertex, the coupling's leaving rates included.

        :attr:`diagonal` leaves them out where the coupling is applied from the quadrature
        points; here they are assembled (one weighted mass matrix at a time) and added.
        """
        if self.quadrature_coupling is None or self.coupling != "gibbs":
            return self.diagonal
        diagonals = [self.stiffness[g].copy() for g in range(self.graph.n)]
        for (g, _), weighted in self._weighted_masses():
            diagonals[g] += weighted
        return diagonals

    def average_stiffness(self) -> np.ndarray:
        """Values of ``(1/N) Σ_g K_g``."""
        if self.equal_vertex_operators:
            return self.stiffness[0]
        if isinstance(self.stiffness, _Combined):
            return self.stiffness.mean()
        return np.mean(self.stiffness, axis=0)

    def diagonal_positions(self) -> np.ndarray:
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
        lumped[self._diagonal_index] = np.add.reduceat(values, self.pattern.indptr[:-1])
        return lumped

    def blocks(self, mass_coefficient: float, operator_coefficient: float) -> dict:
        """Values of every non-zero block of ``a (I ⊗ M) + b A``."""
        a, b = mass_coefficient, operator_coefficient
        out = {}
        for g in range(self.graph.n):
            out[g, g] = a * self.mass + b * self.diagonal[g] if b else a * self.mass
        if b:
            if self.chain is not None:
                chain = self.chain.tocoo()
                for h, g, value in zip(chain.row, chain.col, chain.data, strict=True):
                    if h != g:
                        out[int(h), int(g)] = b * value * self.mass
            elif self.rate_vectors is not None:
                for (g, h), rate in self.rate_vectors.items():
                    out[h, g] = -b * self._mass_times_diagonal(rate)
            elif self.quadrature_coupling is not None:
                # Entries are asked for: assemble the weighted mass matrices now.
                for (g, h), weighted in self._weighted_masses():
                    out[g, g] += b * weighted
                    out[h, g] = -b * weighted
            else:
                for key, values in self.off_diagonal.items():
                    out[key] = b * values
        return out

    def matrix(self, mass_coefficient: float, operator_coefficient: float) -> PETSc.Mat:
        """The assembled monolithic matrix ``a (I ⊗ M) + b A`` (stores every block)."""
        return self.layout.matrix(self.pattern, self.blocks(mass_coefficient, operator_coefficient))

    def shell(self, mass_coefficient: float, operator_coefficient: float) -> PETSc.Mat:
        """``a (I ⊗ M) + b A`` as a matrix-free PETSc shell (no per-edge copies of M)."""
        context = BlockShell(self, mass_coefficient, operator_coefficient)
        size = (self.layout.num_blocks * self.layout.size_local,
                self.layout.num_blocks * self.layout.size_global)
        A = PETSc.Mat().createPython((size, size), context, comm=self.layout.comm)
        A.setUp()
        return A

    def mass_row_sums(self) -> np.ndarray:
        """``M 1`` on the owned dofs: vertex masses are its dot product with each block."""
        sums = np.zeros(self.layout.size_local)
        np.add.at(sums, np.repeat(np.arange(len(sums)), np.diff(self.pattern.indptr)), self.mass)
        return sums

    def destroy(self) -> None:
        self.pattern.destroy()
        if self.quadrature_coupling is not None:
            self.quadrature_coupling.destroy()


class _PerVertex:
    """A sequence of N per-vertex value arrays made by ``make(g)`` when indexed."""

    def __init__(self, make, n: int):
        self.make, self.n = make, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, g: int) -> np.ndarray:
        return self.make(g)

    def __iter__(self):
        return (self.make(g) for g in range(self.n))


class _Combined(_PerVertex):
    """The arrays ``parts[0] + Σ_k weights[g, k] parts[k + 1]``, one per g, made when indexed.

    Stands in for a list of N per-vertex value arrays when they are combinations of a few
    shared ones: memory and set-up stay independent of N.
    """

    def __init__(self, parts: list[np.ndarray], weights: np.ndarray):
        self.parts = list(parts)
        self.weights = np.asarray(weights, dtype=np.float64).reshape(len(weights),
                                                                     len(self.parts) - 1)
        super().__init__(lambda g: self._combine(self.weights[g]), len(self.weights))

    def _combine(self, weights: np.ndarray) -> np.ndarray:
        out = self.parts[0].copy()
        for weight, part in zip(weights, self.parts[1:], strict=True):
            out += weight * part
        return out

    def mean(self) -> np.ndarray:
        return self._combine(self.weights.mean(axis=0))


class BlockShell:
    """Python context of the shell ``a (I ⊗ M) + b A``.

    ``y = Σ_k P_k X diag(w_k) + M·Coupling(X) + per-vertex blocks``, with ``X`` the N blocks
    as columns:

    * the vertex operators, when they are combinations ``Σ_k w_k(g) P_k`` of a few shared
      matrices (one ``K`` for all; separable potentials), are applied as one
      sparse-times-dense product per part (one pass over the matrix instead of N), and the
      first part, common to all vertices, shares its product with the time derivative:
      ``(a M + b P_0) X``;
    * the laplacian coupling ``b (D − W) X`` and the nodal gibbs rates are formed on the
      blocks and multiplied by ``M`` in one more product;
    * other vertex blocks (non-separable potentials; gibbs per-edge diagonal blocks) are
      applied one by one, as are the stored gibbs edge blocks; the quadrature gibbs coupling
      applies itself.
    """

    def __init__(self, operators: BlockOperators, mass_coefficient: float,
                 operator_coefficient: float):
        layout = operators.layout
        self.layout = layout
        a, b = mass_coefficient, operator_coefficient
        self.b = b  # per-vertex and edge blocks are scaled as they are applied
        pattern, comm = operators.pattern, layout.comm
        N, n = layout.num_blocks, layout.size_local
        per_edge = (operators.coupling == "gibbs" and operators.rate_vectors is None
                    and operators.quadrature_coupling is None and operators.chain is None)
        # Per-edge gibbs folds C_gg into the diagonal blocks; otherwise they are the K_g and
        # the coupling is applied on its own.
        blocks = operators.diagonal if per_edge else operators.stiffness
        parts, weights = _shared_parts(blocks) if b else (None, None)
        self._matrices: list[PETSc.Mat] = []

        def matrix(values: np.ndarray) -> PETSc.Mat:
            self._matrices.append(pattern.matrix(values, comm))
            return self._matrices[-1]

        # (a M + b P_0) X: the time derivative rides on the first shared part's product.
        self.first = None
        self.scaled: list[tuple[PETSc.Mat, np.ndarray]] = []  # (P_k, b w_k): P_k X diag(b w_k)
        self.per_vertex: list[PETSc.Mat] = []
        mass_shift = a
        if parts is not None:
            self.first = matrix(a * operators.mass + b * parts[0])
            self.scaled = [(matrix(part), b * weights[:, k])
                           for k, part in enumerate(parts[1:], start=1)]
            mass_shift = 0.0
        elif b:
            shared: dict[int, PETSc.Mat] = {}  # vertices with one array share its matrix
            for values in blocks:
                if id(values) not in shared:
                    shared[id(values)] = matrix(values)
                self.per_vertex.append(shared[id(values)])
        # What M multiplies: mass_shift X + b L̄ X (laplacian, constant gibbs rates: one
        # sparse product, O(E n)) or the nodal gibbs gains and losses (h gains w_gh k_gh ρ_g).
        self.mass = matrix(operators.mass)
        self.mass_diagonal = np.full(N, mass_shift)
        self.chain, self.gains, self.leaving = None, [], None
        if b and operators.chain is not None:
            self.chain = b * operators.chain
        elif b and operators.rate_vectors is not None:
            self.leaving = b * operators.leaving_rates[:, :n]
            self.gains = [(h, g, b * rate[:n]) for (g, h), rate in
                          operators.rate_vectors.items()]
        self.uses_mass = bool(np.any(self.mass_diagonal) or self.chain is not None
                              or self.leaving is not None)
        self.off_diagonal = {key: matrix(values)
                             for key, values in operators.off_diagonal.items()} if b else {}
        self.quadrature_coupling = operators.quadrature_coupling if b else None
        self._x, self._t = self.mass.createVecs()
        # Two dense (n × N) inputs: X itself, and the blocks formed for M or a weighted part.
        self._blocks, self._blocks_dense = dense_columns((n, layout.size_global), N, comm)
        self._formed, self._formed_dense = dense_columns((n, layout.size_global), N, comm)
        self._products: dict[tuple[int, int], PETSc.Mat] = {}
        #: Every product is a few sparse-times-dense passes over all blocks at once (shared
        #: vertex parts, laplacian or constant-rate coupling): no loop over vertices or edges.
        self.batched = (not self.per_vertex and not self.off_diagonal and not self.gains
                        and self.quadrature_coupling is None)

    def _product(self, matrix: PETSc.Mat, dense: PETSc.Mat) -> np.ndarray:
        """``matrix @ dense`` as (N, n) blocks; a view, valid until the next same product."""
        key = (id(matrix), id(dense))
        product = self._products.get(key)
        if product is None:
            product = self._products[key] = matrix.matMult(dense)
        else:
            matrix.matMult(dense, result=product)
        return product.getDenseArray().T

    def _form_mass_input(self, X: np.ndarray) -> np.ndarray:
        """The blocks that ``M`` multiplies, formed in the second dense input."""
        formed = self._formed.T
        if self.chain is not None and not self.mass_diagonal.any():
            formed[:] = self.chain @ X  # no pass over X for a zero shift
        else:
            np.multiply(X, self.mass_diagonal[:, None], out=formed)
            if self.chain is not None:
                formed += self.chain @ X
        if self.leaving is not None:
            formed += self.leaving * X
            for h, g, rate in self.gains:
                formed[h] -= rate * X[g]
        return formed

    def mult(self, mat, x: PETSc.Vec, y: PETSc.Vec) -> None:
        N, n = self.layout.num_blocks, self.layout.size_local
        X = x.array_r.reshape(N, n)
        Y = y.array.reshape(N, n)
        # The first product is written, not added: one pass less over the (N, n) blocks (a
        # mass-only product, the stepper's right-hand side, is then one product and one copy).
        assigned = False
        if self.first is not None:
            self._blocks.T[:] = X
            Y[:] = self._product(self.first, self._blocks_dense)
            assigned = True
        if self.uses_mass:
            self._form_mass_input(X)
            if assigned:
                Y += self._product(self.mass, self._formed_dense)
            else:
                Y[:] = self._product(self.mass, self._formed_dense)
                assigned = True
        if not assigned:
            Y[:] = 0.0
        for matrix, weights in self.scaled:
            np.multiply(X, weights[:, None], out=self._formed.T)
            Y += self._product(matrix, self._formed_dense)
        sx, st = self._x, self._t
        for g, matrix in enumerate(self.per_vertex):
            sx.array[:] = X[g]
            matrix.mult(sx, st)
            Y[g] += self.b * st.array_r
        for (g, h), matrix in self.off_diagonal.items():
            sx.array[:] = X[h]
            matrix.mult(sx, st)
            Y[g] += self.b * st.array_r
        if self.quadrature_coupling is not None:
            Y += self.b * self.quadrature_coupling.apply(X)

    def destroy(self, mat=None) -> None:
        """Free the scalar matrices (PETSc calls this when the shell is destroyed)."""
        for obj in [*self._matrices, *self._products.values(), self._blocks_dense,
                    self._formed_dense, self._x, self._t]:
            obj.destroy()
        self._matrices, self._products, self.per_vertex, self.scaled = [], {}, [], []
        self.off_diagonal = {}


def _shared_parts(blocks) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
    """``(P_k, w_k(g))`` with ``blocks[g] = Σ_k w_k(g) P_k`` and ``w_0 = 1``, if the blocks
    are combinations of shared arrays (``_Combined``) or one array for all; else None."""
    if isinstance(blocks, _Combined):
        return blocks.parts, np.column_stack([np.ones(len(blocks)), blocks.weights])
    if isinstance(blocks, list) and blocks and all(v is blocks[0] for v in blocks):
        return [blocks[0]], np.ones((len(blocks), 1))
    return None, None
