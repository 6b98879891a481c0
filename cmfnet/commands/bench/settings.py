"""What ``cmfnet bench`` may be asked: the speed options, loops and validation paths it knows, its
composed config and the checks of its settings.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


#: The speed options ``options=[...]`` may name, alone or joined by ``+``. ``options`` may also
#: name the run's own training loop (:func:`measure_fit_loop`), alone: ``fit_loop`` on one batch
#: held on the host, ``fit_loop_data`` fed by the run's training DataLoader.
SPEED_OPTIONS = ("channels_last", "bf16", "activation_checkpointing", "compile", "cudnn_benchmark")


LOOP_OPTIONS = ("fit_loop", "fit_loop_data")


#: the two metric paths ``validation=true`` measures, each in a process of its own
VALIDATION_PATHS = ("validation_streaming", "validation_earlier")


#: measured on the idle 2-core CPU machine, 2026-12-03: `cmfnet bench json=...` with the defaults
BENCH_RUN_TIME = (
    "typical run time: about 22 min with the defaults on an idle 2-core CPU (measured 22 min 13 s:"
    " the reference and each option run the full model in a process of their own, about 2.5 min"
    " each there); list fewer options to go faster, e.g. options=[bf16]."
)


BENCH_WRITER = "cmfnet bench"  # marks its JSON, which only a later bench may replace


def bench_settings_help() -> str:
    """The bench's own settings with their defaults and comments (conf/bench.yaml, without its
    defaults list), and what a default bench costs."""
    text = (REPO / "conf" / "bench.yaml").read_text()
    body = text[text.index("_self_") + len("_self_") :].strip("\n")
    return f"settings (conf/bench.yaml; set as key=value):\n{body}\n\n{BENCH_RUN_TIME}"


def bench_keys() -> set[str]:
    """The settings ``conf/bench.yaml`` adds to the run config (left out of the launch timing's
    run)."""
    from omegaconf import OmegaConf

    return set(OmegaConf.load(REPO / "conf" / "bench.yaml")) - {"defaults"}


def compose_bench_config(overrides: list[str]):
    """The bench config: ``conf/bench.yaml`` over ``conf/train.yaml``, composed with
    ``overrides``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("bench", overrides=overrides)


def check_settings(cfg) -> None:
    """Refuse, before anything is measured, an option that is not a speed option, a ``+``
    combination of them, ``fit_loop`` or ``fit_loop_data``; a count (batch, steps, samples,
    epochs, workers) that is not an integer of at least its least value; and a ``json`` path
    that cannot be written (a folder, or below something that is not a folder)."""
    from cmfnet.runs.config import is_int

    for option in cfg.options:
        unknown = (
            sorted(set(str(option).split("+")) - set(SPEED_OPTIONS))
            if option not in LOOP_OPTIONS
            else []
        )
        if unknown:
            raise ValueError(
                f"options: unknown speed option {unknown[0]!r} in {option!r}; "
                f"choose from {list(SPEED_OPTIONS)} (joined by +), fit_loop or fit_loop_data"
            )
    counts = [
        ("batch", cfg.batch, 1),
        ("timed_steps", cfg.timed_steps, 1),
        ("warmup_steps", cfg.warmup_steps, 0),
        ("data_samples", cfg.data_samples, 1),
        ("loader_epochs", cfg.loader_epochs, 1),
        *(
            (("loader_epoch_slices", cfg.loader_epoch_slices, 1),)
            if cfg.loader_epoch_slices is not None
            else ()
        ),
        *(("data_workers", workers, 0) for workers in cfg.data_workers),
    ]
    for key, value, least in counts:
        if not is_int(value) or value < least:
            raise ValueError(f"{key} must be an integer >= {least}, got {value!r}")
    if cfg.validation:
        check_validation_settings(cfg)
    fraction = cfg.methods_memory_fraction
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ValueError(f"methods_memory_fraction must be in (0, 1], got {fraction!r}")
    if cfg.json:
        from cmfnet.runs.io import check_writable_file

        check_writable_file(Path(cfg.json), f"json={cfg.json}", written_by=BENCH_WRITER)


def check_validation_settings(cfg) -> None:
    """Refuse validation sizes that are not positive integers, or an SR side that ``scale`` does
    not divide into a rec side of at least SSIM's 7-pixel window."""
    from cmfnet.mri.metrics import SSIM_WINDOW
    from cmfnet.runs.config import is_int

    for key in ("validation_volumes", "validation_slices", "validation_hr_size"):
        if not is_int(cfg[key]) or cfg[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    hr = int(cfg.validation_hr_size)
    if hr % cfg.scale or hr // cfg.scale < SSIM_WINDOW:
        raise ValueError(
            f"validation_hr_size={hr}: scale={cfg.scale} must divide it into a rec side of at "
            f"least {SSIM_WINDOW} (SSIM's window)"
        )
