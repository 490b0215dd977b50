"""The spectral (Kronecker) block solver.

With one vertex operator ``K`` and a coupling ``C = L̄ ⊗ M`` whose graph matrix
``L̄ = P Λ P⁻¹`` is diagonalizable, ``a (I⊗M) + b A`` splits exactly into N scalar problems
``(a + b λ_k) M + b K`` in the modal variables ``y = (P⁻¹ ⊗ I) x``; modes with equal
eigenvalues share one scalar solver. For laplacian, ``L̄ = L`` and ``P = Q`` is orthogonal.
For gibbs, ``L̄`` is the generator of the vertex chain with constant rates
``k̄_gh = w_gh sqrt(π̄_h / π̄_g)``, ``π̄_g ∝ ∫ exp(−V_g/β)`` (the Gibbs vertex weights), which
is similar to the symmetric ``Π̄^{-1/2} L̄ Π̄^{1/2}``, so ``P = Π̄^{1/2} Q``.

When the vertex operators differ (unequal potentials, or gibbs), the same construction with
the averaged ``K̄`` is a preconditioner for a Krylov method on the true operator.

The transforms (:class:`ModalTransform`) are never N × N beyond small graphs:

* product graphs (``hamming``, ``hypercube``, ``product``) apply ``Q = Q_1 ⊗ … ⊗ Q_d`` a few
  factors at a time (merged up to :data:`MERGED_FACTOR_SIZE` rows), O(N Σ m_j) per dof for
  the merged sizes ``m_j``; for gibbs beyond :data:`DENSE_GIBBS_MAX` vertices
  the chain ``Π̄^{-1/2} L̄ Π̄^{1/2} = D_π − W`` is in general not a Kronecker sum (its
  diagonal varies), and the preconditioner solves a product surrogate exactly instead: the
  same ``W``, the diagonal replaced by its mean and main effects (:func:`main_effects`),
  whose factors are diagonalized one by one;
* other graphs up to :data:`DENSE_LIMIT` vertices: the dense eigendecomposition;
* larger graphs without product structure: no transform at all, each vertex's block solved
  with the shift of its own diagonal ``d_g`` of ``L̄`` (block Jacobi on the coupling), the
  vertices with close shifts sharing one factorization, under a Krylov method. Memory and
  work per application are linear in N + E, and the factorizations are bounded by the range
  of the shifts, not by N.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.operators import BlockOperators
from rdgraph.errors import InputError, SolverError
from rdgraph.problem.graph import DENSE_LIMIT, ProductSpectrum
from rdgraph.solvers.mode_exchange import ModeExchange, deal_groups, whole_matrices
from rdgraph.solvers.petsc import configure_ksp, direct_package, reason_name

__all__ = ["BATCHED_FACTORIZATION_MIN_MODES", "BATCH_BYTES", "DENSE_GIBBS_MAX",
           "INDEFINITE_SURROGATE",
           "MERGED_FACTOR_SIZE", "SHARED_FACTORIZATION_SPAN", "SHARED_HIERARCHY_SPAN",
           "DenseModes", "DiagonalModes",
           "ModalTransform", "ProductModes", "SpectralPreconditioner", "coupling_modes",
           "coupling_transform", "factorization_count", "factorization_span", "graph_modes",
           "main_effects", "merged_factors", "modal_transform", "residual_budgets"]

#: Modes whose scalar operators ``s M + bK̄`` have shifts ``s`` within this ratio share one AMG
#: hierarchy (built at their geometric mean): each mode's operator is then within a factor
#: sqrt(1.5) ≈ 1.22 of the preconditioned one in the energy norm, which costs at most a few
#: iterations, while set-up and memory no longer grow with the number of modes (for
#: ``τ λ_max ≪ 1`` all modes share one).
SHARED_HIERARCHY_SPAN = 1.5
#: Factorizations are shared by modes whose shifts are within this ratio where the spectral
#: solve only preconditions (vertex operators that differ), never where the modes are exact.
#: A factorized mode is otherwise exact, so its mismatch shows in the outer iterations; at
#: 1.1 it did not: 2-D 64², N = 64, gibbs, τ·deg = 100: 26 factorizations per rank instead of
#: 32, iterations 7, 8, 8, 6 as unshared (1.5: 10 factorizations, 9, 10, 10, 8). With
#: ``τ λ_max ≪ 1`` all modes share one: 256², N = 64, differing potentials, 2 ranks, set-up
#: 16.9 s -> 1.4 s, same iterations.
SHARED_FACTORIZATION_SPAN = 1.1
#: The modes that share a factorization are solved together, one ``MatMatSolve`` that reads
#: the factors once. MUMPS gains from it, PETSc's own LU does not; so a factorization that
#: serves at least this many modes is MUMPS's where PETSc's own was only the default. Measured
#: on a 66k-dof 2-D P1 problem, serially, 2 ranks side by side: PETSc's LU 5.4 ms per
#: right-hand side at any count; MUMPS 15, 18, 22, 27, 28 and 43 ms for 1, 2, 4, 6, 8 and 16
#: at once.
BATCHED_FACTORIZATION_MIN_MODES = 5
#: The dense blocks of a batched solve (right-hand sides and solutions) hold at most this
#: many bytes each: a factorization shared by many modes (H(6, 5): 6144 modes of one
#: eigenvalue) solves them in several batches instead of one block of all its modes.
BATCH_BYTES = 32 * 2**20
#: Set-up steps (factorizations) report progress every this many seconds ...
SETUP_PROGRESS_SECONDS = 3.0
#: ... to this logger, which :class:`rdgraph.output.progress.SetupProgress` prints on rank 0.
SETUP_LOG = logging.getLogger("rdgraph.setup")
#: gibbs on a product graph: the exact chain's dense eigendecomposition (O(N³) once, O(N² n)
#: per application) up to this many vertices; beyond, the factor-wise product surrogate.
DENSE_GIBBS_MAX = 1024
#: A product graph's transform merges consecutive factors into Kronecker factors of at most
#: this many rows: per merged factor one BLAS ``matmul`` pass over the state (H(6, 5), 545
#: dofs per rank, one pass: 25 rows 0.13 s, 5 rows 0.12 s, 125 rows 0.35 s), so fewer passes
#: win until the flops (2 × rows per entry) outweigh the memory traffic.
MERGED_FACTOR_SIZE = 32
#: A gibbs surrogate whose lowest eigenvalue is below −this × its largest is indefinite (not
#: rounding), and gives way to the mean-shift surrogate.
INDEFINITE_SURROGATE = 1e-8


class ModalTransform:
    """The modal transforms of a coupling's graph matrix, applied to ``(N, n)`` blocks.

    Attributes:
        values: The shift ``λ_k`` of each mode ``k`` (not sorted).
        identity: ``P = I``: the modes are the vertices.
        exact: ``P Λ P⁻¹`` is the coupling's graph matrix itself, not a surrogate.
    """

    values: np.ndarray
    identity: bool = False
    exact: bool = True

    def to_modes(self, R: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``P⁻¹ R`` into ``out``."""
        raise NotImplementedError

    def from_modes(self, Y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``P Y`` into ``out``."""
        raise NotImplementedError


class DenseModes(ModalTransform):
    """Dense ``P``, ``P⁻¹`` (N × N): graphs up to :data:`DENSE_LIMIT` vertices."""

    def __init__(self, values: np.ndarray, P: np.ndarray, P_inverse: np.ndarray):
        self.values, self.P, self.P_inverse = values, P, P_inverse
        self.identity = bool(np.allclose(P, np.eye(len(values))))

    def to_modes(self, R: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.matmul(self.P_inverse, R, out=out)

    def from_modes(self, Y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.matmul(self.P, Y, out=out)


class ProductModes(ModalTransform):
    """``P = diag(root) (Q_1 ⊗ … ⊗ Q_d)`` applied a few factors at a time, O(N Σ m_j) per dof.

    Consecutive factors are merged into one Kronecker factor of at most
    :data:`MERGED_FACTOR_SIZE` rows (H(6, 5): three of 25 × 25), each applied as one
    ``matmul`` on a view of the ``(N, n)`` block as ``(before, m, after)``, ping-ponging between
    two preallocated buffers: no transposed copies, and three passes over the block instead of
    six. Per factor of 5, ``einsum`` ran at about 0.5 GFlop/s; the merged ``matmul`` gives the
    BLAS kernel enough work per entry (H(6, 5), 545 dofs per rank: 0.40 s per transform
    against 1.2 s with ``einsum`` per factor, and ``tensordot`` on the ``(q_1, …, q_d, n)``
    array had spent most of a step in transposed copies).

    Args:
        spectrum: The product graph's :class:`rdgraph.problem.graph.ProductSpectrum`, or
            for gibbs the surrogate's (factors ``L_i + diag(e_i)``, see
            :func:`coupling_transform`).
        root: ``sqrt(π̄)`` of the symmetrized gibbs chain (``None``: laplacian).
        shift: Added to every eigenvalue (the surrogate's mean excess ``c``).
        exact: Whether ``P Λ P⁻¹`` is the coupling's graph matrix.
    """

    def __init__(self, spectrum, root: np.ndarray | None = None, shift: float = 0.0,
                 exact: bool = True):
        self.spectrum, self.root = spectrum, root
        values = spectrum.values + shift if shift else spectrum.values
        # The gibbs chain is positive semidefinite: a surrogate's rounding below 0 goes.
        self.values = values if exact else np.maximum(values, 0.0)
        self.identity = spectrum.n == 1 and root is None
        self.exact = exact
        self._work: np.ndarray | None = None
        self._scaled: np.ndarray | None = None
        # (Kronecker factor, its transpose), each C-contiguous for BLAS.
        self._factors = [(Q, np.ascontiguousarray(Q.T)) for Q in
                         merged_factors(spectrum.factor_vectors, MERGED_FACTOR_SIZE)]

    def _contract(self, X: np.ndarray, out: np.ndarray, transpose: bool) -> np.ndarray:
        """``(Q_1 ⊗ … ⊗ Q_d) X`` (or with ``Q_iᵀ``) into ``out``; ``X`` is not changed."""
        if self._work is None or self._work.shape != X.shape:
            self._work = np.empty_like(X)
        # Ping-pong between out and the work array, ending in out.
        count = len(self._factors)
        buffers = (out, self._work) if count % 2 == 0 else (self._work, out)
        source, before = X, 1
        for step, (Q, QT) in enumerate(self._factors):
            target = buffers[(step + 1) % 2]
            size = Q.shape[0]
            np.matmul(QT if transpose else Q, source.reshape(before, size, -1),
                      out=target.reshape(before, size, -1))
            source, before = target, before * size
        return out

    def to_modes(self, R: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.root is not None:
            if self._scaled is None or self._scaled.shape != R.shape:
                self._scaled = np.empty_like(R)
            R = np.divide(R, self.root[:, None], out=self._scaled)
        return self._contract(R, out, transpose=True)

    def from_modes(self, Y: np.ndarray, out: np.ndarray) -> np.ndarray:
        self._contract(Y, out, transpose=False)
        if self.root is not None:
            out *= self.root[:, None]
        return out


def merged_factors(factors: list[np.ndarray], largest: int) -> list[np.ndarray]:
    """Consecutive factors of a Kronecker product merged (``np.kron``) while the merged size
    stays at most ``largest`` (a factor larger on its own stays alone)."""
    merged: list[np.ndarray] = []
    for Q in factors:
        if merged and merged[-1].shape[0] * Q.shape[0] <= largest:
            merged[-1] = np.kron(merged[-1], Q)
        else:
            merged.append(np.asarray(Q, dtype=float))
    return merged


class DiagonalModes(ModalTransform):
    """No transform: each vertex is a mode with the shift of its diagonal entry of ``L̄``
    (block Jacobi on the coupling, for large graphs without product structure)."""

    identity = True
    exact = False

    def __init__(self, diagonal: np.ndarray):
        self.values = np.asarray(diagonal, dtype=float)

    def to_modes(self, R: np.ndarray, out: np.ndarray) -> np.ndarray:
        out[:] = R
        return out

    def from_modes(self, Y: np.ndarray, out: np.ndarray) -> np.ndarray:
        out[:] = Y
        return out


def main_effects(values: np.ndarray, shape: tuple[int, ...]) -> tuple[float, list[np.ndarray]]:
    """The mean and main effects of ``values`` on the grid ``shape`` (vertex order of a
    product graph): ``mean + Σ_i effects[i][a_i]`` is the orthogonal projection of ``values``
    on the sums of one function per factor."""
    grid = np.asarray(values, dtype=float).reshape(shape)
    mean = float(grid.mean())
    axes = range(len(shape))
    effects = [grid.mean(axis=tuple(j for j in axes if j != i)) - mean for i in axes]
    return mean, effects


def modal_transform(operators: BlockOperators) -> ModalTransform:
    """The :class:`ModalTransform` of the block operators' coupling (see the module)."""
    weights = operators.model.gibbs_integrals if operators.coupling == "gibbs" else None
    return coupling_transform(operators.graph, operators.coupling, weights)


def _chain_root(gibbs_integrals: np.ndarray) -> np.ndarray:
    weights = np.asarray(gibbs_integrals, dtype=float)
    return np.sqrt(weights / weights.max())


def coupling_transform(graph, coupling: str, gibbs_integrals: np.ndarray | None = None
                       ) -> ModalTransform:
    """The modal transform of a coupling's graph matrix ``L̄`` (no FEM objects).

    See the module for which one a graph gets. Never forms an N × N array beyond
    :data:`DENSE_LIMIT` vertices (product graphs: beyond none for laplacian,
    :data:`DENSE_GIBBS_MAX` for gibbs).
    """
    spectrum = graph.product_spectrum()
    if spectrum is not None and (coupling != "gibbs" or graph.n > DENSE_GIBBS_MAX):
        if coupling != "gibbs":
            return ProductModes(spectrum)
        # Symmetrized chain D_π − W, D_π = diag(Σ_h w_gh sqrt(π̄_h / π̄_g)): the surrogate keeps
        # W (the product's) and replaces D_π's excess over the degrees by its mean and main
        # effects, the nearest diagonal that is a Kronecker sum. It is exact when log π̄ is a
        # sum of one function per factor (a loss additive over a cell's operations).
        root = _chain_root(gibbs_integrals)
        excess = (graph.matrix @ root) / root - graph.degrees()
        mean, effects = main_effects(excess, spectrum.shape)
        factor_spectra = [np.linalg.eigh(factor.laplacian() + np.diag(effect))
                          for factor, effect in zip(graph.factors, effects, strict=True)]
        lowest = mean + sum(float(values[0]) for values, _ in factor_spectra)
        highest = mean + sum(float(values[-1]) for values, _ in factor_spectra)
        if lowest < -INDEFINITE_SURROGATE * abs(highest):
            # Main effects of widely spread rates (many β) can make the surrogate indefinite,
            # unlike the chain: then only the mean is kept, which never is.
            return ProductModes(spectrum, root, mean, exact=False)
        surrogate = ProductSpectrum(factor_spectra, spectrum.tolerance)
        return ProductModes(surrogate, root, mean, exact=False)
    if graph.n <= DENSE_LIMIT:
        return DenseModes(*coupling_modes(graph, coupling, gibbs_integrals))
    if coupling == "gibbs":
        root = _chain_root(gibbs_integrals)
        return DiagonalModes((graph.matrix @ root) / root)
    return DiagonalModes(graph.degrees())


def graph_modes(operators: BlockOperators) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``λ`` and the transforms ``P``, ``P⁻¹`` of the coupling's graph matrix."""
    weights = operators.model.gibbs_integrals if operators.coupling == "gibbs" else None
    return coupling_modes(operators.graph, operators.coupling, weights)


def coupling_modes(graph, coupling: str, gibbs_integrals: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues and dense transforms of the graph matrix ``L̄`` of a coupling (no FEM
    objects; up to :data:`DENSE_LIMIT` vertices, see :func:`coupling_transform` beyond).

    laplacian: the graph Laplacian. gibbs: the vertex chain with rates ``w_gh sqrt(π̄_h/π̄_g)``,
    ``π̄_g`` the integrals ``∫exp(-V_g/β)``, symmetrized by ``diag(sqrt π̄)``.
    """
    if graph.n > DENSE_LIMIT:
        # The transforms below are dense N x N matrices.
        raise InputError(f"the dense modal transforms are for up to {DENSE_LIMIT} vertices; "
                         f"this graph has {graph.n} (the spectral solver applies product "
                         f"graphs' factor by factor, and solves other large graphs per vertex)")
    if coupling == "laplacian":
        values, Q = graph.spectrum()
        return values, Q, Q.T
    weights = np.asarray(gibbs_integrals, dtype=float)
    root = np.sqrt(weights / weights.max())
    W = graph.weights
    ratio = root[None, :] / root[:, None]  # sqrt(π_h / π_g)
    symmetric = np.diag((W * ratio).sum(axis=1)) - W
    values, Q = np.linalg.eigh(symmetric)
    values[np.abs(values) < 1e-12 * max(1.0, np.abs(values).max())] = 0.0
    return values, root[:, None] * Q, Q.T / root[None, :]


def residual_budgets(norms: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Absolute residual tolerances of N orthogonal modes that together meet a block's.

    With ``b_k`` the modal right-hand sides (``‖b‖² = Σ‖b_k‖²``) and ``ε = max(rtol ‖b‖,
    atol)``, the budgets ``ε_k² = ε² (‖b_k‖ / (2 Σ_j‖b_j‖) + 1 / (2N))`` sum to ``ε²``: the
    block residual meets the block tolerance, as a monolithic Krylov solve's would, where a
    relative ``rtol`` per mode reduces even a negligible residual by 1e-8. A mode with
    ``‖b_k‖ ≤ ε / sqrt(2N)`` needs no iteration at all, and the largest mode is asked at most
    ``sqrt(2) N^{1/4}`` times more than ``rtol`` (an equal split would ask ``sqrt(N)``).
    """
    total = float(norms.sum())
    allowed = max(rtol * float(np.linalg.norm(norms)), atol)
    shares = 0.5 / len(norms) + (0.5 * norms / total if total > 0 else 0.5 / len(norms))
    return allowed * np.sqrt(shares)


def factorization_span(per_eigenvalue: bool) -> float:
    """The largest ratio of the shifts that share a factorization: 1 (one per eigenvalue)
    where a factorization is exact for its modes (one stiffness for all vertices), else
    :data:`SHARED_FACTORIZATION_SPAN`."""
    return 1.0 if per_eigenvalue else SHARED_FACTORIZATION_SPAN


def factorization_count(values: np.ndarray, mass_coefficient: float,
                        operator_coefficient: float, per_eigenvalue: bool) -> int:
    """Scalar factorizations a factorized spectral solve keeps over all ranks (about: modes
    dealt to ranks may split a cluster): one per cluster of shifts within
    :func:`factorization_span`."""
    groups = _group(np.asarray(values, dtype=float))
    shifts = _shifts(values, groups, mass_coefficient, operator_coefficient)
    return len(_clusters(shifts, factorization_span(per_eigenvalue)))


def _shifts(values: np.ndarray, groups: list[list[int]], mass_coefficient: float,
            operator_coefficient: float) -> list[float]:
    """The shift ``a + bλ`` of each group of equal eigenvalues."""
    return [mass_coefficient + operator_coefficient * values[group[0]] for group in groups]


def _group(values: np.ndarray, tol: float = 1e-10) -> list[list[int]]:
    """Indices of (numerically) equal eigenvalues."""
    groups: list[list[int]] = []
    scale = max(1.0, float(np.abs(values).max(initial=0.0)))
    for k in np.argsort(values, kind="stable"):  # ascending values: groups in index order
        if groups and abs(values[k] - values[groups[-1][0]]) <= tol * scale:
            groups[-1].append(int(k))
        else:
            groups.append([int(k)])
    return groups


def _split_at_shares(groups: list[list[int]], parts: int) -> list[list[int]]:
    """``groups`` (consecutive) cut where the k-th of ``parts`` equal shares of all their
    modes ends, so that :func:`deal_groups` deals every share whole."""
    total = sum(len(group) for group in groups)
    ends = [round(total * k / parts) for k in range(1, parts)]
    out: list[list[int]] = []
    before = 0
    for group in groups:
        start = 0
        for end in ends:
            if before < end < before + len(group):
                out.append(group[start:end - before])
                start = end - before
        out.append(group[start:])
        before += len(group)
    return out


def _clusters(shifts: list[float], span: float) -> list[list[int]]:
    """Consecutive indices of increasing ``shifts`` whose largest/smallest ratio ≤ ``span``."""
    clusters: list[list[int]] = []
    for i, shift in enumerate(shifts):
        if clusters and shift <= span * shifts[clusters[-1][0]]:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    return clusters


class _SharedHierarchy:
    """A PETSc python PC that applies another solver's preconditioner (one AMG hierarchy)."""

    def __init__(self, hierarchy: PETSc.KSP):
        self.hierarchy = hierarchy

    def apply(self, pc, x: PETSc.Vec, y: PETSc.Vec) -> None:
        self.hierarchy.solve(x, y)


class _StationaryCorrection:
    """A coarse correction on the chain's stationary vector, after the surrogate's solve.

    With one stiffness ``K`` and the chain ``L̄`` (``1ᵀ L̄ = 0``, ``L̄ π = 0``; laplacian
    ``π = 1``), the prolongation ``P = π ⊗ I`` and restriction ``R = 1ᵀ ⊗ I`` give the
    Galerkin operator ``R A P = (Σ π)(a M + b K)``: one scalar problem. The correction
    ``x += P (RAP)⁻¹ R (r − A x)`` makes ``R (r − A x) = 0``: what the surrogate gets most
    wrong (the slowest modes of the chain, where its stationary vector differs from the
    surrogate's) is solved exactly, at the price of one scalar solve per application. It also
    leaves the preconditioned residual without mass.

    ``R A x`` needs no product with ``A``: the coupling moves mass between vertices at each
    point and creates none (``1ᵀ L̄ = 0``), so ``R A x = (a M + b K) Σ_g x_g``, one scalar
    product. (A block product here cost a third of each FGMRES iteration: H(6, 5) × 8², gibbs.)
    """

    def __init__(self, operators: BlockOperators, a: float, b: float, stiffness: np.ndarray):
        layout = operators.layout
        self.layout = layout
        if operators.coupling == "gibbs":
            weights = np.asarray(operators.model.gibbs_integrals, dtype=float)
            self.stationary = weights / weights.max()
        else:
            self.stationary = np.ones(layout.num_blocks)
        total = float(self.stationary.sum())
        self.matrix = operators.pattern.matrix(total * (a * operators.mass + b * stiffness),
                                               layout.comm)
        self.ksp = PETSc.KSP().create(layout.comm)
        self.ksp.setOperators(self.matrix)
        configure_ksp(self.ksp, {"ksp_type": "preonly", "pc_type": "lu",
                                 "pc_factor_mat_solver_type": direct_package()},
                      "rd_spectral_coarse_", set_up=True)
        self.rhs, self.solution = self.matrix.createVecs()
        self.total = total
        self._sum = self.matrix.createVecs()[0]

    def correct(self, r: PETSc.Vec, x: PETSc.Vec) -> None:
        """``x += P (RAP)⁻¹ R (r − A x)``, with ``R A x = (RAP / Σπ) R x``."""
        N, n = self.layout.num_blocks, self.layout.size_local
        X = x.array.reshape(N, n)
        np.sum(X, axis=0, out=self._sum.array)
        self.matrix.mult(self._sum, self.rhs)  # (Σπ)(a M + b K) Σ_g x_g
        rhs = self.rhs.array
        rhs *= -1.0 / self.total
        rhs += r.array_r.reshape(N, n).sum(axis=0)
        self.ksp.solve(self.rhs, self.solution)
        X += self.stationary[:, None] * self.solution.array_r[None, :]

    def destroy(self) -> None:
        for obj in (self.ksp, self.matrix, self.rhs, self.solution, self._sum):
            if obj is not None:
                obj.destroy()


class SpectralPreconditioner:
    """Applies ``(P ⊗ I) blockdiag(((a + bλ_k)M + bK̄)⁻¹) (P⁻¹ ⊗ I)`` (a PETSc PC context).

    Args:
        operators: The block operators.
        mass_coefficient: ``a``.
        operator_coefficient: ``b`` (``τ`` times the scheme's weight).
        inner_options: PETSc options (no prefix) of the scalar solvers.
        prefix: Options prefix of the scalar solvers.
        per_rank: Deal the modes to the ranks, each solving its modes' problems whole and
            serially (:mod:`rdgraph.solvers.mode_exchange`), instead of every mode on all ranks.
        block_tolerances: ``(rtol, atol)`` of the block solve when this is its whole solve
            (exact, orthogonal modes, iterated scalar solves): the modes then share the
            block's residual budget (:func:`residual_budgets`) instead of each reducing its
            own residual by ``rtol``.
        batched_package: The factorization package of a factorization that serves at least
            :data:`BATCHED_FACTORIZATION_MIN_MODES` modes (``None``: the one of
            ``inner_options``).
        single_precision: Factorize in single precision where MUMPS factorizes
            (:mod:`rdgraph.solvers.precision`).
    """

    def __init__(self, operators: BlockOperators, mass_coefficient: float,
                 operator_coefficient: float, inner_options: dict, prefix: str,
                 per_rank: bool = False,
                 block_tolerances: tuple[float, float] | None = None,
                 batched_package: str | None = None, single_precision: bool = False,
                 transform: ModalTransform | None = None):
        self.layout = operators.layout
        a, b = mass_coefficient, operator_coefficient
        self.modes = modal_transform(operators) if transform is None else transform
        values = self.modes.values
        self.identity = self.modes.identity
        stiffness = operators.average_stiffness()
        comm = self.layout.comm
        self.groups = _group(values)
        self.per_rank = per_rank and comm.size > 1
        if self.per_rank:
            # Equal shares of the modes: a group across a share's end is solved on both ranks
            # (one more factorization, of a single vertex's size) instead of making one rank
            # wait for the other (H(6, 5), 2 ranks: 10240 modes against 5385 otherwise).
            self.groups = _split_at_shares(self.groups, comm.size)
            dealt = deal_groups([len(group) for group in self.groups], comm.size)
            self.exchange = ModeExchange(
                comm, self.layout.size_local,
                [[k for i in owned for k in self.groups[i]] for owned in dealt])
            # Only this rank's groups get solvers; their modes are whole on this rank.
            self.local_groups = [self.groups[i] for i in dealt[comm.rank]]
            scalar_comm = PETSc.COMM_SELF
            whole = whole_matrices(comm, operators.pattern, operators.mass, stiffness, b)
        else:
            self.exchange = None
            self.local_groups = self.groups
            scalar_comm = comm
        self.matrices, self.solvers, self._shared = [], [], []

        def scalar_matrix(shift: float) -> PETSc.Mat:
            if self.per_rank:
                matrix = whole(shift)
            else:
                matrix = operators.pattern.matrix(shift * operators.mass + b * stiffness, comm)
            self.matrices.append(matrix)
            return matrix

        def scalar_solver(matrix: PETSc.Mat, options: dict, set_up: bool = True) -> PETSc.KSP:
            # Set up now (level or factorization options are read then), unless its
            # preconditioner is still to be replaced by a shared one (``set_up=False``).
            ksp = PETSc.KSP().create(scalar_comm)
            ksp.setOperators(matrix)
            configure_ksp(ksp, options, prefix, set_up=set_up)
            return ksp

        shifts = _shifts(values, self.local_groups, a, b)
        factorized = inner_options.get("pc_type") in ("lu", "cholesky")
        preonly = inner_options.get("ksp_type") == "preonly"

        self.mumps_factorizations = 0  # on this rank (single precision applies to these)

        def factorization_options(options: dict, cluster: list[int]) -> dict:
            modes = sum(len(self.local_groups[i]) for i in cluster)
            if factorized and batched_package and modes >= BATCHED_FACTORIZATION_MIN_MODES:
                options = {**options, "pc_factor_mat_solver_type": batched_package}
            if factorized and options.get("pc_factor_mat_solver_type") == "mumps":
                self.mumps_factorizations += 1
                if single_precision:
                    options = {**options, "pc_precision": "single"}
            return options

        # A mode sharing a hierarchy keeps its Krylov options; its PC is the shared one.
        mode_options = {k: v for k, v in inner_options.items() if not k.startswith("pc_")}
        if factorized:
            span = factorization_span(operators.same_stiffness and self.modes.exact)
        else:
            span = SHARED_HIERARCHY_SPAN
        all_shifts = _shifts(values, self.groups, a, b)
        # When one cluster spans every mode and each mode is one pass of its solver, all
        # modes get one fixed operator A: the preconditioner is I ⊗ A⁻¹ and the modal
        # transforms cancel (P P⁻¹ = I), so apply skips them.
        self.uniform = preonly and len(_clusters(all_shifts, span)) == 1
        clusters = _clusters(shifts, span)
        started = reported = time.perf_counter()
        for done, cluster in enumerate(clusters):
            now = time.perf_counter()
            if now - reported > SETUP_PROGRESS_SECONDS:
                # No collective here (each rank has its own clusters): the set-up's progress
                # prints rank 0's.
                reported = now
                SETUP_LOG.info("spectral solver: factorization %d of %d on this rank (%.0f s)",
                               done + 1, len(clusters), now - started)
            if len(cluster) == 1 and not self.uniform:
                self.solvers.append(scalar_solver(scalar_matrix(shifts[cluster[0]]),
                                                  factorization_options(inner_options, cluster)))
                continue
            # One hierarchy, built at the cluster's geometric-mean shift, for all its modes;
            # when uniform, at that of all modes, so that every rank builds the same one.
            first, last = ((all_shifts[0], all_shifts[-1]) if self.uniform
                           else (shifts[cluster[0]], shifts[cluster[-1]]))
            reference = math.sqrt(first * last)
            hierarchy = scalar_solver(scalar_matrix(reference), factorization_options(
                {**inner_options, "ksp_type": "preonly"}, cluster))
            if preonly:
                self.solvers.extend([hierarchy] * len(cluster))  # its V-cycle is the solve
                continue
            self._shared.append(hierarchy)
            for i in cluster:
                ksp = scalar_solver(scalar_matrix(shifts[i]), mode_options, set_up=False)
                ksp.getPC().setType("python")
                ksp.getPC().setPythonContext(_SharedHierarchy(hierarchy))
                self.solvers.append(ksp)
        size = self.layout.size_global if self.per_rank else self.layout.size_local
        self._b, self._x = np.zeros(size), np.zeros(size)
        self._batch_into_solves(factorized and inner_options.get("ksp_type") == "preonly",
                                size, scalar_comm)
        self.block_tolerances = block_tolerances
        self.mode_iterations: dict[int, int] = {}  # of this rank's modes, last solve
        N, n = self.layout.num_blocks, self.layout.size_local
        self._modal, self._solved = np.empty((N, n)), np.empty((N, n))
        self._b_vec = PETSc.Vec().createWithArray(self._b, comm=scalar_comm)
        self._x_vec = PETSc.Vec().createWithArray(self._x, comm=scalar_comm)
        self.last_iterations = 0
        self.coarse = None
        if not self.modes.exact and operators.same_stiffness:
            self.coarse = _StationaryCorrection(operators, a, b, stiffness)

    def _batch_into_solves(self, batched: bool, size: int, scalar_comm) -> None:
        """The solves of an application: modes sharing one factorization in one batch
        (``MatMatSolve`` over the columns of a dense block), every other mode alone."""
        self.batches: list[tuple[PETSc.KSP, list[int]]] = []
        for group, ksp in zip(self.local_groups, self.solvers, strict=True):
            if batched and self.batches and self.batches[-1][0] is ksp:
                self.batches[-1][1].extend(group)
            elif batched:
                self.batches.append((ksp, list(group)))
            else:
                self.batches.extend((ksp, [k]) for k in group)
        # Bounded dense blocks: a batch of more columns than BATCH_BYTES allows is split.
        most = max(2, BATCH_BYTES // (8 * max(size, 1)))
        self.batches = [(ksp, modes[i:i + most]) for ksp, modes in self.batches
                        for i in range(0, len(modes), most)]
        columns = max((len(modes) for _, modes in self.batches if len(modes) > 1), default=0)
        self._rhs_block, self._solution_block = np.zeros((2, columns, size))
        # Dense matrices over the blocks' leading rows: row j is column j (column-major).
        self._dense = {}
        for k in {len(modes) for _, modes in self.batches if len(modes) > 1}:
            self._dense[k] = tuple(
                PETSc.Mat().createDense(((size, None), (None, k)), array=block[:k].reshape(-1),
                                        comm=scalar_comm)
                for block in (self._rhs_block, self._solution_block))

    def apply(self, pc, r: PETSc.Vec, x: PETSc.Vec) -> None:
        N, n = self.layout.num_blocks, self.layout.size_local
        R, out = r.array_r.reshape(N, n), x.array.reshape(N, n)
        transform = not (self.identity or self.uniform)
        modal = self.modes.to_modes(R, out=self._modal) if transform else R
        budgets = None
        if self.block_tolerances is not None:
            squares = np.einsum("kj,kj->k", modal, modal)
            self.layout.comm.Allreduce(MPI.IN_PLACE, squares, op=MPI.SUM)
            budgets = residual_budgets(np.sqrt(squares), *self.block_tolerances)
        exchange, solved = self.exchange, self._solved
        if exchange is not None:
            exchange.send(modal)  # this rank's modes arrive whole
        iterations, failed = 0, None
        for ksp, modes in self.batches:
            if len(modes) > 1:
                rhs, solution = self._rhs_block[:len(modes)], self._solution_block[:len(modes)]
                if exchange is None:
                    np.take(modal, modes, axis=0, out=rhs)
                else:
                    exchange.load_many(modes, rhs)
                reason = self._solve_batch(ksp, len(modes))
                if reason < 0 and failed is None:
                    failed = (modes[0], reason)
                count = ksp.getIterationNumber()
                iterations = max(iterations, count)
                self.mode_iterations.update(dict.fromkeys(modes, count))
                if exchange is None:
                    solved[modes] = solution
                else:
                    exchange.store_many(modes, solution)
                continue
            else:
                k = modes[0]
                if exchange is None:
                    self._b[:] = modal[k]
                else:
                    exchange.load(k, self._b)
                if budgets is not None:
                    ksp.setTolerances(rtol=0.0, atol=budgets[k])
                reason = self._solve_single(ksp)
                solutions = [(k, self._x)]
            if reason < 0 and failed is None:
                failed = (modes[0], reason)
            iterations = max(iterations, ksp.getIterationNumber())
            for k, solved_k in solutions:
                self.mode_iterations[k] = ksp.getIterationNumber()
                if exchange is None:
                    solved[k] = solved_k
                else:
                    exchange.store(k, solved_k)
        if exchange is not None:
            # Each rank solved different modes: agree on the outcome before anyone raises.
            comm = self.layout.comm
            failures = [f for f in comm.allgather(failed) if f is not None]
            failed = failures[0] if failures else None
            iterations = comm.allreduce(iterations, op=MPI.MAX)
            exchange.receive(solved if transform else out)
        if failed is not None:
            raise SolverError(
                f"spectral block solver: scalar mode {failed[0]} did not converge "
                f"(reason {reason_name(PETSc.KSP.ConvergedReason, failed[1])})"
            )
        self.last_iterations = iterations
        if transform:
            self.modes.from_modes(solved, out=out)
        elif exchange is None:
            out[:] = solved
        if self.coarse is not None:
            self.coarse.correct(r, x)

    def _solve_single(self, ksp: PETSc.KSP) -> int:
        """Solve the right-hand side vector into the solution vector, from zero; return a
        KSP converged reason (negative: failed)."""
        self._x[:] = 0.0
        try:
            ksp.solve(self._b_vec, self._x_vec)
        except PETSc.Error:  # asked to raise (-rd_spectral_ksp_error_if_not_converged)
            reason = ksp.getConvergedReason()
            # A failure PETSc raises before the Krylov method ran (e.g. in the factorization)
            # leaves no reason of its own.
            return reason if reason < 0 else PETSc.KSP.ConvergedReason.DIVERGED_PCSETUP_FAILED
        return ksp.getConvergedReason()

    def _solve_batch(self, ksp: PETSc.KSP, columns: int) -> int:
        """Solve the first ``columns`` rows of the right-hand side block into the solution
        block; return a KSP converged reason (negative: failed).

        ``KSPMatSolve`` does not report a failed factorization as ``KSPSolve`` does (MUMPS's
        raises, PETSc's solves with it): look before solving, and agree on the outcome over
        the ranks of the solve before and after it.
        """
        comm = ksp.getComm().tompi4py()

        def agreed(failed: bool) -> bool:
            return comm.allreduce(failed, op=MPI.LOR) if comm.size > 1 else failed

        try:
            ksp.setUp()  # factorizes again only if the operator changed
            failed = ksp.getPC().getFailedReason() != PETSc.PC.FailedReason.NOERROR
        except PETSc.Error:  # e.g. with -rd_spectral_ksp_error_if_not_converged
            failed = True
        failed = agreed(failed)
        if not failed:
            try:
                ksp.matSolve(*self._dense[columns])
            except PETSc.Error:
                failed = True
            failed = agreed(failed)
        return PETSc.KSP.ConvergedReason.DIVERGED_PCSETUP_FAILED if failed else 0

    def destroy(self, pc=None) -> None:
        """Free the scalar solvers (also called by PETSc when the PC is destroyed)."""
        # A shared hierarchy appears once per mode of its cluster: destroy it once.
        unique = {id(ksp): ksp for ksp in [*self.solvers, *self._shared]}
        dense = [mat for pair in self._dense.values() for mat in pair]
        for obj in [*unique.values(), *self.matrices, *dense, self._b_vec, self._x_vec]:
            obj.destroy()
        if self.coarse is not None:
            self.coarse.destroy()
            self.coarse = None
        if self.exchange is not None:
            self.exchange.destroy()
        self.solvers, self.matrices, self._shared, self._dense = [], [], [], {}
