"""ssl_core: what the contrastive / self-supervised notebook series shares.

One concept per module (data, loader, sampling, augment, color, models, losses, memory, momentum,
schedules, evaluate, plotting, profiles, checkpoint, results). Each object's docstring says which
notebook builds it ("Built in: notebooks/NN_name.ipynb") or that it is infrastructure.

Shape legend used across the package:
    N batch, D embedding, M bank/queue entries, K prototypes, V views, C classes,
    H, W image height and width.
"""
