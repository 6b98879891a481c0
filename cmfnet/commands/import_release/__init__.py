"""``cmfnet import-release CKPT --out DIR``: a checkpoint of the CMF-Net authors' release as a
cmfnet checkpoint that ``cmfnet predict`` and ``cmfnet evaluate`` take.

The release (``abelucky/CMF_NET``, PyTorch Lightning 0.8.1) trains its network, class ``net`` of
``fastmri/models/network.py``, as the attribute ``Net`` of its LightningModule, so its checkpoint
holds ``state_dict`` entries ``Net.<release name>``. Every release name is renamed to ours
(:func:`release_name` gives the release name of each of our tensors) and its shape checked; the
release's two kinds of unused modules (:func:`unused_release_tensors`: the second SR tail
``tail1`` and the MMF conv ``bf<i>.conv3``, never called in its forward) are dropped, named in
``imported.json``. A tensor that is missing, unexpected or of another shape is refused, naming
it. Widths and the scale are read from the tensors' shapes; the counts of blocks are the
release's (3 fusion levels, 6 branch steps, 2 U-Net poolings, MFA kernels 1/3/5, residual
scaling 0.1), fixed in its code.

The checkpoint is read with ``torch.load(weights_only=True)``. Lightning may have pickled the
hyperparameters as objects; only these are rebuilt, each as plain data: ``argparse.Namespace``,
Lightning's ``AttributeDict`` (as a dict) and ``pathlib`` paths (as strings). Any other pickled
object is refused without being unpickled (:func:`load_release_checkpoint`).

Intensities: the release's LR images are ``scale`` times brighter than ours (it does not divide
the cropped k-space by the scale) and its SR target is normalised with that LR input's mean and
std, so its SR output must be de-normalised with ``scale`` times our statistics to come out in
the target's units. The imported config says so (``data.sr_stats_gain``, read by predict).
"""
