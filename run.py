"""Entry point: `python run.py [overrides]`, `python run.py -m ...`, `python run.py sweeps=NAME`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    # Imported here, once a job runs: Lightning's import takes seconds, which --help, --cfg
    # and a config that does not compose need not wait for.
    from cmfnet.train import run_task

    return run_task(cfg)


if __name__ == "__main__":
    main()
