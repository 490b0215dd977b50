"""The problem as the user states it: settings, graphs and expressions.

Pure Python: importing this package does not import DOLFINx or PETSc.
"""
