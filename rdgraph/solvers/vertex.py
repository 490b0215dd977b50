"""The vertex-block solver: exact vertex operators, the graph coupling left to the Krylov method.

Block Jacobi over the graph's vertices: each diagonal block ``a M + b (K_g + C_gg)`` of
``a (I ⊗ M) + b A`` (its own potential, and for gibbs its own leaving rates
``Σ_h w_gh exp((V_g − V_h)/2β)``) is factorized, or given one AMG hierarchy, and FGMRES on
the true operator corrects for the coupling between vertices. Where the spectral solver's mean
vertex operator ``K̄`` is far from every ``K_g`` (potentials that differ by many β), this one
is unaffected: per point and per edge, the iteration's contraction is about
``τ w / (1 + τ w)`` whatever the rates' ratio (``k_gh k_hg = 1``), so it converges in a few
iterations while ``τ·deg`` is moderate.

On more than one rank the vertices are dealt to the ranks, each factorizing and solving its
vertices' blocks whole and serially (as the spectral solver's modes,
:mod:`rdgraph.solvers.mode_exchange`).
"""

from __future__ import annotations

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.errors import SolverError
from rdgraph.solvers.mode_exchange import ModeExchange, deal_groups
from rdgraph.solvers.petsc import configure_ksp, reason_name

__all__ = ["VertexBlockPreconditioner", "potential_spread"]


def potential_spread(operators) -> float:
    """How far the vertex operators differ: ``max |V_g − V_h| / β`` over the graph's edges and
    the nodes (global; the same on every rank). 0 for one potential; the spectral solver's
    mean operator ``K̄`` is far from the ``K_g`` when this is more than a few units."""
    model = operators.model
    if operators.same_stiffness:
        return 0.0
    beta = model.beta_value
    spread = 0.0
    for g, h, _ in operators.graph.edges:
        difference = model.potential_nodal(g) - model.potential_nodal(h)
        if difference.size:
            spread = max(spread, float(np.abs(difference).max()) / beta)
    return operators.layout.comm.allreduce(spread, op=MPI.MAX)


def _gather_to(comm: MPI.Comm, local: np.ndarray, root: int) -> np.ndarray | None:
    """The ranks' arrays concatenated in rank order on ``root``; ``None`` elsewhere."""
    counts = np.array(comm.allgather(len(local)), dtype=np.int64)
    whole = np.empty(int(counts.sum()), dtype=local.dtype) if comm.rank == root else None
    comm.Gatherv(np.ascontiguousarray(local), [whole, counts] if whole is not None else None,
                 root=root)
    return whole


def _set_up(ksp: PETSc.KSP, options: dict, prefix: str, vertex: int) -> tuple | None:
    """Configure and set up the solver of one vertex block (local to this process).

    Returns:
        ``None``, or ``(vertex, why)`` when the set-up raised or left the preconditioner
        failed (PETSc records a zero pivot or a factorization out of memory as the PC's
        failed reason instead of raising).
    """
    try:
        configure_ksp(ksp, options, prefix, set_up=True)
    except PETSc.Error as error:
        return vertex, f"PETSc error {error.ierr}"
    except MemoryError:
        return vertex, "out of memory"
    failed = ksp.getPC().getFailedReason()
    if failed != PETSc.PC.FailedReason.NOERROR:
        return vertex, reason_name(PETSc.PC.FailedReason, failed)
    return None


def _factorized(ksp: PETSc.KSP) -> bool:
    """Whether ``ksp`` only applies a factorization (``preonly`` with LU or Cholesky)."""
    return (ksp.getType() == PETSc.KSP.Type.PREONLY
            and ksp.getPC().getType() in (PETSc.PC.Type.LU, PETSc.PC.Type.CHOLESKY))


class VertexBlockPreconditioner:
    """Applies ``blockdiag((a M + b (K_g + C_gg))⁻¹)`` (a PETSc python PC context).

    Args:
        operators: The block operators.
        mass_coefficient: ``a``.
        operator_coefficient: ``b``.
        inner_options: PETSc options (no prefix) of the vertex block solvers.
        prefix: Options prefix of the vertex block solvers.
    """

    def __init__(self, operators, mass_coefficient: float, operator_coefficient: float,
                 inner_options: dict, prefix: str):
        self.layout = layout = operators.layout
        comm = layout.comm
        a, b = mass_coefficient, operator_coefficient
        N = layout.num_blocks
        pattern = operators.pattern
        diagonals = operators.vertex_diagonals()
        self.per_rank = comm.size > 1
        self.matrices: list[PETSc.Mat] = []
        self.solvers: list[PETSc.KSP] = []
        if self.per_rank:
            dealt = deal_groups([1] * N, comm.size)
            self.exchange = ModeExchange(comm, layout.size_local, dealt)
            self.vertices = dealt[comm.rank]
            owner = {g: q for q, mine in enumerate(dealt) for g in mine}
            # The CSR structure of all rows (global columns), on every rank, once.
            counts = np.array(comm.allgather(len(pattern.indptr) - 1), dtype=np.int64)
            lengths = np.empty(int(counts.sum()), dtype=pattern.indptr.dtype)
            comm.Allgatherv(np.ascontiguousarray(np.diff(pattern.indptr)), [lengths, counts])
            indptr = np.zeros(len(lengths) + 1, dtype=pattern.indptr.dtype)
            np.cumsum(lengths, out=indptr[1:])
            nnz = np.array(comm.allgather(len(pattern.indices)), dtype=np.int64)
            indices = np.empty(int(nnz.sum()), dtype=pattern.indices.dtype)
            comm.Allgatherv(np.ascontiguousarray(pattern.indices), [indices, nnz])
            for g in range(N):
                # Gathered on the rank that solves vertex g only.
                values = _gather_to(comm, a * operators.mass + b * diagonals[g], owner[g])
                if values is not None:
                    self.matrices.append(PETSc.Mat().createAIJ(
                        size=(len(lengths), len(lengths)), csr=(indptr, indices, values),
                        comm=PETSc.COMM_SELF))
            scalar_comm = PETSc.COMM_SELF
            size = int(counts.sum())
        else:
            self.exchange = None
            self.vertices = list(range(N))
            for g in range(N):
                self.matrices.append(pattern.matrix(a * operators.mass + b * diagonals[g], comm))
            scalar_comm = comm
            size = layout.size_local
        # Each block factorizes on its own rank alone: a failure there (a zero pivot, out of
        # memory) must not leave the other ranks waiting in the next collective call, so it is
        # noted, decided by all ranks together, and reported by the first solve on every rank
        # (a SolverError: the retry path then takes over).
        failure = None
        for g, matrix in zip(self.vertices, self.matrices, strict=True):
            ksp = PETSc.KSP().create(scalar_comm)
            ksp.setOperators(matrix)
            self.solvers.append(ksp)
            if failure is None:
                failure = _set_up(ksp, inner_options, prefix, g)
        # A factorized block is solved by its factors' own triangular solves: KSPSolve's
        # bookkeeping around them cost as much as the solve on small blocks.
        self.factors = [ksp.getPC().getFactorMatrix() if failure is None and _factorized(ksp)
                        else None for ksp in self.solvers]
        failures = [f for f in comm.allgather(failure) if f is not None]
        #: Why a vertex block could not be set up (the same on every rank), else ``None``.
        self.setup_failure: str | None = None
        if failures:
            vertex, why = min(failures)
            self.setup_failure = f"the block of vertex {vertex} could not be set up ({why})"
        self._b, self._x = np.zeros(size), np.zeros(size)
        # This rank's blocks, whole, on several ranks: a copy of the exchange's pieces, so
        # that each block is one contiguous row for its solve.
        self._rows: np.ndarray | None = None
        self._b_vec = PETSc.Vec().createWithArray(self._b, comm=scalar_comm)
        self._x_vec = PETSc.Vec().createWithArray(self._x, comm=scalar_comm)

    def apply(self, pc, r: PETSc.Vec, x: PETSc.Vec) -> None:
        if self.setup_failure is not None:
            raise SolverError(f"vertex-block solver: {self.setup_failure}")
        N, n = self.layout.num_blocks, self.layout.size_local
        R, out = r.array_r.reshape(N, n), x.array.reshape(N, n)
        exchange = self.exchange
        if exchange is None:
            rhs, solutions = R, out
        else:
            exchange.send(R)
            if self._rows is None:
                self._rows = np.empty((len(self.vertices), len(self._b)))
            exchange.load_many(self.vertices, self._rows)
            rhs = solutions = self._rows
        failed = None
        for i, (g, ksp, factor) in enumerate(zip(self.vertices, self.solvers, self.factors,
                                                  strict=True)):
            row = g if exchange is None else i
            self._b[:] = rhs[row]
            self._x[:] = 0.0
            try:
                if factor is not None:
                    factor.solve(self._b_vec, self._x_vec)
                    reason = PETSc.KSP.ConvergedReason.CONVERGED_ITS
                else:
                    ksp.solve(self._b_vec, self._x_vec)
                    reason = ksp.getConvergedReason()
            except PETSc.Error:
                # Noted, not raised: the other ranks would wait in the exchange below.
                reason = PETSc.KSP.ConvergedReason.DIVERGED_PCSETUP_FAILED
            if reason < 0 and failed is None:
                failed = (g, reason)
            solutions[row] = self._x
        if exchange is not None:
            exchange.store_many(self.vertices, self._rows)
            failures = [f for f in self.layout.comm.allgather(failed) if f is not None]
            failed = failures[0] if failures else None
            exchange.receive(out)
        if failed is not None:
            raise SolverError(
                f"vertex-block solver: the block of vertex {failed[0]} did not solve "
                f"(reason {reason_name(PETSc.KSP.ConvergedReason, failed[1])})")

    def destroy(self, pc=None) -> None:
        """Free the block solvers (also called by PETSc when the PC is destroyed)."""
        factors = [factor for factor in self.factors if factor is not None]
        for obj in [*factors, *self.solvers, *self.matrices, self._b_vec, self._x_vec]:
            obj.destroy()
        self.solvers, self.matrices, self.factors = [], [], []
        if self.exchange is not None:  # its MPI datatypes, where the blocks are reordered
            self.exchange.destroy()
