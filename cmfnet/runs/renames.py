"""Where the classes and functions of cmfnet's earlier layout live now: a checkpoint or run
config written before the package was grouped into ``mri``, ``runs``, ``sweeps`` and
``commands`` names its ``_target_`` by the old dotted path (``cmfnet.masks.RandomMaskFunc``);
:func:`current_target` gives the path that imports today (``cmfnet.mri.masks.RandomMaskFunc``),
and :func:`current_targets` applies it to every ``_target_`` of a config."""

from __future__ import annotations

from typing import Any

#: old module -> the module that holds all of it now (for a module that was split, the module
#: that holds what :data:`MOVED_NAMES` does not list)
MOVED_MODULES: dict[str, str] = {
    "cmfnet.bench": "cmfnet.commands.bench.cli",
    "cmfnet.bench_datapath": "cmfnet.commands.bench.datapath",
    "cmfnet.bench_methods": "cmfnet.commands.bench.methods",
    "cmfnet.checkpoint": "cmfnet.runs.checkpoint",
    "cmfnet.compare": "cmfnet.commands.report.compare",
    "cmfnet.config": "cmfnet.runs.config",
    "cmfnet.data.errors": "cmfnet.runs.errors",
    "cmfnet.degrade": "cmfnet.mri.degrade",
    "cmfnet.errors": "cmfnet.runs.errors",
    "cmfnet.evaluate": "cmfnet.commands.evaluate",
    "cmfnet.figures": "cmfnet.mri.figures",
    "cmfnet.import_release": "cmfnet.commands.import_release.cli",
    "cmfnet.io": "cmfnet.runs.io",
    "cmfnet.kspace": "cmfnet.mri.kspace",
    "cmfnet.losses": "cmfnet.mri.losses",
    "cmfnet.masks": "cmfnet.mri.masks",
    "cmfnet.metrics": "cmfnet.mri.metrics",
    "cmfnet.ownership": "cmfnet.runs.ownership",
    "cmfnet.performance": "cmfnet.runs.performance",
    "cmfnet.predict": "cmfnet.commands.predict",
    "cmfnet.quiet": "cmfnet.runs.quiet",
    "cmfnet.report": "cmfnet.commands.report.cli",
    "cmfnet.run_folders": "cmfnet.runs.run_folders",
    "cmfnet.scoring": "cmfnet.mri.scoring",
    "cmfnet.settings": "cmfnet.runs.settings",
    "cmfnet.signals": "cmfnet.runs.signals",
    "cmfnet.slurm": "cmfnet.runs.slurm",
    "cmfnet.sweep": "cmfnet.sweeps.jobs",
}
#: old module of a split module -> {its new module: the names that moved there}
MOVED_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "cmfnet.config": {
        "cmfnet.runs.resolvers": ("register_resolvers",),
    },
    "cmfnet.bench": {
        "cmfnet.commands.bench.judge": (
            "check_targets",
            "print_results",
            "save_partial",
            "write_results",
        ),
        "cmfnet.commands.bench.loader": (
            "RepeatedSlices",
            "measure_data_path",
        ),
        "cmfnet.commands.bench.loops": (
            "measure_fit_loop",
            "measure_launch",
        ),
        "cmfnet.commands.bench.memory": (
            "PeakRSS",
            "children_cpu_s",
            "peak_memory_mb",
            "reset_resident_peak",
            "resident_peak",
            "sync",
        ),
        "cmfnet.commands.bench.model_step": (
            "bf16_peak_flops",
            "measure_model",
            "measure_model_isolated",
        ),
        "cmfnet.commands.bench.settings": (
            "bench_keys",
            "bench_settings_help",
            "check_settings",
            "check_validation_settings",
            "compose_bench_config",
        ),
        "cmfnet.commands.bench.validation": (
            "earlier_eval_step",
            "measure_validation",
            "print_validation",
            "simulated_validation",
            "time_validation_path",
        ),
    },
    "cmfnet.data.fastmri": {
        "cmfnet.data.pairs_csv": (
            "PairsCsv",
            "find_pairs_csv",
            "listed_file",
            "pairs_csv_candidates",
            "read_pairs_csv",
            "volume_name",
        ),
    },
    "cmfnet.data.synth": {
        "cmfnet.data.synth_anatomy": (
            "column_limits",
            "mni_template_dir",
            "split_slabs",
        ),
        "cmfnet.data.synth_files": (
            "build_ismrmrd_header",
            "write_fastmri_volume",
        ),
    },
    "cmfnet.import_release": {
        "cmfnet.commands.import_release.layout": (
            "ReleaseImportError",
            "release_layout",
            "release_name",
            "unused_release_tensors",
        ),
        "cmfnet.commands.import_release.settings": (
            "cmfnet_config",
            "data_settings",
        ),
        "cmfnet.commands.import_release.weights": (
            "hyperparameters",
            "load_release_checkpoint",
            "map_state_dict",
            "release_model_config",
            "strip_prefix",
        ),
    },
    "cmfnet.models.mtrans": {
        "cmfnet.models.mtrans_blocks": (
            "ConvHead",
            "CrossAttention",
            "CrossAttentionLayer",
            "CrossBranches",
            "CrossTransformer",
            "PatchEmbedding",
            "ProjectedCrossLayer",
            "SelfAttentionBlock",
            "Transformer",
        ),
    },
    "cmfnet.report": {
        "cmfnet.runs.tables": ("markdown_table",),
        "cmfnet.commands.report.figures": (
            "curve_panels",
            "load_example",
            "psnr_panels",
            "qualitative_figure",
            "write_figures",
        ),
        "cmfnet.commands.report.load": (
            "identity_from_hydra",
            "job_overrides",
            "load_report",
            "rescored",
            "run_precision",
        ),
        "cmfnet.commands.report.markdown": (
            "output_tables",
            "report_markdown",
            "scoring_line",
        ),
        "cmfnet.commands.report.paired": (
            "Comparison",
            "Pairing",
            "format_p",
            "format_paired",
            "pair_with_reference",
            "paired_long_rows",
            "paired_markdown",
            "paired_rows",
            "reference_method",
            "seed_scores",
        ),
        "cmfnet.commands.report.records": (
            "CellStats",
            "Column",
            "Failure",
            "Report",
            "Run",
        ),
        "cmfnet.commands.report.stats": (
            "all_stats",
            "best_methods",
            "cell_stats",
        ),
        "cmfnet.commands.report.tables": (
            "format_cell",
            "long_rows",
            "params_label",
            "report_csv",
            "table_rows",
        ),
        "cmfnet.commands.report.upload": (
            "log_to_wandb",
            "scoped_environ",
        ),
    },
    "cmfnet.sweep": {
        "cmfnet.sweeps.callback": ("ResultsTableCallback",),
        "cmfnet.sweeps.rerun": (
            "interrupted_record",
            "rerun_command",
            "rerun_overrides",
            "resume_requeued_job",
            "shell_line",
        ),
        "cmfnet.sweeps.results": (
            "collect_results",
            "read_metrics",
            "results_csv",
            "results_markdown",
            "write_results",
        ),
        "cmfnet.sweeps.resume": (
            "ResumeStep",
            "add_arguments",
            "held_by_slurm",
            "resume_plan",
            "run",
            "run_py_path",
            "run_steps",
            "set_aside_stale_files",
        ),
    },
}


def current_target(path: str) -> str:
    """The dotted path that imports today for ``path`` (``module.name``), written by an earlier
    layout or by this one."""
    module, _, name = path.rpartition(".")
    for new_module, names in MOVED_NAMES.get(module, {}).items():
        if name in names:
            return f"{new_module}.{name}"
    if module in MOVED_MODULES:
        return f"{MOVED_MODULES[module]}.{name}"
    return path


def current_targets(config: Any) -> Any:
    """A copy of a plain config (dicts, lists, values) with every ``_target_`` through
    :func:`current_target`."""
    if isinstance(config, dict):
        return {
            key: current_target(value)
            if key == "_target_" and isinstance(value, str)
            else current_targets(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [current_targets(value) for value in config]
    return config
