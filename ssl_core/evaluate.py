"""Evaluation of frozen representations: feature extraction, weighted kNN, linear probe.

Every notebook measures its encoder the same way: features of the train and test images from the
frozen encoder, then a weighted k-nearest-neighbour classifier (InstDisc, Wu et al. 2018, Sec. 3.5)
and, where a notebook wants the paper's headline number, a linear probe.

**The protocol (one for the whole series).** Before any network is measured (kNN, linear probe,
collapse meter), the running statistics of its BatchNorm layers are recomputed on training images
at the evaluation resolution (``fresh_bn`` / ``refresh_bn_stats``: label-free, on a fixed sample of
``BN_REFRESH_IMAGES`` training images, restored afterwards). Without it a random-init network's BN
still holds mean 0 / variance 1 and normalises nothing (its kNN reads ~3 points low), and a trained
network's statistics come from the smaller training crops. ``protocol()`` describes it for the
results records (``eval_protocol``).

Images arrive as ``uint8`` tensors (N,3,H,W) (the format ``ssl_core.data`` keeps on the device);
a ``preprocess`` callable turns a uint8 batch into the float network input (e.g. ``/255`` and
normalisation) and is passed in, so this module depends on nothing but torch.

Shape legend: N batch (N_train / N_test where both appear), D embedding, C classes.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import profiles

Preprocess = Callable[[Tensor], Tensor]


# --- input checks (shared by the public functions below) -----------------------------------------

def _check_uint8_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N,3,H,W), got {type(images).__name__}.")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"{name} must be a uint8 tensor of shape (N,3,H,W), got dtype {images.dtype} and shape "
            f"{tuple(images.shape)}. Pass the raw uint8 images; normalisation belongs in `preprocess`."
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (N=0); pass at least one image.")


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_label_shape(labels: Tensor, n: int, name: str) -> None:
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
        raise ValueError(f"{name} must be a 1-D integer tensor of class indices, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} of shape "
                         f"{tuple(getattr(labels, 'shape', ()))}.")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but there are {n} samples; "
                         "pass one label per sample.")


def _check_labels(labels: Tensor, n: int, num_classes: int, name: str) -> None:
    _check_label_shape(labels, n, name)
    if n > 0 and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, num_classes={num_classes}), found values in "
                         f"[{int(labels.min())}, {int(labels.max())}]; check num_classes.")


def _check_features(features: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor (N,D), got shape "
                         f"{tuple(getattr(features, 'shape', ()))}.")
    if not bool(torch.isfinite(features).all()):
        bad = int((~torch.isfinite(features)).any(dim=1).sum()) if features.numel() else 0
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {bad} of {features.shape[0]} rows: "
                         "the network's outputs diverged (a NaN row would rank first for every query and "
                         "turn every prediction into class 0). Check the training loss for NaN; lower the "
                         "learning rate or raise the temperature.")


# --- the evaluation protocol: BatchNorm statistics refreshed before measuring --------------------

BN_REFRESH_IMAGES = 5000   # training images the running statistics are recomputed on
BN_REFRESH_BATCH = 500     # images per forward pass during the refresh
_BN_REFRESH_SEED = 0       # the fixed sample of training images (the same for every network)


def _batch_norms(model: nn.Module) -> list:
    """Every BatchNorm layer of ``model`` that keeps running statistics (1d, 2d, SplitBatchNorm)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def refresh_bn_stats(model: nn.Module, images: Tensor, preprocess: Preprocess,
                     n_images: int = BN_REFRESH_IMAGES, batch_size: int = BN_REFRESH_BATCH) -> int:
    """Recompute the running mean and variance of every BatchNorm in ``model``, in place, from
    ``n_images`` of ``images`` (a fixed seeded sample; all of them if there are fewer), passed
    through ``model(preprocess(batch))`` in batches of ``batch_size``.

    Each BN layer's statistics are reset and then accumulated as a cumulative (equal-weight)
    average over the batches (``momentum=None``), with the BN layers in train mode and every other
    layer in eval mode (no dropout), under no_grad. SplitBatchNorm (05) is refreshed as one group:
    the statistics a single evaluation batch would see. Parameters are untouched; the layers get
    their mode and momentum back. No labels are used. Returns the number of BN layers refreshed
    (0: the model has none, e.g. a ViT, and nothing happens).

    Why: a freshly built network's BN holds mean 0 / variance 1, so in eval mode it normalises
    nothing and its features are measured weaker than they are (SmallCNN kNN ~3 points low); and
    a network trained on 20-24 px crops carries statistics of that resolution, not of the 32 px
    test images. ``images`` should be training images at the evaluation resolution.

    Built in: notebooks/01_instdisc.ipynb (used by every notebook through knn_accuracy,
    linear_probe and fresh_bn)
    """
    bns = _batch_norms(model)
    if not bns:
        return 0
    _check_uint8_images(images, "images")
    _check_positive_int(n_images, "n_images")
    _check_positive_int(batch_size, "batch_size")
    n = min(n_images, images.shape[0])
    if profiles.dry_run_limits() is not None:   # gpu-dry: the code path is under test, not the statistics
        n = min(n, profiles.DRY_RUN_BN_IMAGES)
    if n < 2:
        raise ValueError(f"refresh_bn_stats needs at least 2 images to estimate a variance, got {n}.")
    generator = torch.Generator().manual_seed(_BN_REFRESH_SEED)
    order = torch.randperm(images.shape[0], generator=generator)[:n].to(images.device)  # (n,)
    modes = [(module, module.training) for module in model.modules()]
    settings = [(bn, bn.momentum, getattr(bn, "groups", None)) for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None                      # cumulative average over the refresh batches
            if getattr(bn, "groups", None) is not None:
                bn.groups = 1                       # SplitBatchNorm: one group, as at evaluation
            bn.train()
        starts = list(range(0, n, batch_size))
        if len(starts) > 1 and n - starts[-1] < 2:  # a last batch of one image has no variance
            starts.pop()
        for start in starts:
            model(preprocess(images[order[start:start + batch_size]]))
    finally:
        for bn, momentum, groups in settings:
            bn.momentum = momentum
            if groups is not None:
                bn.groups = groups
        for module, was_training in modes:
            module.train(was_training)
    return len(bns)


@contextlib.contextmanager
def fresh_bn(model: nn.Module, images: Tensor, preprocess: Preprocess,
             n_images: int = BN_REFRESH_IMAGES, batch_size: int = BN_REFRESH_BATCH):
    """``with fresh_bn(net, train.images, augment.preprocess): ...``: inside the block ``net``'s
    BatchNorm statistics are refreshed (``refresh_bn_stats``); on leaving, the old statistics are
    put back, so measuring a network never changes it (a training run goes on exactly as before).

    Built in: notebooks/01_instdisc.ipynb
    """
    saved = [(bn, [b.clone() for b in (bn.running_mean, bn.running_var, bn.num_batches_tracked)])
             for bn in _batch_norms(model)]
    try:
        refresh_bn_stats(model, images, preprocess, n_images, batch_size)
        yield model
    finally:
        with torch.no_grad():
            for bn, buffers in saved:
                for buffer, old in zip((bn.running_mean, bn.running_var, bn.num_batches_tracked), buffers):
                    buffer.copy_(old)


def protocol(n_images: int = BN_REFRESH_IMAGES) -> dict:
    """The evaluation protocol as a plain dict, for a results record's ``eval_protocol``. Infrastructure."""
    return {"bn_refresh": True, "bn_refresh_images": n_images, "bn_refresh_batch": BN_REFRESH_BATCH,
            "bn_refresh_on": "a fixed seeded sample of the training images, at their stored (evaluation) "
                             "resolution; no labels",
            "bn_refresh_how": "running statistics reset, then a cumulative average over the batches with "
                              "the BN layers in train mode under no_grad; restored after measuring",
            "applies_to": "every network measured (random-init and trained): kNN, linear probe, collapse meter",
            "knn": "weighted kNN (InstDisc), cosine, k=200, temperature 0.1, on the backbone's features"}


# --- features ------------------------------------------------------------------------------------

def _check_feature_pair(train_features: Tensor, test_features: Tensor) -> None:
    _check_features(train_features, "train_features")
    _check_features(test_features, "test_features")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"feature dimensions differ: train_features has D={train_features.shape[1]}, "
                         f"test_features has D={test_features.shape[1]}; extract both with the same model.")


@torch.no_grad()
def extract_features(model: nn.Module, images: Tensor, preprocess: Preprocess,
                     batch_size: int = 512) -> Tensor:
    """Features of ``images`` from ``model`` in eval mode: (N,3,H,W) uint8 -> (N,D) float32.

    Runs ``model(preprocess(batch))`` over mini-batches of ``batch_size`` without gradients,
    with every submodule in eval mode (BatchNorm uses, and does not update, its running
    statistics; dropout is off). Afterwards each submodule gets back the train/eval mode it had,
    also when the forward pass raises. Outputs of shape (N,D,1,1) etc. are flattened to (N,D).
    The model must live on the images' device; the features are returned there.

    Infrastructure (used by every notebook's evaluation).
    """
    _check_uint8_images(images, "images")
    _check_positive_int(batch_size, "batch_size")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        chunks = []
        for start in range(0, images.shape[0], batch_size):
            batch = preprocess(images[start:start + batch_size])
            chunks.append(model(batch).flatten(1).float())  # (n,D)
        return torch.cat(chunks).to(images.device)  # (N,D)
    finally:
        for module, was_training in modes:
            module.train(was_training)


def raw_pixel_features(images: Tensor) -> Tensor:
    """Raw pixels as a representation: (N,3,H,W) uint8 -> (N,3*H*W) float32, ``x/255``.

    Nothing else is done here, in particular no mean image is subtracted: a set's own mean image
    would leak that set's statistics (the test set's). Cosine kNN on these uncentred vectors is
    weak (CIFAR-10, k=200, tau=0.1: 31%), because every vector points roughly along the mean
    image; the baseline the notebooks draw is ``raw_pixel_knn_accuracy`` (centred by the TRAIN
    mean image, 41%). Memory: 50,000 CIFAR images take 0.6 GB as float32.

    Infrastructure.
    """
    _check_uint8_images(images, "images")
    return images.flatten(1).float() / 255.0  # (N,3HW)


def raw_pixel_knn_accuracy(train_images: Tensor, train_labels: Tensor, test_images: Tensor,
                           test_labels: Tensor, k: int = 200, temperature: float = 0.1) -> float:
    """The "raw pixels" baseline: weighted-kNN accuracy (fraction) on pixels centred by the train mean.

    Both sets are ``raw_pixel_features`` minus the mean image of the TRAIN set (no test
    statistics are used), then ``knn_predict``. Measured on CIFAR-10 (k=200, tau=0.1): 41.3%
    (uncentred: 30.9%; per-channel normalisation with train statistics: 40.9%). A learned
    representation must clearly beat this floor.

    Infrastructure (the baseline line on every notebook's kNN plot).
    """
    train_features = raw_pixel_features(train_images)  # (N_train,3HW)
    test_features = raw_pixel_features(test_images).to(train_features.device)  # (N_test,3HW)
    _check_label_shape(train_labels, train_images.shape[0], "train_labels")
    _check_label_shape(test_labels, test_images.shape[0], "test_labels")
    mean_image = train_features.mean(dim=0)  # (3HW,)
    return _knn_accuracy_of_features(train_features.sub_(mean_image), train_labels,
                                     test_features.sub_(mean_image), test_labels, k, temperature)


# --- weighted kNN (InstDisc Sec. 3.5) ------------------------------------------------------------

@torch.no_grad()
def knn_predict(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                chunk_size: int = 1024) -> Tensor:
    """Weighted kNN class predictions, as in InstDisc (Wu et al. 2018, Sec. 3.5).

    Features are L2-normalised, so s_i = cos(f_test, f_i). With N_k the k train samples of highest
    similarity, the score of class c is

        w_c = sum_{i in N_k, y_i = c} exp(s_i / tau)

    and the prediction is argmax_c w_c (ties: the lowest class index). The exponentials are
    computed as exp((s_i - max_j s_j) / tau), which scales a row's scores by one positive constant
    and so leaves the argmax unchanged while avoiding overflow for small tau.

    Shapes: train_features (N_train,D), train_labels (N_train,) int, test_features (N_test,D)
    -> (N_test,) int64 on test_features' device. Test rows are processed ``chunk_size`` at a
    time, so memory is O(chunk_size * N_train) (1024 x 50,000 float32 = 205 MB). k larger than
    N_train is an error, except in a gpu-dry run (profiles), where k becomes N_train.

    Built in: notebooks/01_instdisc.ipynb
    """
    _check_feature_pair(train_features, test_features)
    _check_positive_int(num_classes, "num_classes")
    _check_labels(train_labels, train_features.shape[0], num_classes, "train_labels")
    _check_positive_int(k, "k")
    if profiles.dry_run_limits() is not None:   # gpu-dry: fewer bank images than k; the code path is under test
        k = min(k, train_features.shape[0])
    if k > train_features.shape[0]:
        raise ValueError(f"k={k} is larger than the number of train samples ({train_features.shape[0]}); "
                         "use k <= number of train samples.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    _check_positive_int(chunk_size, "chunk_size")

    device = test_features.device
    train = F.normalize(train_features.to(device).float(), dim=1)  # (N_train,D)
    test = F.normalize(test_features.float(), dim=1)  # (N_test,D)
    labels = train_labels.to(device).long()  # (N_train,)
    predictions = []
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start:start + chunk_size] @ train.T  # (n,N_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # (n,k), (n,k)
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # (n,k); row max is top_sim[:, 0]
        scores = torch.zeros(top_sim.shape[0], num_classes, device=device)  # (n,C)
        scores.scatter_add_(1, labels[top_idx], weights)  # (n,C)
        predictions.append(scores.argmax(dim=1))  # (n,)
    if not predictions:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(predictions)  # (N_test,)


def knn_accuracy(model: nn.Module, train_images: Tensor, train_labels: Tensor,
                 test_images: Tensor, test_labels: Tensor, preprocess: Preprocess,
                 k: int = 200, temperature: float = 0.1, batch_size: int = 512,
                 refresh_bn: bool = True) -> float:
    """Weighted-kNN top-1 accuracy (fraction in [0,1]) of ``model``'s features on the test set.

    The series' protocol: with ``refresh_bn`` (default) the model's BatchNorm statistics are first
    recomputed on ``train_images`` (``fresh_bn``; put back afterwards, so the model is unchanged).
    Features of both sets then come from ``extract_features`` (eval mode, mode restored
    afterwards); see ``knn_predict``. ``refresh_bn=False`` measures the network with the running
    statistics it holds (how the series measured before the protocol; 01 shows the difference).

    Built in: notebooks/01_instdisc.ipynb
    """
    _check_uint8_images(train_images, "train_images")
    _check_uint8_images(test_images, "test_images")
    _check_label_shape(train_labels, train_images.shape[0], "train_labels")
    _check_label_shape(test_labels, test_images.shape[0], "test_labels")
    with fresh_bn(model, train_images, preprocess) if refresh_bn else contextlib.nullcontext():
        train_features = extract_features(model, train_images, preprocess, batch_size)  # (N_train,D)
        test_features = extract_features(model, test_images, preprocess, batch_size)  # (N_test,D)
    return _knn_accuracy_of_features(train_features, train_labels, test_features, test_labels,
                                     k, temperature)


def _knn_accuracy_of_features(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                              test_labels: Tensor, k: int, temperature: float) -> float:
    """Fraction of test samples ``knn_predict`` gets right; C = largest label + 1."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    predictions = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return (predictions == test_labels.to(predictions.device)).float().mean().item()


# --- linear probe --------------------------------------------------------------------------------

def fit_linear_classifier(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                          test_labels: Tensor, num_classes: int, epochs: int = 30, lr: float = 3e-3,
                          batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> dict:
    """Train a linear classifier on fixed features; the second half of ``linear_probe``.

    Features are standardised with the TRAIN mean and std (per dimension), then nn.Linear(D,C),
    zero-initialised, is trained with cross-entropy, AdamW (``weight_decay`` decoupled, 0 = Adam)
    and a cosine learning rate from ``lr`` to 0 over all steps, on mini-batches shuffled by a
    ``seed``-ed generator (the global RNG is not touched; deterministic given seed and device).
    Why Adam: its step does not depend on how correlated the feature dimensions are. SGD with
    momentum at lr=0.1 reaches the same accuracy on CNN features but oscillates (loss ~10) on
    raw pixels (3072 strongly correlated dimensions); Adam at lr=3e-3 converges on both
    (measured on CIFAR-10: raw pixels 40%, a random-init 3-layer CNN 44%).
    The standardisation is folded into the returned classifier, so it applies to RAW features:
    ``classifier(features).argmax(1)`` gives the predictions.

    Shapes: train_features (N_train,D), test_features (N_test,D), labels (N,) int.
    Returns {"train_acc": float, "test_acc": float, "classifier": nn.Linear(D,C),
    "loss_history": list of the mean training loss per epoch}.

    Built in: notebooks/01_instdisc.ipynb (used for the papers' linear-evaluation numbers)
    """
    _check_feature_pair(train_features, test_features)
    _check_positive_int(num_classes, "num_classes")
    _check_labels(train_labels, train_features.shape[0], num_classes, "train_labels")
    _check_labels(test_labels, test_features.shape[0], num_classes, "test_labels")
    if train_features.shape[0] == 0:
        raise ValueError("train_features is empty; the probe needs training samples.")
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")

    device = train_features.device
    x_train = train_features.detach().float()  # (N_train,D)
    x_test = test_features.detach().float().to(device)  # (N_test,D)
    y_train = train_labels.to(device).long()  # (N_train,)
    y_test = test_labels.to(device).long()  # (N_test,)
    mean = x_train.mean(dim=0)  # (D,)
    std = x_train.std(dim=0, correction=0) + 1e-6  # (D,); +eps: constant dimensions stay finite
    z_train = (x_train - mean) / std  # (N_train,D)

    n, dim = z_train.shape
    classifier = nn.Linear(dim, num_classes).to(device)
    nn.init.zeros_(classifier.weight)  # the problem is convex: zero init is deterministic and fine
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    loss_history = []
    step = 0
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)  # (N_train,)
            epoch_loss = torch.zeros((), device=device)  # summed on the device: no sync per step
            for start in range(0, n, batch_size):
                for group in optimizer.param_groups:  # cosine from lr to 0
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total_steps))
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(classifier(z_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                epoch_loss += loss.detach() * idx.numel()
                step += 1
            loss_history.append(epoch_loss.item() / n)

    with torch.no_grad():  # fold the standardisation in: W (x - mu) / sigma + b = (W / sigma) x + b'
        classifier.bias -= classifier.weight @ (mean / std)
        classifier.weight /= std
        train_acc = (classifier(x_train).argmax(1) == y_train).float().mean().item()
        test_acc = (classifier(x_test).argmax(1) == y_test).float().mean().item()  # nan if no test rows
    classifier.requires_grad_(False)
    return {"train_acc": train_acc, "test_acc": test_acc, "classifier": classifier,
            "loss_history": loss_history}


def linear_probe(backbone: nn.Module, train_images: Tensor, train_labels: Tensor, test_images: Tensor,
                 test_labels: Tensor, preprocess: Preprocess, num_classes: int, epochs: int = 30,
                 lr: float = 3e-3, batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0,
                 feature_batch_size: int = 512, refresh_bn: bool = True) -> dict:
    """Linear evaluation of a frozen ``backbone``: a linear classifier on its fixed features.

    Features are extracted ONCE with ``extract_features`` (eval mode, no gradient, the backbone's
    train/eval mode restored; with ``refresh_bn``, the default, its BatchNorm statistics are
    recomputed on ``train_images`` first and put back afterwards, see ``fresh_bn``), then
    ``fit_linear_classifier`` trains nn.Linear(D,C) on them (train-set standardisation,
    AdamW, cosine lr, cross-entropy). No augmentation during the probe, unlike the
    papers' 100-epoch protocols, so expect a few points below published linear numbers.

    Returns {"train_acc", "test_acc" (fractions), "classifier" (acts on raw backbone features),
    "loss_history"}. Deterministic given ``seed``.

    Built in: notebooks/01_instdisc.ipynb (used for the papers' linear-evaluation numbers)
    """
    _check_uint8_images(train_images, "train_images")
    with fresh_bn(backbone, train_images, preprocess) if refresh_bn else contextlib.nullcontext():
        train_features = extract_features(backbone, train_images, preprocess, feature_batch_size)  # (N_train,D)
        test_features = extract_features(backbone, test_images, preprocess, feature_batch_size)  # (N_test,D)
    return fit_linear_classifier(train_features, train_labels, test_features, test_labels, num_classes,
                                 epochs=epochs, lr=lr, batch_size=batch_size,
                                 weight_decay=weight_decay, seed=seed)


# --- collapse meter (methods without negatives) ---------------------------------------------------

def output_std(z: Tensor) -> float:
    """The std over the batch of the L2-normalised outputs, averaged over the D dimensions
    (Chen & He 2020, SimSiam Sec. 4.1 and Fig. 2, middle):

        std = 1/D sum_d std_n( z_nd / ||z_n|| ).

    If the outputs are spread out (e.g. isotropic Gaussian), each coordinate of a unit vector has
    std about 1/sqrt(D); if they all collapse onto one vector, 0. z (N, D) with N >= 2.

    Built in: notebooks/09_byol.ipynb (used by 10, 11, 13)
    """
    _check_features(z, "z")
    if z.shape[0] < 2:
        raise ValueError(f"output_std needs at least 2 outputs to take a std over, got {z.shape[0]}.")
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def effective_rank(z: Tensor) -> float:
    """Effective rank of the covariance of the outputs (Roy & Vetterli 2007): with eigenvalues
    lambda_1..D of the (N, D) outputs' covariance and p_i = lambda_i / sum_j lambda_j,

        erank = exp(-sum_i p_i log p_i),    between 1 (one direction) and D (isotropic).

    A dimensional collapse (outputs confined to a few directions) shows here even when the std
    is not zero. z (N, D) with N >= 2; all-constant outputs (zero covariance) give 0.

    Built in: notebooks/09_byol.ipynb (used by 10, 11, 13)
    """
    _check_features(z, "z")
    if z.shape[0] < 2:
        raise ValueError(f"effective_rank needs at least 2 outputs, got {z.shape[0]}.")
    z = z.double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(z.T)).clamp(min=0)  # (D,)
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    p = eigenvalues / total
    return torch.exp(-(p * torch.log(p.clamp(min=1e-300))).sum()).item()


def mean_cosine(z: Tensor) -> float:
    """The mean cosine similarity between the outputs of different samples,

        c = 1/(N(N-1)) sum_{i != j} cos(z_i, z_j)  =  (N ||mean_n z_n/|z_n| ||^2 - 1) / (N - 1),

    1.0 when every output points the same way (complete collapse, whatever the noise on top),
    about 0 for outputs spread over the sphere. The std and the effective rank cannot see a
    collapse onto one vector plus small isotropic noise (the noise is spread out); this can.
    z (N, D) with N >= 2.

    Built in: notebooks/09_byol.ipynb
    """
    _check_features(z, "z")
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"mean_cosine needs at least 2 outputs, got {n}.")
    mean_direction = F.normalize(z.double(), dim=1).mean(dim=0)  # (D,)
    return ((n * mean_direction.square().sum() - 1) / (n - 1)).item()


def collapse_meter(z: Tensor) -> dict:
    """The collapse figures of a batch of outputs z (N, D), all on the L2-normalised outputs:
    {"std": output_std(z), "std_sqrt_d": std * sqrt(D) (about 1 when spread out, 0 when
    collapsed), "effective_rank": effective_rank of z/|z| (how many directions the outputs use),
    "mean_cosine": mean_cosine(z) (1.0 for a complete collapse), "dim": D}. Plotted per epoch
    beside the kNN by 09, 10, 11 and 13. Measure z with the network's BatchNorm statistics
    refreshed (``fresh_bn``), as the kNN does.

    Built in: notebooks/09_byol.ipynb
    """
    std = output_std(z)
    return {"std": std, "std_sqrt_d": std * math.sqrt(z.shape[1]),
            "effective_rank": effective_rank(F.normalize(z.float(), dim=1)),
            "mean_cosine": mean_cosine(z), "dim": int(z.shape[1])}
