"""``cmfnet bench [overrides]``: training/inference throughput, peak memory, data-path speed and
launch-to-first-step time; every speed option is reported as a ratio to the plain fp32 eager
path measured in the same run (``conf/bench.yaml``).

Model steps run on random tensors of the configured sizes (LR = data HR size / scale), so the
numbers isolate the network; the data path is timed separately on the configured data set.
"""
