"""The built-in default problem: a toy neural-architecture search.

Eight architectures sit on the vertices of a 3-cube (edges join architectures one network
morphism apart). Each has 2-D weights x in [-2, 2]^2 and a loss landscape V_g: a bowl
around its own optimum c_g on the circle of radius 1/2 plus a well of its own depth d_g, so
architectures differ in how good their best weights are. A uniform population of networks
flows under the detailed-balance (gibbs) coupling at temperature beta = 0.1; the mass
gathers on the architecture with the deepest well.
"""

from __future__ import annotations

__all__ = ["DEFAULT_POTENTIAL", "default_config"]

_R2 = "((x[0] - 0.5*cos(pi*g/4))**2 + (x[1] - 0.5*sin(pi*g/4))**2)"
# Depths d_g = 0.3 + 0.6 exp(-(g - 5)^2 / 2): architecture 5 has the deepest well (0.9),
# the next best (4 and 6) reach 0.66.
DEFAULT_POTENTIAL = f"0.5*{_R2} - (0.3 + 0.6*exp(-(g - 5)**2/2))*exp(-2*{_R2})"


def default_config() -> dict:
    """The default problem as config data (what ``rdgraph run`` without CONFIG solves)."""
    return {
        "mesh": {"shape": "rectangle", "cells": [64, 64], "lower": [-2.0, -2.0],
                 "upper": [2.0, 2.0]},
        "space": {"degree": 1},
        "graph": {"kind": "hypercube", "dim": 3, "weight": 2.0},
        "model": {
            "coupling": "gibbs",
            "beta": 0.1,
            "potential": DEFAULT_POTENTIAL,
            # Total mass 1: the area is 16 and there are 8 architectures.
            "initial": "1/128",
        },
        "time": {"scheme": "implicit-euler", "dt": 0.05, "t_end": 10.0},
        "solver": {"type": "auto"},
        "output": {"fields_every": 10, "npz": True, "plots": True},
    }
