"""Per-step diagnostics: vertex masses, free energy, relative entropy, minimum density."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rdgraph.compat import MPI

__all__ = ["CSV_VERTEX_COLUMNS", "Diagnostics", "DiagnosticsRecorder", "csv_header",
           "mass_aggregates"]

CSV_VERTEX_COLUMNS = 64
"""Graphs of at most this many vertices get a ``mass_<g>`` column per vertex in
``diagnostics.csv``; larger ones get the aggregates of :data:`AGGREGATE_COLUMNS` instead
(every vertex's mass is in ``vertex_masses.bin``)."""

AGGREGATE_COLUMNS = ["mass_max", "mass_max_vertex", "mass_effective_vertices"]


def csv_header(num_vertices: int) -> list[str]:
    """Columns of ``diagnostics.csv`` (part of the output contract).

    Up to :data:`CSV_VERTEX_COLUMNS` vertices: ``mass_0 ... mass_{N-1}``; beyond, the
    aggregates ``mass_max`` (the largest vertex mass), ``mass_max_vertex`` (its vertex) and
    ``mass_effective_vertices`` (``exp`` of the Shannon entropy of the mass fractions: N
    for equal masses, 1 when one vertex holds everything).
    """
    per_vertex = ([f"mass_{g}" for g in range(num_vertices)]
                  if num_vertices <= CSV_VERTEX_COLUMNS else AGGREGATE_COLUMNS)
    return (
        ["step", "t", "mass"]
        + per_vertex
        + ["free_energy", "rel_entropy", "min_density", "ksp_iterations"]
    )


def mass_aggregates(masses: np.ndarray) -> list:
    """The values of :data:`AGGREGATE_COLUMNS` for the vertex masses ``masses``."""
    top = int(np.argmax(masses))
    total = float(masses.sum())
    fractions = np.clip(masses, 0.0, None) / total if total > 0 else np.zeros_like(masses)
    positive = fractions[fractions > 0]
    effective = float(np.exp(-(positive * np.log(positive)).sum())) if positive.size else 0.0
    return [float(masses[top]), top, effective]


@dataclass(frozen=True)
class Diagnostics:
    step: int
    t: float
    vertex_masses: np.ndarray
    free_energy: float
    rel_entropy: float
    min_density: float
    ksp_iterations: int
    # Scheme-specific values appended to the row (accelerated: ACCELERATED_COLUMNS).
    extra: tuple = ()

    @property
    def mass(self) -> float:
        return float(self.vertex_masses.sum())

    def row(self) -> list:
        return (
            [self.step, self.t, self.mass]
            + (list(self.vertex_masses) if self.vertex_masses.size <= CSV_VERTEX_COLUMNS
               else mass_aggregates(self.vertex_masses))
            + [self.free_energy, self.rel_entropy, self.min_density, self.ksp_iterations]
            + list(self.extra)
        )


class DiagnosticsRecorder:
    """Computes :class:`Diagnostics` of the current state (collective).

    Args:
        model: The model (for the energy forms).
        mass_row_sums: ``M 1`` on the owned dofs.
    """

    def __init__(self, model, mass_row_sums: np.ndarray):
        self.model = model
        self.comm = model.mesh.comm
        self._weights = mass_row_sums
        self._owned = model.num_owned

    def _blocks(self, state) -> np.ndarray:
        """The owned values of a block vector as an ``(N, owned)`` view (no copy)."""
        return state.array_r.reshape(self.model.graph.n, self._owned)

    def vertex_masses(self, state) -> np.ndarray:
        """``∫ρ_g`` for every vertex from the block vector ``state`` (collective)."""
        local = self._blocks(state) @ self._weights  # one product for all N vertices
        result = np.empty_like(local)
        self.comm.Allreduce(local, result, op=MPI.SUM)
        return result

    def __call__(self, step: int, t: float, state, ksp_iterations: int) -> Diagnostics:
        """The diagnostics of the block vector ``state`` (collective).

        Computed from the block vector and the model's one work Function, so no PETSc or
        MPI object is made per vertex whatever N.
        """
        masses = self.vertex_masses(state)
        blocks = self._blocks(state)
        free, relative = self.model.energies(blocks, masses.sum())
        local_min = float(np.min(blocks, initial=np.inf))
        return Diagnostics(
            step=step,
            t=t,
            vertex_masses=masses,
            free_energy=free,
            rel_entropy=relative,
            min_density=self.comm.allreduce(local_min, op=MPI.MIN),
            ksp_iterations=ksp_iterations,
        )
