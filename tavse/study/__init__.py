"""The study's ablation programme: experiments from ``ablations.yaml``, queued locally or on SLURM, and one table."""
