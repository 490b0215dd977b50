#!/usr/bin/env bash
# A Slurm batch script for a parameter sweep: every case of SWEEP.toml runs on all the
# tasks of this job, one case after the other (rdgraph sweep inside one MPI launch).
#
#   sbatch scripts/slurm_sweep.sh examples/sweep.toml results/sweep
#
# Resubmitting the same command after a time-out or a node failure skips the finished cases
# (their case.json says ok) and runs the rest; sweep.csv collects every case.
#
#SBATCH --job-name=rdgraph-sweep
#SBATCH --nodes=1
#SBATCH --ntasks=16               # MPI ranks: every case is distributed over all of them
#SBATCH --cpus-per-task=1         # rdgraph runs one BLAS thread per rank
#SBATCH --time=04:00:00
#SBATCH --output=rdgraph-sweep-%j.log
# Slurm sends SIGTERM shortly before the time limit: the running case then writes a
# checkpoint and the sweep exits with 143; ask for the signal a little earlier than the
# default so that the checkpoint has time to be written.
#SBATCH --signal=TERM@120

set -euo pipefail

sweep_file="${1:?usage: sbatch scripts/slurm_sweep.sh SWEEP.toml [OUT_DIR]}"
out_dir="${2:-results/$(basename "${sweep_file%.toml}")}"

# The repository's virtual environment (scripts/setup.sh); on a cluster with its own
# DOLFINx module, load the module and put that environment's rdgraph first on PATH instead.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Inside a batch job BASH_SOURCE points at Slurm's copy of this script: prefer the folder
# the job was submitted from.
if [[ -n "${SLURM_SUBMIT_DIR:-}" && -x "$SLURM_SUBMIT_DIR/.venv/bin/rdgraph" ]]; then
    root="$SLURM_SUBMIT_DIR"
fi
export PATH="$root/.venv/bin:$PATH"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

# srun starts the job's tasks with Slurm's PMI; where MPI was not built against it, use the
# MPI's own launcher instead:  mpiexec -n "$SLURM_NTASKS" rdgraph sweep ...
srun --ntasks="$SLURM_NTASKS" rdgraph sweep "$sweep_file" --out "$out_dir"
# Extra PETSc options reach every case's block solver, e.g.:
#   srun rdgraph sweep "$sweep_file" --out "$out_dir" -rd_ksp_monitor -log_view
