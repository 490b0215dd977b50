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

    Args:
        comm: The communicator of the block layout.
        size_local: Owned scalar dofs on this rank.
        modes_of_rank: The mode indices each rank solves (every mode exactly once).
    """

    def __init__(self, comm: MPI.Comm, size_local: int, modes_of_rank: list[list[int]]):
        self.comm = comm
        sizes = np.array(comm.allgather(size_local), dtype=np.int64)
        self.bounds = np.concatenate([[0], np.cumsum(sizes)])
        self.size_global = int(self.bounds[-1])
        self.modes = [int(k) for k in modes_of_rank[comm.rank]]
        self.order = np.array([k for modes in modes_of_rank for k in modes], dtype=np.int64)
        counts = np.array([len(modes) for modes in modes_of_rank], dtype=np.int64)
        # Block layout -> whole: this rank sends each rank its modes' owned rows ...
        self.counts_out = counts * size_local
        # ... and receives its own modes' rows from every rank.
        self.counts_in = len(self.modes) * sizes
        self.size_local = size_local

    def to_whole(self, modal: np.ndarray) -> np.ndarray:
        """``modal`` (N × owned dofs, every mode) → this rank's modes, whole (modes × dofs)."""
        send = np.ascontiguousarray(modal[self.order])
        received = np.empty(int(self.counts_in.sum()))
        self.comm.Alltoallv([send, self.counts_out], [received, self.counts_in])
        whole = np.empty((len(self.modes), self.size_global))
        offset = 0
        for q in range(self.comm.size):
            lo, hi = self.bounds[q], self.bounds[q + 1]
            chunk = received[offset:offset + self.counts_in[q]]
            whole[:, lo:hi] = chunk.reshape(len(self.modes), hi - lo)
            offset += self.counts_in[q]
        return whole

    def to_blocks(self, whole: np.ndarray, modal: np.ndarray) -> None:
        """The inverse of :meth:`to_whole`: write this rank's owned rows of every mode."""
        send = np.concatenate([whole[:, self.bounds[q]:self.bounds[q + 1]].ravel()
                               for q in range(self.comm.size)])
        received = np.empty(int(self.counts_out.sum()))
        self.comm.Alltoallv([send, self.counts_in], [received, self.counts_out])
        modal[self.order] = received.reshape(len(self.order), self.size_local)
