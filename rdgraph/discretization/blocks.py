"""Block matrices and vectors for N fields on one scalar space.

All scalar operators of the model (mass, per-vertex drift–diffusion, weighted mass) come
from forms on the same space, so they share one sparsity pattern. They are kept as the
value arrays of that common local CSR pattern, and any linear combination of them over
blocks ``(g, h)`` becomes one monolithic PETSc AIJ matrix in DOLFINx's blocked layout:
on each rank, the owned dofs of block 0, then of block 1, and so on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rdgraph.compat import MPI, PETSc, dolfinx

__all__ = ["BlockLayout", "ScalarPattern", "dense_columns"]


def dense_columns(rows: tuple[int, int], num_columns: int,
                  comm: MPI.Comm) -> tuple[np.ndarray, PETSc.Mat]:
    """A dense PETSc matrix of ``num_columns`` columns on a zeroed column-major array.

    The array's transpose is the ``(num_columns, local rows)`` row-major layout of a block
    vector, so N blocks go in and out as plain copies, and one sparse-times-dense product
    applies a scalar matrix to all of them.

    Args:
        rows: ``(local, global)`` rows.
        num_columns: Columns (N, the blocks).
        comm: The communicator.
    """
    array = np.zeros((rows[0], num_columns), order="F")
    matrix = PETSc.Mat().createDense((rows, (PETSc.DECIDE, num_columns)), array=array,
                                     comm=comm)
    matrix.assemble()
    return array, matrix


class ScalarPattern:
    """The shared local CSR pattern of the scalar operators on one function space.

    Args:
        form: Any bilinear form on the space; its pattern defines the pattern.
    """

    def __init__(self, form: dolfinx.fem.Form):
        self._matrix = dolfinx.fem.petsc.create_matrix(form)
        # Assemble once: PETSc drops preallocated entries that were never set.
        dolfinx.fem.petsc.assemble_matrix(self._matrix, form)
        self._matrix.assemble()
        self.indptr, self.indices, _ = self._matrix.getValuesCSR()
        self.nnz = len(self.indices)
        self.row_start = self._matrix.getOwnershipRange()[0]  # global index of local row 0
        self._csr, self._order = self._native_csr(form)

    def _native_csr(self, form: dolfinx.fem.Form):
        """DOLFINx's own CSR matrix and the map from its owned values to the PETSc pattern.

        Assembling into ``la.MatrixCSR`` skips PETSc's global-index insertion, which is most
        of the cost of assembling a P1 operator; with N vertex operators that adds up.
        Returns ``(None, None)`` if the two patterns differ (then PETSc assembly is used).
        """
        csr = dolfinx.fem.assemble_matrix(form)
        csr.scatter_reverse()
        rows = len(self.indptr) - 1
        indptr = csr.indptr[: rows + 1]
        columns = csr.index_map(1).local_to_global(csr.indices[: indptr[-1]].astype(np.int32))
        row_of = np.repeat(np.arange(rows), np.diff(indptr))
        order = np.lexsort((columns, row_of))  # PETSc rows hold sorted global columns
        same = (indptr[-1] == self.nnz and np.array_equal(indptr, self.indptr)
                and np.array_equal(columns[order], self.indices))
        if not self._matrix.comm.tompi4py().allreduce(bool(same), op=MPI.LAND):
            return None, None
        return csr, order

    def assemble(self, form: dolfinx.fem.Form) -> np.ndarray:
        """Assemble ``form`` and return its values on the shared pattern (local rows)."""
        if self._csr is not None:
            self._csr.data[:] = 0
            dolfinx.fem.assemble_matrix(self._csr, form)
            self._csr.scatter_reverse()
            return self._csr.data[self._order]
        A = self._matrix
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, form)
        A.assemble()
        indptr, indices, values = A.getValuesCSR()
        if len(indices) != self.nnz or not np.array_equal(indices, self.indices):
            raise RuntimeError("form does not share the scalar sparsity pattern")
        return values.copy()

    def matrix(self, values: np.ndarray, comm: MPI.Comm) -> PETSc.Mat:
        """A scalar PETSc matrix with the given values on the shared pattern."""
        n, n_global = self._matrix.getSizes()[0]
        return PETSc.Mat().createAIJ(
            size=((n, n_global), (n, n_global)),
            csr=(self.indptr, self.indices, values),
            comm=comm,
        )

    def destroy(self) -> None:
        self._matrix.destroy()


class BlockLayout:
    """Index layout of ``num_blocks`` copies of a scalar space (DOLFINx "mpi" block layout).

    Args:
        V: The scalar function space.
        num_blocks: Number of blocks (graph vertices).
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, num_blocks: int):
        imap = V.dofmap.index_map
        self.comm = V.mesh.comm
        self.num_blocks = num_blocks
        self.size_local = imap.size_local
        self.size_global = imap.size_global
        starts = np.array(self.comm.allgather(imap.local_range[0]), dtype=np.int64)
        sizes = np.array(self.comm.allgather(imap.size_local), dtype=np.int64)
        self._starts, self._sizes = starts, sizes
        self.local_range = (
            num_blocks * int(starts[self.comm.rank]),
            num_blocks * int(starts[self.comm.rank] + sizes[self.comm.rank]),
        )

    def _column_map(self, scalar_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base global block index (block 0) and block stride of each scalar column."""
        cols = scalar_columns.astype(np.int64)
        owner = np.searchsorted(self._starts, cols, side="right") - 1
        base = self.num_blocks * self._starts[owner] + (cols - self._starts[owner])
        return base, self._sizes[owner]

    def create_vector(self) -> PETSc.Vec:
        """A block vector (no ghosts) in this layout."""
        n = self.num_blocks * self.size_local
        vec = PETSc.Vec().createMPI((n, self.num_blocks * self.size_global), comm=self.comm)
        vec.setUp()
        return vec

    def block(self, vec: PETSc.Vec, g: int) -> np.ndarray:
        """A writable view of block ``g``'s owned entries."""
        n = self.size_local
        return vec.array[g * n : (g + 1) * n]

    def blocks(self, vec: PETSc.Vec) -> np.ndarray:
        """The owned entries of all blocks as a writable ``(num_blocks, owned)`` view."""
        return vec.array.reshape(self.num_blocks, self.size_local)

    def to_function(self, vec: PETSc.Vec, g: int, u: dolfinx.fem.Function) -> None:
        """Copy block ``g`` of a block vector into ``u`` and update its ghosts."""
        n = self.size_local
        u.x.array[:n] = vec.array_r[g * n : (g + 1) * n]
        u.x.scatter_forward()

    def to_functions(self, vec: PETSc.Vec, functions) -> None:
        """Copy a block vector into per-block Functions and update their ghosts."""
        n = self.size_local
        array = vec.array_r
        for g, u in enumerate(functions):
            u.x.array[:n] = array[g * n : (g + 1) * n]
            u.x.scatter_forward()

    def from_functions(self, functions, vec: PETSc.Vec) -> None:
        """Copy the owned values of per-block Functions into a block vector."""
        n = self.size_local
        array = vec.array
        for g, u in enumerate(functions):
            array[g * n : (g + 1) * n] = u.x.array[:n]

    def matrix(
        self, pattern: ScalarPattern, blocks: Mapping[tuple[int, int], np.ndarray]
    ) -> PETSc.Mat:
        """The monolithic AIJ matrix whose block ``(g, h)`` has ``blocks[g, h]`` as values.

        Args:
            pattern: The shared scalar pattern the value arrays live on.
            blocks: Values on ``pattern`` for each non-zero block; absent blocks are zero.
        """
        n, N = self.size_local, self.num_blocks
        row_lengths = np.diff(pattern.indptr).astype(np.int64)
        row_of_entry = np.repeat(np.arange(n, dtype=np.int64), row_lengths)
        base, stride = self._column_map(pattern.indices)
        by_row: dict[int, list[int]] = {}
        for g, h in blocks:
            by_row.setdefault(g, []).append(h)

        indptr = [np.zeros(1, dtype=np.int64)]
        indices, values = [], []
        offset = 0
        for g in range(N):
            hs = sorted(by_row.get(g, []))
            if not hs:
                indptr.append(np.full(n, offset, dtype=np.int64))
                continue
            rows = np.tile(row_of_entry, len(hs))
            cols = np.concatenate([base + h * stride for h in hs])
            vals = np.concatenate([blocks[g, h] for h in hs])
            order = np.lexsort((cols, rows))
            indices.append(cols[order])
            values.append(vals[order])
            counts = np.bincount(rows, minlength=n)
            indptr.append(offset + np.cumsum(counts))
            offset += len(cols)
        indptr = np.concatenate(indptr).astype(PETSc.IntType)
        indices = (np.concatenate(indices) if indices else np.zeros(0)).astype(PETSc.IntType)
        values = np.concatenate(values) if values else np.zeros(0)
        size = (N * n, N * self.size_global)
        A = PETSc.Mat().createAIJ(size=(size, size), csr=(indptr, indices, values), comm=self.comm)
        A.assemble()
        return A
