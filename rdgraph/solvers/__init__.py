"""Linear and nonlinear solvers of the block system (PETSc)."""
