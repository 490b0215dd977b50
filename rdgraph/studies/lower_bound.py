"""A lower bound for one time step on N vertices: one scalar operator, N right-hand sides.

Whatever the block solver, one implicit step of N coupled densities on one mesh has to solve
at least N scalar problems of the size of one density. :func:`scalar_lower_bound` measures the
cheapest form of that work: a single vertex's scalar operator ``a M + b K_g`` (implicit Euler:
``M + τ K_g``) factorized once, then all N right-hand sides solved with the cached factors, in
batches (``MatMatSolve`` on dense blocks of columns), the N solves split between the ranks, each
rank solving its share on the whole mesh serially. The factorization is set-up, not step: a
step costs only the triangular solves, so the bound ignores the coupling between vertices and
the differences between their operators. Benchmarks report ``step / LB`` (issue 22's targets:
at most 2 for equal potentials, 4 with per-vertex offsets).
"""

from __future__ import annotations

import time

import numpy as np

from rdgraph.compat import MPI, PETSc
from rdgraph.discretization.blocks import ScalarPattern
from rdgraph.discretization.meshes import build_mesh
from rdgraph.discretization.model import Model
from rdgraph.problem.config import Settings
from rdgraph.problem.validation import graph_from_settings
from rdgraph.solvers.petsc import configure_ksp, direct_package

__all__ = ["DEFAULT_BATCH_ENTRIES", "scalar_lower_bound", "split_count"]

#: Entries (dofs × columns) of one dense batch of right-hand sides: 32 MiB of float64 per
#: block, so that the batches stay in memory for any N while a batch is wide enough for the
#: triangular solves to run at the speed of dense kernels.
DEFAULT_BATCH_ENTRIES = 1 << 22


def split_count(total: int, comm: MPI.Comm) -> int:
    """This rank's share of ``total`` items split as evenly as possible (the first ranks get
    one more)."""
    return total // comm.size + (1 if comm.rank < total % comm.size else 0)


def _lu_options(tdim: int) -> dict:
    """A serial LU: PETSc's own in 2-D (nested dissection; faster triangular solves than
    MUMPS on P1 problems), MUMPS (or the best package present) in 3-D, where PETSc's
    row-by-row factorization fills in far more."""
    package = "petsc" if tdim <= 2 else direct_package()
    return {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": package}


def _dense_pair(rows: int, columns: int, rng: np.random.Generator) -> tuple[PETSc.Mat, PETSc.Mat]:
    """A dense block of right-hand sides (values 1 + 0.1 U(0, 1)) and one for the solutions."""
    B = PETSc.Mat().createDense((rows, columns), comm=PETSc.COMM_SELF)
    X = PETSc.Mat().createDense((rows, columns), comm=PETSc.COMM_SELF)
    B.setUp()
    X.setUp()
    B.getDenseArray()[:] = 1.0 + 0.1 * rng.random((rows, columns))
    B.assemble()
    return B, X


def scalar_lower_bound(
    settings: Settings,
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    vertex: int = 0,
    num_rhs: int | None = None,
    repeats: int = 3,
    batch_entries: int = DEFAULT_BATCH_ENTRIES,
    seed: int = 0,
) -> dict:
    """Time one step's worth of scalar solves with a cached factorization (collective).

    Every rank builds the whole mesh on its own (``COMM_SELF``), assembles vertex
    ``vertex``'s operator ``M + dt K_g`` (``dt`` from ``settings.time``, consistent mass) and
    factorizes it once; then each rank solves its share of ``num_rhs`` random right-hand sides
    in dense batches. A step is timed between barriers, so its figure is the slowest rank's.

    Args:
        settings: Validated settings of the run to bound (mesh, space, model, graph, dt).
        comm: The ranks that share the right-hand sides.
        vertex: Whose operator to factorize.
        num_rhs: Right-hand sides per step; default the number of graph vertices N.
        repeats: Steps timed; the fastest is reported (the others are inflated by whatever
            else the machine does).
        batch_entries: Dofs × columns of one dense batch.
        seed: Seed of the right-hand sides (rank r uses ``seed + r``).

    Returns:
        ``setup`` (s: assembly and factorization, slowest rank), ``factorization`` (s),
        ``step`` (s, fastest of ``repeats``), ``steps`` (every timing), ``rhs`` (N),
        ``rhs_per_rank`` (list), ``batch`` (columns per batch), ``dofs`` (scalar dofs),
        ``residual`` (the largest relative residual of the solutions, all ranks).
    """
    comm.Barrier()
    start = time.perf_counter()
    graph = graph_from_settings(settings)
    n = graph.n if num_rhs is None else int(num_rhs)
    if not 0 <= vertex < graph.n:
        raise ValueError(f"vertex {vertex} is not in 0..{graph.n - 1}")
    mesh = build_mesh(settings.mesh, MPI.COMM_SELF)
    model = Model(mesh, graph, settings.model, settings.space)
    pattern = ScalarPattern(model.mass_form)
    mass = pattern.assemble(model.mass_form)
    model.set_vertex(vertex)
    stiffness = pattern.assemble(model.stiffness_form)
    A = pattern.matrix(mass + settings.time.dt * stiffness, MPI.COMM_SELF)
    ksp = PETSc.KSP().create(PETSc.COMM_SELF)
    ksp.setOperators(A)
    factor_start = time.perf_counter()
    configure_ksp(ksp, _lu_options(mesh.topology.dim), "lower_bound_", set_up=True)
    factorization = time.perf_counter() - factor_start
    factors = ksp.getPC().getFactorMatrix()
    dofs = A.getSize()[0]
    mine = split_count(n, comm)
    batch = max(1, min(mine, batch_entries // max(dofs, 1)))
    rng = np.random.default_rng(seed + comm.rank)
    full, tail = divmod(mine, batch)
    # (B, X, how many times per step): full batches, then one narrower batch for the rest.
    blocks = [(*_dense_pair(dofs, width, rng), count)
              for width, count in ((batch, full), (tail, 1)) if width and count]
    setup = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    steps = []
    for _ in range(max(1, repeats)):
        comm.Barrier()
        t0 = time.perf_counter()
        for B, X, count in blocks:
            for _ in range(count):
                factors.matSolve(B, X)
        comm.Barrier()
        steps.append(time.perf_counter() - t0)
    residual = 0.0
    for B, X, _ in blocks:
        # A wrong factorization would make the bound meaningless: check the solutions.
        R = A.matMult(X)
        r, b = R.getDenseArray(), B.getDenseArray()
        residual = max(residual, float(np.max(np.linalg.norm(r - b, axis=0)
                                              / np.linalg.norm(b, axis=0))))
        R.destroy()
    residual = comm.allreduce(residual, op=MPI.MAX)
    for B, X, _ in blocks:
        B.destroy()
        X.destroy()
    ksp.destroy()
    A.destroy()
    pattern.destroy()
    return {
        "setup": setup,
        "factorization": comm.allreduce(factorization, op=MPI.MAX),
        "step": min(steps),
        "steps": steps,
        "rhs": n,
        "rhs_per_rank": comm.allgather(mine),
        "batch": comm.allreduce(batch, op=MPI.MAX),
        "dofs": dofs,
        "residual": residual,
    }
