"""Write ``examples/search_space.csv``: a synthetic loss table on NAS-Bench-201's cell space.

NAS-Bench-201 builds a cell from 6 edges, each carrying one of 5 operations, so its search
space is the Hamming graph H(6, 5) with 15,625 architectures. The table here is made up (the
real benchmark's numbers are not redistributed): every operation on every edge adds its own
effect to the loss, plus seeded noise for the interactions, scaled to [0, 1]. One row per
architecture in vertex order, with its name (the operations joined by ``-``) in ``label``.

    python scripts/make_search_space.py [--out examples/search_space.csv] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np

OPERATIONS = ("none", "skip", "c1", "c3", "pool")  # conv 1x1, conv 3x3, avg pool 3x3
EDGES = 6
#: Mean effect of each operation on the loss (the convolutions help, "none" hurts).
EFFECT = {"none": 0.30, "skip": 0.10, "c1": 0.0, "c3": -0.12, "pool": 0.15}


def loss_table(seed: int) -> tuple[list[str], np.ndarray]:
    """Labels and losses in vertex order (``numpy.ravel_multi_index`` of the words)."""
    rng = np.random.default_rng(seed)
    # Each edge weighs the operations differently: per-edge effects around the means.
    effects = np.array([[EFFECT[op] for op in OPERATIONS]] * EDGES)
    effects += 0.05 * rng.standard_normal(effects.shape)
    words = list(itertools.product(range(len(OPERATIONS)), repeat=EDGES))
    loss = np.array([effects[np.arange(EDGES), word].sum() for word in words])
    loss += 0.03 * rng.standard_normal(loss.size)
    loss = (loss - loss.min()) / (loss.max() - loss.min())
    labels = ["-".join(OPERATIONS[a] for a in word) for word in words]
    return labels, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path, default=root / "examples" / "search_space.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels, loss = loss_table(args.seed)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "loss"])
        writer.writerows((label, f"{value:.4f}") for label, value in zip(labels, loss,
                                                                         strict=True))
    print(f"wrote {len(labels)} architectures to {args.out}")


if __name__ == "__main__":
    main()
