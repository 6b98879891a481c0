"""``python run.py ...`` in a subprocess, as the end-to-end tests run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Any attempt to reach the network goes to the discard port on localhost and fails at once.
DISCARD = "http://127.0.0.1:9"
NO_NETWORK = {
    "HTTP_PROXY": DISCARD,
    "HTTPS_PROXY": DISCARD,
    "http_proxy": DISCARD,
    "https_proxy": DISCARD,
    "NO_PROXY": "",
    "no_proxy": "",
}


def run_env(
    cwd: Path, env: dict | None = None, drop: tuple[str, ...] = (), cache: Path | None = None
) -> dict:
    """The environment of a run in ``cwd``: the synthetic-data cache (``cache``, by default one
    shared by the test's siblings), one thread, no network, no inherited ``WANDB_*`` setting (so
    W&B runs in the configured default, offline); ``env`` adds variables, ``drop`` removes
    inherited ones."""
    base = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("WANDB_")}
    return {
        **base,
        **NO_NETWORK,
        "CMFNET_CACHE_DIR": str(cache or cwd.parent / "shared-cache"),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }


def run_py(
    cwd: Path,
    *args: str,
    env: dict | None = None,
    drop: tuple[str, ...] = (),
    cache: Path | None = None,
    timeout: int = 300,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` in ``cwd`` with :func:`run_env`; ``check``: a failed run fails the
    test with the end of its stderr."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args],
        cwd=cwd,
        env=run_env(cwd, env, drop, cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"run.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc
