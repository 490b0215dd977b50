"""What ``rdgraph particles`` produced: the particle fractions and their comparison with FEM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Z_LIMIT", "Comparison", "ParticleResult"]

# Standard errors allowed per (time, vertex) pair, before the correction for many tests.
Z_LIMIT = 3.0


@dataclass
class ParticleResult:
    """Vertex fractions over time (identical on every rank) and, on rank 0, the snapshots.

    Attributes:
        steps: Output steps (multiples of the config's dt), shape ``(K,)``.
        times: Output times, shape ``(K,)``.
        fractions: Fraction of particles per vertex, shape ``(K, N)``.
        standard_errors: Their binomial standard errors, shape ``(K, N)``.
        particles: Total number of particles.
        snapshot_times: Times of the position snapshots, shape ``(S,)``.
        positions: ``(S, P, d)`` positions on rank 0 (None elsewhere).
        labels: ``(S, P)`` vertex labels on rank 0 (None elsewhere).
        acceptance: Acceptance rate of the rejection sampling of the initial positions.
        out_dir: The run directory, if one was written.
        comparison: The FEM comparison, if asked for.
        summary: What summary.json holds.
        accelerated: With ``dynamics = "accelerated"``: ``free_energy``, ``kinetic_energy``,
            ``restarts``, ``jumps`` at the output times (arrays of shape ``(K,)``).
    """

    steps: np.ndarray
    times: np.ndarray
    fractions: np.ndarray
    standard_errors: np.ndarray
    particles: int
    snapshot_times: np.ndarray
    positions: np.ndarray | None
    labels: np.ndarray | None
    acceptance: float = 1.0
    out_dir: Path | None = None
    comparison: Comparison | None = None
    summary: dict = field(default_factory=dict)
    accelerated: dict | None = None


@dataclass
class Comparison:
    """Particle fractions against the FEM vertex masses at the output times.

    Attributes:
        fem_fractions: FEM vertex masses over the total mass, shape ``(K, N)``.
        z: ``(p̂ − p) / sqrt(p(1 − p)/P)``, shape ``(K, N)``.
        limit: The largest |z| accepted.
        fem_dir: The FEM run directory.
    """

    fem_fractions: np.ndarray
    z: np.ndarray
    limit: float
    fem_dir: Path | None = None

    @property
    def max_abs_z(self) -> float:
        return float(np.max(np.abs(self.z)))

    @property
    def worst(self) -> tuple[int, int]:
        """(output index, vertex) of the largest ``|z|``."""
        k, g = np.unravel_index(int(np.argmax(np.abs(self.z))), self.z.shape)
        return int(k), int(g)

    @property
    def passed(self) -> bool:
        return self.max_abs_z <= self.limit

    @property
    def beyond_3(self) -> int:
        """How many |z| exceed 3 (about 0.27 % of them by chance)."""
        return int(np.sum(np.abs(self.z) > Z_LIMIT))
