"""One module or package per ``cmfnet`` subcommand (``predict``, ``evaluate``, ``report``,
``bench``, ``import-release``); :mod:`cmfnet.cli` registers them (``resume`` lives with the
sweeps, ``synth`` with the command line)."""
