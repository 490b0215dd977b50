"""Dealing the spectral solver's scalar modes to MPI ranks, each rank holding its modes whole.

Every scalar mode problem ``s M + b K̄`` is as large as one vertex's. Distributed over all
ranks, each of the N mode solves pays the ranks' communication, and a parallel direct solver
barely gains on such problems (measured here: MUMPS factorized a 66k-dof 2-D P1 problem in
0.36 s on 2 ranks and 0.37 s on one). Dealt to the ranks instead, each mode is factorized and
solved serially, side by side with the other ranks' modes; the only communication is one
all-to-all of the modal vectors before the solves and one after.
"""

from __future__ import annotations

import numpy as np

from rdgraph.compat import MPI, PETSc

__all__ = ["ModeExchange", "deal_groups", "whole_matrices"]


def deal_groups(group_sizes: list[int], num_ranks: int) -> list[list[int]]:
    """Deal consecutive groups of modes to ranks, balancing the number of modes per rank.

    A group (modes of one eigenvalue, one solver) is never split. Consecutive groups have
    close shifts, so a rank's modes can share an AMG hierarchy as on one rank.
    """
    total = sum(group_sizes)
    dealt: list[list[int]] = [[] for _ in range(num_ranks)]
    before = 0
    for i, size in enumerate(group_sizes):
        # The rank whose share of the modes contains the group's midpoint.
        rank = min(num_ranks - 1, int((before + 0.5 * size) * num_ranks / total))
        dealt[rank].append(i)
        before += size
    return dealt


def _allgather(comm: MPI.Comm, local: np.ndarray) -> np.ndarray:
    """The ranks' arrays concatenated in rank order, on every rank."""
    counts = np.array(comm.allgather(len(local)), dtype=np.int64)
    whole = np.empty(int(counts.sum()), dtype=local.dtype)
    comm.Allgatherv(np.ascontiguousarray(local), [whole, counts])
    return whole


def whole_matrices(comm: MPI.Comm, pattern, mass: np.ndarray, stiffness: np.ndarray,
                   operator_coefficient: float):
    """A function ``shift -> shift M + b K̄`` as a sequential matrix of all rows, on each rank.

    ``mass`` and ``stiffness`` are values on the shared local CSR ``pattern`` (global column
    indices, rows owned in rank order, as PETSc numbers them).
    """
    row_lengths = _allgather(comm, np.diff(pattern.indptr))
    indptr = np.zeros(len(row_lengths) + 1, dtype=pattern.indptr.dtype)
    np.cumsum(row_lengths, out=indptr[1:])
    indices = _allgather(comm, pattern.indices)
    mass_values = _allgather(comm, mass)
    stiffness_values = operator_coefficient * _allgather(comm, stiffness)
    n = len(row_lengths)

    def matrix(shift: float) -> PETSc.Mat:
        return PETSc.Mat().createAIJ(size=(n, n),
                                     csr=(indptr, indices, shift * mass_values + stiffness_values),
                                     comm=PETSc.COMM_SELF)

    return matrix


class ModeExchange:
    """Moves modal vectors between the block layout and whole vectors on the modes' ranks.

    ``send`` deals the block layout's rows to the modes' ranks, ``load``/``store`` copy one
    of this rank's modes, whole, out of and back into the received pieces, and ``receive``
    returns the stored modes to the block layout. The buffers are allocated once: each trip
    is one all-to-all and one copy of each of this rank's modes; when the modes are not dealt in
    order, indexed datatypes reorder the block's rows within the all-to-all.

    Args:
        comm: The communicator of the block layout.
        size_local: Owned scalar dofs on this rank.
        modes_of_rank: The mode indices each rank solves (every mode exactly once).
    """

    def __init__(self, comm: MPI.Comm, size_local: int, modes_of_rank: list[list[int]]):
        self.comm = comm
        sizes = np.array(comm.allgather(size_local), dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        self.size_global = int(bounds[-1])
        self.modes = [int(k) for k in modes_of_rank[comm.rank]]
        self._row = {k: i for i, k in enumerate(self.modes)}  # mode -> row of the pieces
        self.order = np.array([k for modes in modes_of_rank for k in modes], dtype=np.int64)
        counts = np.array([len(modes) for modes in modes_of_rank], dtype=np.int64)
        # This rank's owned rows of every mode, grouped by the rank that solves the mode: the
        # modal block itself when the modes are dealt in order (consecutive groups of
        # ascending eigenvalues are), else a reordered copy ...
        self._counts_rows = counts * size_local
        self.in_order = bool(np.array_equal(self.order, np.arange(len(self.order))))
        self._rows = None
        self._row_types: list[MPI.Datatype] = []
        if not self.in_order:
            # The reordering rides on the all-to-all: one indexed datatype per rank picks its
            # modes' rows out of the block (and puts them back), where a reordered copy cost
            # one more pass over the (N, n) block each way (H(6, 5) × 32², 2 ranks: 0.24 s
            # and 0.1 s of a 2.6 s step).
            starts = np.concatenate([[0], np.cumsum(counts)])
            for q in range(comm.size):
                rows = self.order[starts[q]:starts[q + 1]]
                if len(rows) and size_local:
                    kind = MPI.DOUBLE.Create_indexed_block(
                        size_local, (rows * size_local).tolist()).Commit()
                    self._row_types.append(kind)
                else:
                    self._row_types.append(None)
        # ... and the pieces of this rank's modes, grouped by the rank that owns the rows.
        self._counts_pieces = len(self.modes) * sizes
        self._pieces = np.empty(int(self._counts_pieces.sum()))
        offsets = np.concatenate([[0], np.cumsum(self._counts_pieces)])
        self._views = [self._pieces[offsets[q]:offsets[q + 1]].reshape(len(self.modes), sizes[q])
                       for q in range(comm.size)]
        self._parts = [slice(int(bounds[q]), int(bounds[q + 1])) for q in range(comm.size)]

    def send(self, modal: np.ndarray) -> None:
        """Deal ``modal`` (N × owned dofs, every mode) to the ranks that solve the modes."""
        if self.in_order:
            rows = np.ascontiguousarray(modal)  # no copy: the block layout's own array
            self.comm.Alltoallv([rows, self._counts_rows], [self._pieces, self._counts_pieces])
        else:
            self.comm.Alltoallw([np.ascontiguousarray(modal), *self._typed_rows()],
                                [self._pieces, *self._typed_pieces()])

    def load(self, mode: int, whole: np.ndarray) -> None:
        """Copy one of this rank's :attr:`modes`, whole, into ``whole``."""
        i = self._row[mode]
        for view, part in zip(self._views, self._parts, strict=True):
            whole[part] = view[i]

    def store(self, mode: int, whole: np.ndarray) -> None:
        """Put back one of this rank's modes (its solution) for :meth:`receive`."""
        i = self._row[mode]
        for view, part in zip(self._views, self._parts, strict=True):
            view[i] = whole[part]

    def load_many(self, modes: np.ndarray, whole: np.ndarray) -> None:
        """Copy several of this rank's modes, whole, into the rows of ``whole``."""
        rows = self._rows_of(modes)
        for view, part in zip(self._views, self._parts, strict=True):
            whole[:, part] = view[rows]

    def store_many(self, modes: np.ndarray, whole: np.ndarray) -> None:
        """Put back several of this rank's modes (the rows of ``whole``)."""
        rows = self._rows_of(modes)
        for view, part in zip(self._views, self._parts, strict=True):
            view[rows] = whole[:, part]

    def _rows_of(self, modes) -> np.ndarray:
        rows = np.fromiter((self._row[int(k)] for k in modes), dtype=np.int64, count=len(modes))
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
            return slice(int(rows[0]), int(rows[-1]) + 1)  # a view, no gather
        return rows

    def receive(self, modal: np.ndarray) -> None:
        """Write this rank's owned rows of every stored mode into ``modal`` (N × owned)."""
        if not self.in_order and modal.flags.c_contiguous:
            self.comm.Alltoallw([self._pieces, *self._typed_pieces()],
                                [modal, *self._typed_rows()])
            return
        direct = self.in_order and modal.flags.c_contiguous
        if direct:
            rows = modal
        else:
            if self._rows is None:
                self._rows = np.empty((len(self.order), modal.shape[1]))
            rows = self._rows
        self.comm.Alltoallv([self._pieces, self._counts_pieces], [rows, self._counts_rows])
        if not direct:
            modal[self.order] = rows

    def _typed_rows(self) -> tuple[list[int], list[int], list[MPI.Datatype]]:
        """Counts, byte displacements and datatypes of the block's side of an all-to-all."""
        counts = [1 if kind is not None else 0 for kind in self._row_types]
        kinds = [kind if kind is not None else MPI.DOUBLE for kind in self._row_types]
        return counts, [0] * len(counts), kinds

    def _typed_pieces(self) -> tuple[list[int], list[int], list[MPI.Datatype]]:
        """The same for the pieces' side (contiguous doubles)."""
        counts = [int(c) for c in self._counts_pieces]
        displacements = np.concatenate([[0], np.cumsum(self._counts_pieces)[:-1]]) * 8
        return counts, [int(d) for d in displacements], [MPI.DOUBLE] * len(counts)

    def destroy(self) -> None:
        """Free the datatypes of the reordering."""
        for kind in self._row_types:
            if kind is not None:
                kind.Free()
        self._row_types = [None] * len(self._row_types)
