"""Sweep results and resuming: each job's metrics.json into results.csv and results.md, and
``cmfnet resume`` for the jobs that did not complete.

When a multirun starts, :class:`ResultsTableCallback` writes the sweep's job list
(``.cmfnet_jobs.json``: each job's number, folder and overrides, worked out as Hydra's basic
sweeper does) and makes SIGINT and SIGTERM stop the whole sweep (:mod:`cmfnet.runs.signals`); the
tables are written when the multirun ends, also when it was stopped. A job that was killed (no
metrics.json) is listed as failed, one stopped by a signal as interrupted, and one the sweep
never reached as not started. :func:`rerun_command` gives the line that re-runs one job alone
into its own folder, after which :func:`write_results` lists it as completed; ``cmfnet resume
SWEEP_DIR`` (:func:`resume_plan`, :func:`run_steps`) re-runs every job that did not complete.
A job stopped by a signal records where it can continue (:func:`interrupted_record`); submitit
requeues it, and the requeued job continues from there (:func:`resume_requeued_job`).
"""
