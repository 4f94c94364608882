"""Self-critical sequence training (Rennie et al., 2017): a second training phase after cross-entropy
that optimises the CIDEr-D of sampled captions directly.

``settings`` (the ``scst`` config section, no torch), ``reward`` (CIDEr-D, optionally + BLEU-4,
against each image's train references with train document frequencies), ``loss`` (baselines and
the policy-gradient loss), ``module`` (the Lightning module of the phase) and ``phase`` (how
``fusionbench.experiment`` runs it: checkpoints, resume, the ``xe``/``scst`` metrics blocks).
Import the submodules directly: this package imports nothing, so the config can read ``settings``
without torch.
"""
