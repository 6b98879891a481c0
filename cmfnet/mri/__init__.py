"""The MRI science that data, models and runs share: k-space transforms, undersampling masks,
the degradation to an LR pair, the metrics and their scoring, the losses and image figures."""
