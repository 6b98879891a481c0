"""Run plumbing: the config's resolvers, settings and run identity, checkpoints and the name map
of earlier layouts, run folders and their ownership, signals, atomic files, one-line errors,
performance switches, quiet third-party logs and the SLURM environment."""
