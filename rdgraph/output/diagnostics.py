"""Per-step diagnostics: vertex masses, free energy, relative entropy, minimum density."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rdgraph.compat import MPI

__all__ = ["Diagnostics", "DiagnosticsRecorder", "csv_header"]


def csv_header(num_vertices: int) -> list[str]:
    """Columns of ``diagnostics.csv`` (part of the output contract)."""
    return (
        ["step", "t", "mass"]
        + [f"mass_{g}" for g in range(num_vertices)]
        + ["free_energy", "rel_entropy", "min_density", "ksp_iterations"]
    )


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
            + list(self.vertex_masses)
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

    def vertex_masses(self, functions) -> np.ndarray:
        local = np.array([self._weights @ u.x.array[: self._owned] for u in functions])
        return self.comm.allreduce(local, op=MPI.SUM)

    def __call__(self, step: int, t: float, functions, ksp_iterations: int) -> Diagnostics:
        masses = self.vertex_masses(functions)
        free, relative = self.model.energies(functions, masses.sum())
        local_min = min(float(np.min(u.x.array[: self._owned], initial=np.inf)) for u in functions)
        return Diagnostics(
            step=step,
            t=t,
            vertex_masses=masses,
            free_energy=free,
            rel_entropy=relative,
            min_density=self.comm.allreduce(local_min, op=MPI.MIN),
            ksp_iterations=ksp_iterations,
        )
