"""Slurm support: job scripts rendered from templates, submission, and the job's environment."""

from mpiml.slurm.env import SlurmEnv, checkpoint_dir, log_prefix, slurm_env
from mpiml.slurm.render import command_line, render_script, sbatch_header, sbatch_line

__all__ = ["SlurmEnv", "checkpoint_dir", "command_line", "log_prefix", "render_script", "sbatch_header",
           "sbatch_line", "slurm_env"]
