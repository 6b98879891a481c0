"""``cmfnet report SWEEP_DIR [SWEEP_DIR ...]``: paper-style tables and figures from sweeps.

Reads every job's ``metrics.json`` (:func:`cmfnet.sweeps.results.collect_results`) of one or
more sweep folders (``multirun/<sweep>/<timestamp>``; several are merged, e.g. a sweep and a
re-run) and writes into ``--out`` (default: the first sweep folder):

- ``report.md`` (``--name`` changes the base name): an SR table (the headline) and a rec
  table, rows = methods, columns = scale x acceleration, cells = mean ± std over test volumes,
  the best value per column and metric in bold, each followed by its paired comparison with
  the reference method (below); then failed and superseded jobs and the figures. With
  several seeds of one cell, a cell reads ``mean ± std (seeds: n, sd s)``: the mean over seeds
  of each run's mean over volumes ± the mean over seeds of each run's std over volumes, then
  the number of seeds and the sample standard deviation (ddof=1) over seeds of the per-run
  means.
- ``report.csv``: the same numbers in tidy long format, one row per method x cell x output x
  metric (``method, model, scale, accel, data, mask, scoring, precision, output, metric, mean,
  std, n_seeds, seed_sd``; ``seed_sd`` is empty for a single seed).
- ``report_paired.csv``: the paired comparisons, one row per method x setting x output x
  metric (:data:`PAIRED_COLUMNS`: ``diff, ci_low, ci_high, p, n_volumes, n_seeds,
  significant``; empty numbers and a ``note`` where the pair cannot be made).
- ``psnr_vs_accel.png``, ``learning_curves.png`` (validation SR PSNR per epoch, from each run's
  ``history.csv``) and ``qualitative_x{scale}_r{accel}.png`` (:mod:`cmfnet.mri.figures`); for a
  hyperparameter search, ``search_<study>.png`` (:mod:`cmfnet.commands.report.search_plot`).
- with ``--wandb`` (default), a W&B run (offline unless ``WANDB_MODE`` says otherwise) in the
  sweep's group ``<sweep_name>/<timestamp>`` holding the tables and figures.

Paired comparison: each method against the reference (``--reference``, default ``cmfnet``:
CMF-Net) on the same test volumes, per setting and output, for PSNR and SSIM
(:mod:`cmfnet.commands.report.compare`: from each run's ``test_volumes.csv``, pairs by (seed,
volume) on the seeds both have, averaged over those seeds per volume; mean difference, bootstrap 95%
interval over volumes, Wilcoxon signed-rank p). A run without ``test_volumes.csv`` (made before
it was written) gives ``n/a`` with a note naming the job.

Separate tables: runs that differ in data set, scoring or trainer precision (``data``,
``scoring`` and ``precision`` in metrics.json; the precision of a run made before it was
recorded is read from its ``config.yaml``) are never in one table. Each combination gets its
own SR table, rec table and comparison, under a heading naming it; pairs are made within one.

Which runs are one method: runs that differ only in seed. A job's Hydra overrides other than
the cell (``model, data, mask, scale, accel, scoring, trainer.precision``), the seed and
:data:`NEUTRAL_OVERRIDE_KEYS` (e.g. ``loss.w_rec=0.2`` in the loss-weight sweep) are appended
to its method name when they vary across the merged jobs. A method of the paper's comparison
is named as the paper names it (:data:`PAPER_NAMES`: ``CMF-Net``, ``UNet-EDSR†``, ...), any
other by its model config. When the same method, cell and seed completed more than once, the
job given last wins (later sweep folder, then higher job number) and the others are listed as
superseded. Tables and CSV are byte-identical when the command is re-run on the same folders.
"""
