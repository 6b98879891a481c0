#!/usr/bin/env bash
# Wheels of the pure-Python packages cmfnet needs that a CUDA PyTorch image usually lacks (Hydra,
# OmegaConf and its parser runtime, nibabel and nilearn for the synthetic data), for a GPU machine
# without network access. Run where pip reaches PyPI; carry DIR over; install there with
#   python3 -m pip install --no-index --no-deps DIR/*.whl
# Versions are those CI tests with. Torch, Lightning, h5py, scikit-image, matplotlib, rich and tqdm are taken from the image.
# W&B is left out: use logger=none or logger=csv there, or add wandb and its dependencies.
# Usage: scripts/offline_wheels.sh DIR [PYTHON_VERSION (default 3.12)]
set -euo pipefail
dir=${1:?usage: scripts/offline_wheels.sh DIR [PYTHON_VERSION]}
python_version=${2:-3.12}
mkdir -p "$dir"
# Pure-Python wheels fit any platform; --python-version only selects releases that support it.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation py --platform any -d "$dir" \
  "hydra-core==1.3.8" "omegaconf==2.3.1" "nibabel==5.4.2" "nilearn==0.14.1"
# OmegaConf's ANTLR runtime is published as a source archive only: build its (pure-Python) wheel.
python3 -m pip wheel --quiet --no-deps -w "$dir" "antlr4-python3-runtime==4.9.3"
ls -1 "$dir"
