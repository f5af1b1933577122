"""The pictures every notebook shows: augmented views, loss/kNN curves, t-SNE, nearest neighbours,
the images a unit (a prototype) scores highest.

Every function returns a matplotlib Figure and never calls ``plt.show()``. The figure is created
with pyplot (so Jupyter's inline display is set up) and then released from pyplot with
``plt.close(fig)``: it is shown exactly once when it is the value of a notebook cell (or with
``display(fig)``), never a second time by the inline backend, and figures do not pile up in
pyplot's registry during long notebooks or tests. ``fig.savefig(...)`` works as usual.

Images are uint8 (N,3,H,W) tensors, or float tensors in [0,1]; pass ``mean``/``std`` to undo
a normalisation. Figures are at most 10 inches wide.

Shape legend: N batch (Q queries, G gallery images), D embedding, C classes, H, W image size.
"""

from __future__ import annotations

from typing import Callable, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from ssl_core.sampling import balanced_indices

MAX_WIDTH_INCHES = 10.0
SAME_CLASS_COLOUR = "tab:green"  # neighbour frame when its class equals the query's
OTHER_CLASS_COLOUR = "tab:red"  # neighbour frame otherwise
_RANGE_TOLERANCE = 0.05  # float images may overshoot [0,1] this much (interpolation); then clipped


def _new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A (rows x cols) grid of axes, released from pyplot (see the module docstring)."""
    fig, axes = plt.subplots(rows, cols, figsize=(min(width, MAX_WIDTH_INCHES), height), squeeze=False)
    plt.close(fig)
    return fig, axes


def _frame_only(ax, colour: str, linewidth: float) -> None:
    """No ticks, but a visible coloured frame around the image."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(linewidth)


# --- images --------------------------------------------------------------------------------------

def to_display(images, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Images as imshow wants them: (N,C,H,W) or (C,H,W) -> (N,H,W,3) float32 numpy in [0,1].

    uint8 input is divided by 255. Float input must be in [0,1], or normalised with ``mean``/``std``
    (per channel; then x * std + mean is applied first). One-channel images are repeated to RGB.

    Infrastructure.
    """
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim == 3:
        x = x.unsqueeze(0)  # (1,C,H,W)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N,3,H,W), (N,1,H,W) or (3,H,W), got {tuple(x.shape)}.")
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std (to undo a normalisation), or neither.")
    if x.dtype == torch.uint8:
        if mean is not None:
            raise ValueError("uint8 images are never normalised; drop mean/std.")
        x = x.float() / 255.0
    elif x.dtype.is_floating_point:
        x = x.float()
        if mean is not None:
            x = x * torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1) \
                + torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        low, high = x.min().item(), x.max().item()
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"float images must lie in [0,1] but range over [{low:.2f}, {high:.2f}]; "
                             "if they are normalised, pass mean= and std= to undo it.")
        x = x.clamp(0.0, 1.0)
    else:
        raise ValueError(f"images must be uint8 or floating point, got {x.dtype}.")
    return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()  # (N,H,W,3)


def show_augmentations(images: Tensor, augment: Callable[[Tensor], Tensor], n_views: int = 4,
                       title: str | None = None, mean: Sequence[float] | None = None,
                       std: Sequence[float] | None = None) -> Figure:
    """A grid of augmented views: one row per image, the original first, then ``n_views`` views.

    ``augment`` is called ``n_views`` times on the whole batch (so each column is one call);
    each call returns a float batch (N,3,h,w) in [0,1], or normalised with ``mean``/``std``.
    Pass a few images (at most 16, e.g. ``images[:6]``).

    Infrastructure (every notebook shows its views before training).
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor (N,3,H,W), got {getattr(images, 'shape', type(images))}.")
    n = images.shape[0]
    if not 1 <= n <= 16:
        raise ValueError(f"pass between 1 and 16 images (e.g. images[:6]), got {n}.")
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}.")
    columns = [to_display(images)]  # (N,H,W,3)
    with torch.no_grad():
        for _ in range(n_views):
            view = augment(images)
            if not isinstance(view, Tensor) or view.ndim != 4 or view.shape[0] != n:
                raise ValueError(f"augment(images) must return one batch (N={n},3,h,w), got "
                                 f"{type(view).__name__} of shape {tuple(getattr(view, 'shape', ()))}.")
            columns.append(to_display(view, mean, std))  # (N,h,w,3)

    cell = min(1.5, MAX_WIDTH_INCHES / (1 + n_views))
    fig, axes = _new_figure(cell * (1 + n_views), cell * n + 0.5, rows=n, cols=1 + n_views)
    for col, batch in enumerate(columns):
        axes[0, col].set_title("original" if col == 0 else f"view {col}", fontsize=9)
        for row in range(n):
            axes[row, col].imshow(batch[row], interpolation="nearest")
            axes[row, col].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- curves --------------------------------------------------------------------------------------

def _check_fraction(value: float, what: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a fraction in [0,1] (e.g. 0.41 for 41%), got {value}.")


def plot_history(history: list[dict], title: str | None = None,
                 baselines: dict[str, float] | None = None) -> Figure:
    """Training curves side by side: loss vs epoch, and kNN top-1 (%) vs epoch.

    ``history`` holds one dict per epoch, e.g. {"epoch": 1, "loss": 5.1, "knn_top1": 0.43};
    epochs without "knn_top1" (or "loss") are skipped on that panel, a missing "epoch" is the
    1-based position. ``baselines`` such as {"random init": 0.40, "raw pixels": 0.41} (fractions)
    are drawn as labelled dashed lines on the kNN panel.

    Infrastructure.
    """
    if not history or not all(isinstance(row, dict) for row in history):
        raise ValueError("history must be a non-empty list of dicts, one per epoch, "
                         "e.g. [{'epoch': 1, 'loss': 5.1, 'knn_top1': 0.43}, ...].")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    loss = [(e, row["loss"]) for e, row in zip(epochs, history) if row.get("loss") is not None]
    knn = [(e, row["knn_top1"]) for e, row in zip(epochs, history) if row.get("knn_top1") is not None]
    for _, accuracy in knn:
        _check_fraction(accuracy, "knn_top1")
    for name, value in (baselines or {}).items():
        _check_fraction(value, f"baseline {name!r}")

    fig, axes = _new_figure(10.0, 3.6, rows=1, cols=2)
    loss_ax, knn_ax = axes[0]
    if loss:
        loss_ax.plot(*zip(*loss), marker="o" if len(loss) <= 30 else None, markersize=3)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    if knn:
        xs, ys = zip(*knn)
        knn_ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, color="C0",
                    label=f"kNN top-1 (last {100 * ys[-1]:.1f}%)")
    else:
        knn_ax.text(0.5, 0.5, "no kNN evaluation yet", ha="center", va="center", transform=knn_ax.transAxes)
    for i, (name, value) in enumerate((baselines or {}).items()):
        knn_ax.axhline(100 * value, linestyle="--", linewidth=1.2, color=f"C{i + 1}",
                       label=f"{name} ({100 * value:.1f}%)")
    knn_ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN accuracy")
    if knn or baselines:
        knn_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(curves: dict[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str,
                title: str | None = None) -> Figure:
    """Several named runs on one axes, e.g. kNN accuracy vs epoch for each run of an ablation.

    ``curves`` maps a run's name to its (x, y) points.

    Infrastructure.
    """
    if not curves:
        raise ValueError("curves is empty; pass {run_name: [(x, y), ...], ...}.")
    fig, axes = _new_figure(6.5, 4.0)
    ax = axes[0, 0]
    for name, points in curves.items():
        if len(points) == 0 or any(len(point) != 2 for point in points):
            raise ValueError(f"curve {name!r} must be a non-empty list of (x, y) pairs.")
        ax.plot(*zip(*points), marker="o", markersize=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- feature space -------------------------------------------------------------------------------

def _class_colours(num_classes: int):
    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(c % cmap.N) for c in range(num_classes)]


def plot_tsne(features: Tensor, labels: Tensor, classes: Sequence[str], n: int = 2000, seed: int = 0,
              title: str | None = None, perplexity: float = 30.0) -> Figure:
    """2-D t-SNE of L2-normalised features, one colour per class, class names in the legend.

    ``n`` points are drawn about evenly from each class (seeded); sklearn's
    TSNE(init="pca", perplexity=30, random_state=seed) embeds them. Shapes: features (N,D),
    labels (N,) int in [0, C), classes: C names. 2000 points take ~12 s on one CPU core; on
    cores shared with other work, sklearn's OpenMP threads can make it 3x slower (then wrap the
    call in ``threadpoolctl.threadpool_limits(1)``). Lower n for a quicker picture.

    Infrastructure.
    """
    from sklearn.manifold import TSNE  # imported here: only this function needs scikit-learn

    if not isinstance(features, Tensor) or features.ndim != 2:
        raise ValueError(f"features must be a tensor (N,D), got {getattr(features, 'shape', type(features))}.")
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},) to match features, "
                         f"got {tuple(labels.shape)}.")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"labels must lie in [0, {len(classes)}) to index classes, got values in "
                         f"[{int(labels.min())}, {int(labels.max())}].")
    index = balanced_indices(labels, min(n, len(labels)), seed)  # (n,) class-balanced
    if perplexity >= len(index):
        raise ValueError(f"perplexity ({perplexity}) must be smaller than the number of points "
                         f"({len(index)}); lower perplexity or raise n.")
    points = F.normalize(features.detach()[index.to(features.device)].float(), dim=1).cpu().numpy()  # (n,D)
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    embedded = tsne.fit_transform(points)  # (n,2)

    fig, axes = _new_figure(8.0, 6.0)
    ax = axes[0, 0]
    sub_labels = labels[index].numpy()
    colours = _class_colours(len(classes))
    for c, name in enumerate(classes):
        mask = sub_labels == c
        if mask.any():
            ax.scatter(embedded[mask, 0], embedded[mask, 1], s=6, color=colours[c], label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(index)} features")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def show_neighbours(query_images: Tensor, query_labels: Tensor, gallery_images: Tensor,
                    gallery_labels: Tensor, query_features: Tensor, gallery_features: Tensor,
                    classes: Sequence[str], k: int = 8, title: str | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Figure:
    """Nearest-neighbour retrieval grid, as in InstDisc's figure: one row per query.

    Column 0 is the query (its class name below), then its top-``k`` gallery images by cosine
    similarity, each framed green (``SAME_CLASS_COLOUR``) when its class equals the query's,
    red (``OTHER_CLASS_COLOUR``) otherwise, with the similarity below. Shapes: query_images
    (Q,3,H,W), query_labels (Q,), query_features (Q,D); gallery_* likewise with G rows.
    If the queries are also in the gallery, each finds itself first (similarity 1.00).

    Infrastructure (the retrieval picture of notebook 01 and later).
    """
    q, g = len(query_images), len(gallery_images)
    if not (len(query_labels) == len(query_features) == q):
        raise ValueError(f"query_images, query_labels and query_features must have the same length, got "
                         f"{q}, {len(query_labels)}, {len(query_features)}.")
    if not (len(gallery_labels) == len(gallery_features) == g):
        raise ValueError(f"gallery_images, gallery_labels and gallery_features must have the same length, "
                         f"got {g}, {len(gallery_labels)}, {len(gallery_features)}.")
    if (query_features.ndim != 2 or gallery_features.ndim != 2
            or query_features.shape[1] != gallery_features.shape[1]):
        raise ValueError(f"query_features (Q,D) and gallery_features (G,D) must share D, got shapes "
                         f"{tuple(query_features.shape)} and {tuple(gallery_features.shape)}.")
    if not 1 <= k <= g:
        raise ValueError(f"k must be between 1 and the gallery size ({g}), got {k}.")
    if not 1 <= q <= 16:
        raise ValueError(f"pass between 1 and 16 queries (e.g. 6 test images), got {q}.")

    query = F.normalize(query_features.detach().float(), dim=1)  # (Q,D)
    gallery = F.normalize(gallery_features.detach().float().to(query.device), dim=1)  # (G,D)
    sims, idx = (query @ gallery.T).topk(k, dim=1)  # (Q,k), (Q,k)
    sims, idx = sims.cpu(), idx.cpu()
    query_labels, gallery_labels = torch.as_tensor(query_labels).cpu(), torch.as_tensor(gallery_labels).cpu()
    queries = to_display(query_images, mean, std)  # (Q,H,W,3)
    neighbours = to_display(gallery_images[idx.flatten().to(gallery_images.device)], mean, std)  # (Q*k,H,W,3)

    cell = min(1.1, MAX_WIDTH_INCHES / (1 + k))
    fig, axes = _new_figure(cell * (1 + k), (cell + 0.25) * q + 0.4, rows=q, cols=1 + k)
    for row in range(q):
        query_class = int(query_labels[row])
        axes[row, 0].imshow(queries[row], interpolation="nearest")
        _frame_only(axes[row, 0], "black", 1.0)
        axes[row, 0].set_xlabel(classes[query_class], fontsize=8, fontweight="bold")
        for j in range(k):
            ax = axes[row, 1 + j]
            ax.imshow(neighbours[row * k + j], interpolation="nearest")
            same = int(gallery_labels[idx[row, j]]) == query_class
            _frame_only(ax, SAME_CLASS_COLOUR if same else OTHER_CLASS_COLOUR, 3.0)
            ax.set_xlabel(f"{sims[row, j].item():.2f}", fontsize=7)
    axes[0, 0].set_title("query", fontsize=9)
    for j in range(k):
        axes[0, 1 + j].set_title(f"{j + 1}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_top_images(images: Tensor, scores: Tensor, units: Sequence[int], k: int = 8,
                    labels: Tensor | None = None, classes: Sequence[str] | None = None,
                    unit_name: str = "prototype", title: str | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Figure:
    """What a unit responds to: one row per unit u in ``units`` (e.g. a SwAV prototype), its ``k``
    images of highest ``scores[:, u]``, best first, each with its score below (and its class
    name, when ``labels`` and ``classes`` are given). The row is labelled ``"{unit_name} u"``.

    Shapes: images (N,3,H,W) uint8 (or float in [0,1] / normalised with ``mean``/``std``),
    scores (N,U) (e.g. z C^T, test images against the K prototypes), labels (N,) int.
    Pass 1 to 16 units.

    Built in: notebooks/10_swav.ipynb (the test images each prototype scores highest)
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ValueError(f"scores must be a tensor (N,U), one column per unit, got shape "
                         f"{tuple(getattr(scores, 'shape', ()))}.")
    n, n_units = scores.shape
    if len(images) != n or (labels is not None and len(labels) != n):
        raise ValueError(f"images, scores{' and labels' if labels is not None else ''} must have one row per "
                         f"image, got {len(images)}, {n}{f', {len(labels)}' if labels is not None else ''}.")
    units = [int(u) for u in units]
    if not 1 <= len(units) <= 16:
        raise ValueError(f"pass between 1 and 16 units (e.g. the 6 busiest prototypes), got {len(units)}.")
    if any(not 0 <= u < n_units for u in units):
        raise ValueError(f"units must index the {n_units} columns of scores, got {units}.")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of images ({n}), got {k}.")
    if labels is not None and classes is None:
        raise ValueError("labels were given without classes: pass classes= (the class names) too.")

    top_scores, top_idx = scores.detach().float()[:, units].topk(k, dim=0)  # (k,R), (k,R)
    top_scores, top_idx = top_scores.T.cpu(), top_idx.T.cpu()  # (R,k), (R,k)
    shown = to_display(images[top_idx.flatten().to(images.device)], mean, std)  # (R*k,H,W,3)
    cell = min(1.1, MAX_WIDTH_INCHES / k)
    fig, axes = _new_figure(cell * k, (cell + 0.3) * len(units) + 0.4, rows=len(units), cols=k)
    for row, unit in enumerate(units):
        for j in range(k):
            ax = axes[row, j]
            ax.imshow(shown[row * k + j], interpolation="nearest")
            _frame_only(ax, "black", 0.5)
            text = f"{top_scores[row, j].item():.2f}"
            if labels is not None:
                text = f"{classes[int(labels[top_idx[row, j]])]}\n{text}"
            ax.set_xlabel(text, fontsize=7)
        axes[row, 0].set_ylabel(f"{unit_name} {unit}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
