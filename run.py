"""Entry point: `python run.py [overrides]`, `python run.py -m ...`, `python run.py sweeps=NAME`."""

import hydra
from omegaconf import DictConfig

from cmfnet.train import run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    return run_task(cfg)


if __name__ == "__main__":
    main()
