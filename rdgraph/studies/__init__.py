"""Studies built on runs: verification and convergence, the JKO study, parameter sweeps."""
