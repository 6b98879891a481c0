"""The functions behind the configs' resolvers (:mod:`cmfnet.runs.resolvers` registers them),
and scrubbing of secrets before logging."""

from __future__ import annotations

import math
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig

SECRET_KEY_PATTERN = re.compile(
    r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE
)
REDACTED = "<redacted>"
WIDTH_FLOOR = 4
#: fastMRI knee's reconstruction_esc (the HR target) is 320 x 320
FASTMRI_HR_SIZE = (320, 320)


def fastmri_center_fraction(accel: Any) -> float:
    """``${fastmri_center_fraction:accel}``: fastMRI's centre fraction (4 -> 0.08, 8 -> 0.04)."""
    from cmfnet.mri.masks import center_fraction_for

    return center_fraction_for(accel)


def process_id() -> str:
    """``${process_id:}``: this process's id (cached in the config, so that two sweeps started in
    the same second get different folders)."""
    return str(os.getpid())


def on_cuda(if_cuda: Any, otherwise: Any) -> Any:
    """``${on_cuda:a,b}``: ``a`` where this process sees a CUDA device, else ``b`` (the loader's
    workers)."""
    return if_cuda if cuda_available() else otherwise


def folder_name(text: str, limit: int = 160) -> str:
    """``text`` as one folder name: each ``/`` becomes ``_`` (a path given as an override value
    would otherwise nest folders), and beyond ``limit`` characters it is cut and ends in a short
    hash of the whole text (file systems allow 255 bytes per name). A secret-looking override
    (``+hf_token=...``) is left out: a folder name is printed, logged and recorded everywhere."""
    import hashlib

    text = ",".join(
        item
        for item in str(text).split(",")
        if not SECRET_KEY_PATTERN.search(item.partition("=")[0]) or "=" not in item
    )
    name = str(text).replace(os.sep, "_")
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: limit - 11].decode(errors="ignore") + "~" + digest


def cuda_available() -> bool:
    """Whether this process sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def fastest_precision() -> str:
    """``bf16-mixed`` on a CUDA device with native bf16 (compute capability 8.0 or later:
    A100, H100, L40S, ...), else ``32-true``. bf16 autocast keeps CMF-Net's metrics within the
    seed-to-seed spread of fp32 (``sweeps=precision``, docs/performance.md)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        return "bf16-mixed"
    return "32-true"


def is_int(value: Any) -> bool:
    """An int and not a bool (YAML's true/false are bools, and bool is an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def scaled_width(width: Any, multiple: Any = 1, *, _root_: DictConfig) -> Any:
    """``${scaled_width:64}``: a model config's channel width times the root ``width_factor``,
    rounded and at least ``WIDTH_FLOOR`` (``max(4, round(width * factor))``); at factor 1 the
    width as written. The one shrinking rule of the small-scale protocol (experiment=paper_small:
    0.25): widths scale, depths do not. A width written as a plain number (a ``size=tiny`` preset,
    a command-line value) is not scaled.

    ``${scaled_width:180,6}``: the scaled width rounded to the nearest multiple of 6 (at least 6),
    for a width that attention heads must divide (SwinIR's 180 channels in 6 heads: 48 at 0.25).
    """
    factor = _root_.get("width_factor")
    if not is_number(factor) or factor <= 0:
        raise ValueError(f"width_factor must be a number > 0, got {factor!r}")
    if not is_int(multiple) or multiple < 1:
        raise ValueError(f"scaled_width: the multiple must be a positive integer, got {multiple!r}")
    if factor == 1:
        return width
    scaled = max(WIDTH_FLOOR, round(width * factor))
    return max(multiple, multiple * math.floor(scaled / multiple + 0.5))  # ties round up


def lowres_side(*, _root_: DictConfig) -> int:
    """``${lowres_side:}``: the side of the square LR images the model receives, HR side / scale
    (models whose size is fixed at construction, MTrans's position embeddings, read it)."""
    return lowres_size(_root_)[0]


def lowres_size(cfg: DictConfig) -> tuple[int, int]:
    """LR input size (H, W) of a composed run config: the data's HR size / ``scale``. The HR size
    is ``data.synthesize.hr_size`` for generated data, else ``data.splits.train.hr_size`` (ISLES),
    else fastMRI's 320 x 320 ``reconstruction_esc``."""
    data = cfg.data
    synthesize = data.get("synthesize") or {}
    if synthesize.get("hr_size"):
        hr = (int(synthesize.hr_size),) * 2
    else:
        size = data.splits.train.get("hr_size", FASTMRI_HR_SIZE)
        hr = (int(size[0]), int(size[1]))
    scale = int(cfg.scale)
    if hr[0] % scale or hr[1] % scale:
        raise ValueError(f"scale={scale} does not divide the HR size {hr[0]}x{hr[1]}")
    return hr[0] // scale, hr[1] // scale


def _secret_values() -> set[str]:
    """Values of environment variables whose names look like secrets (e.g. WANDB_API_KEY)."""
    return {v for k, v in os.environ.items() if SECRET_KEY_PATTERN.search(k) and len(v) >= 8}


def secrets_in_use(argv: list[str] | None = None) -> set[str]:
    """Every secret this process was given: :func:`_secret_values` plus the values of
    secret-looking overrides on its command line (``+hf_token=...``, ``argv`` by default)."""
    values = _secret_values()
    for arg in (sys.argv if argv is None else argv)[1:]:
        key, sep, value = arg.partition("=")
        value = value.strip("'\"")
        if sep and SECRET_KEY_PATTERN.search(key) and len(value) >= 4:
            values.add(value)
    return values


@contextmanager
def redacted_console(secrets: set[str]) -> Iterator[None]:
    """Within the block, text written to ``sys.stdout`` and ``sys.stderr`` has every value of
    ``secrets`` replaced by ``<redacted>`` before any capture installed earlier sees it (W&B's
    console capture wraps the streams' ``write``; whatever a library prints reaches it through
    this redaction first). Text another process or native code writes to the descriptors is
    not covered."""
    streams = [s for s in (sys.stdout, sys.stderr) if secrets and hasattr(s, "write")]
    originals = [stream.write for stream in streams]
    ordered = sorted(secrets, key=len, reverse=True)  # a secret holding another goes first

    def redacting(write):
        def write_redacted(text):
            if isinstance(text, str):
                for secret in ordered:
                    text = text.replace(secret, REDACTED)
            return write(text)

        return write_redacted

    for stream, write in zip(streams, originals):
        stream.write = redacting(write)
    try:
        yield
    finally:
        for stream, write in zip(streams, originals):
            stream.write = write


def redact_argument(arg: str, secrets: set[str]) -> str:
    """A command-line argument with a secret-looking override's value (``+hf_token=...``) and any
    secret environment value replaced by ``<redacted>``."""
    key, sep, _ = arg.partition("=")
    if sep and SECRET_KEY_PATTERN.search(key):
        return f"{key}={REDACTED}"
    for secret in secrets:
        arg = arg.replace(secret, REDACTED)
    return arg


def shown_overrides(overrides: Sequence[str]) -> str:
    """A job's overrides as a sweep's log line shows them: Hydra's ``filter_overrides`` (no
    ``hydra.`` keys), with the values of secret-looking overrides and secret environment values
    redacted."""
    from hydra.core.utils import filter_overrides

    secrets = _secret_values()
    return " ".join(redact_argument(arg, secrets) for arg in filter_overrides(list(overrides)))


@contextmanager
def redacted_argv() -> Iterator[None]:
    """Within the block, ``sys.argv`` has its secrets redacted (W&B records the command line in
    its run files, which ``wandb sync`` uploads); the original is restored afterwards, as
    Lightning's DDP launcher starts the other ranks with it."""
    original = list(sys.argv)
    secrets = _secret_values()
    sys.argv[:] = [original[0], *(redact_argument(arg, secrets) for arg in original[1:])]
    try:
        yield
    finally:
        sys.argv[:] = original


def sanitize_config(data: Any, _secrets: set[str] | None = None) -> Any:
    """Copy of a plain config with secret-looking keys and any secret environment value redacted."""
    secrets = _secret_values() if _secrets is None else _secrets
    if isinstance(data, dict):
        return {
            k: REDACTED if SECRET_KEY_PATTERN.search(str(k)) else sanitize_config(v, secrets)
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return type(data)(sanitize_config(v, secrets) for v in data)
    if isinstance(data, str) and any(s in data for s in secrets):
        return REDACTED
    return data


# --------------------------------------------------------------------------------------------
# The resolvers that name a run (conf/logger/wandb.yaml; cmfnet.runs.settings.run_identity)
# --------------------------------------------------------------------------------------------


def compact_number(value: Any) -> int | float:
    """A number as recorded: an int when integral (``accel=4.0`` -> 4), else a float."""
    return int(value) if float(value).is_integer() else float(value)


def data_read(root: Any, choice: str) -> str:
    """The data a run reads, as recorded in metrics.json, W&B and tables: ``synthetic`` for a
    folder that ``cmfnet synth`` (or the cache) wrote, whichever ``data=`` option reads it,
    else the option's name."""
    from pathlib import Path

    from cmfnet.data.synth_cache import synthetic_record

    return "synthetic" if isinstance(root, str) and synthetic_record(Path(root)) else choice


def multirun_group(mode: Any, sweep_dir: str) -> str | None:
    """The W&B group of a multirun's jobs, ``<sweep name>/<timestamp>_<pid>`` (the last two
    folders of ``sweep_dir``); None for a single run (``mode`` is Hydra's run mode)."""
    from pathlib import Path

    from hydra.types import RunMode

    if mode != RunMode.MULTIRUN:
        return None
    return f"{Path(sweep_dir).parent.name}/{Path(sweep_dir).name}"
