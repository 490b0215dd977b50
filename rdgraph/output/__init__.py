"""What a run writes: the run directory, diagnostics, progress, checkpoints and figures."""
