"""Tests for ssl_core.plotting: figures have the expected panels and images, neighbour frames are
green/red exactly where a brute-force search says the classes match, clear errors."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402  (a dependency of scikit-learn)

from ssl_core.plotting import (MAX_WIDTH_INCHES, OTHER_CLASS_COLOUR, SAME_CLASS_COLOUR,  # noqa: E402
                               plot_curves, plot_history, plot_tsne, show_augmentations,
                               show_neighbours, show_top_images, to_display)

CLASSES = ["plane", "car", "bird"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def random_images(n, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def image_count(fig):
    return sum(len(ax.images) for ax in fig.axes)


def assert_sensible_figure(fig):
    assert isinstance(fig, Figure)
    assert fig.get_size_inches()[0] <= MAX_WIDTH_INCHES + 1e-9
    assert fig not in [plt.figure(n) for n in plt.get_fignums()]  # released from pyplot
    fig.canvas.draw()  # renders without error


# --- to_display ----------------------------------------------------------------------------------

def test_to_display_uint8_and_float():
    images = random_images(4)
    shown = to_display(images)
    assert shown.shape == (4, 8, 8, 3) and shown.dtype == np.float32
    np.testing.assert_allclose(shown[1, 2, 3], images[1, :, 2, 3].numpy() / 255, rtol=1e-6)
    np.testing.assert_allclose(to_display(images.float() / 255), shown, rtol=1e-6)
    assert to_display(images[0]).shape == (1, 8, 8, 3)  # a single (3,H,W) image
    gray = to_display(images[:, :1])
    assert gray.shape == (4, 8, 8, 3) and np.array_equal(gray[..., 0], gray[..., 2])


def test_to_display_undoes_normalisation():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x = random_images(3).float() / 255
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    shown = to_display(normalised, mean=mean, std=std)
    np.testing.assert_allclose(shown, x.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert shown.min() >= 0.0 and shown.max() <= 1.0


def test_to_display_clear_errors():
    x = random_images(2).float() / 255
    with pytest.raises(ValueError, match="pass mean= and std= to undo"):
        to_display((x - 0.5) / 0.2)
    with pytest.raises(ValueError, match="both mean and std"):
        to_display(x, mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="uint8 images are never normalised"):
        to_display(random_images(2), mean=[0.5] * 3, std=[0.2] * 3)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        to_display(torch.zeros(2, 5, 4, 4))


# --- show_augmentations --------------------------------------------------------------------------

def test_show_augmentations_grid_and_calls():
    images = random_images(6)
    calls = []

    def flip(batch):
        calls.append(batch.shape)
        return batch.flip(-1).float() / 255  # (N,3,H,W) in [0,1]

    fig = show_augmentations(images, flip, n_views=3, title="flips")
    assert len(calls) == 3
    assert len(fig.axes) == 6 * 4 and image_count(fig) == 6 * 4
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), to_display(images)[0][:, ::-1])
    assert_sensible_figure(fig)


def test_show_augmentations_denormalises_views():
    mean, std = [0.5] * 3, [0.25] * 3
    images = random_images(2)
    fig = show_augmentations(images, lambda b: (b.float() / 255 - 0.5) / 0.25, n_views=2, mean=mean, std=std)
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), to_display(images)[0], atol=1e-6)


def test_show_augmentations_clear_errors():
    images = random_images(3)
    with pytest.raises(ValueError, match="one batch"):
        show_augmentations(images, lambda b: (b.float() / 255, b.float() / 255))
    with pytest.raises(ValueError, match="between 1 and 16 images"):
        show_augmentations(random_images(20), lambda b: b)
    with pytest.raises(ValueError, match="pass mean= and std="):
        show_augmentations(images, lambda b: b.float() / 255 * 4 - 2)


# --- curves --------------------------------------------------------------------------------------

def test_plot_history_two_panels_with_sparse_knn_and_baselines():
    history = [{"epoch": e, "loss": 5.0 - e / 10, **({"knn_top1": 0.4 + e / 100} if e % 2 == 0 else {})}
               for e in range(1, 11)]
    fig = plot_history(history, title="run", baselines={"random init": 0.40, "raw pixels": 0.41})
    assert len(fig.axes) == 2
    loss_ax, knn_ax = fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == list(range(1, 11))
    knn_line, *baseline_lines = knn_ax.lines
    assert list(knn_line.get_xdata()) == [2, 4, 6, 8, 10]  # epochs without kNN are skipped
    np.testing.assert_allclose(knn_line.get_ydata(), [42, 44, 46, 48, 50])  # percent
    assert [line.get_linestyle() for line in baseline_lines] == ["--", "--"]
    np.testing.assert_allclose([line.get_ydata()[0] for line in baseline_lines], [40, 41])
    legend = [t.get_text() for t in knn_ax.get_legend().get_texts()]
    assert any("random init" in t for t in legend) and any("raw pixels" in t for t in legend)
    assert_sensible_figure(fig)


def test_plot_history_without_knn_and_clear_errors():
    fig = plot_history([{"loss": 3.0}, {"loss": 2.0}])
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2] and len(fig.axes[1].lines) == 0
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        plot_history([])
    with pytest.raises(ValueError, match="fraction in"):
        plot_history([{"epoch": 1, "loss": 1.0, "knn_top1": 43.0}])  # a percentage by mistake
    with pytest.raises(ValueError, match="fraction in"):
        plot_history([{"epoch": 1, "loss": 1.0}], baselines={"raw pixels": 41})


def test_plot_curves_one_line_per_run():
    curves = {"m=0": [(1, 0.3), (2, 0.35)], "m=0.99": [(1, 0.4), (2, 0.5), (3, 0.55)]}
    fig = plot_curves(curves, "epoch", "kNN top-1", title="momentum")
    ax, = fig.axes
    assert [line.get_label() for line in ax.lines] == ["m=0", "m=0.99"]
    assert list(ax.lines[1].get_ydata()) == [0.4, 0.5, 0.55]
    assert ax.get_xlabel() == "epoch" and ax.get_title() == "momentum"
    with pytest.raises(ValueError, match="curves is empty"):
        plot_curves({}, "x", "y")
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        plot_curves({"bad": [(1, 2, 3)]}, "x", "y")


# --- t-SNE ---------------------------------------------------------------------------------------

def test_plot_tsne_small_balanced_with_class_legend():
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.zeros(100), torch.ones(30), torch.full((20,), 2)]).long()
    features = torch.randn(150, 16, generator=g) + 3 * torch.nn.functional.one_hot(labels, 16)
    with threadpool_limits(1):  # OpenMP barriers on busy shared cores: 1 s alone, up to 40 s with 2
        fig = plot_tsne(features, labels, CLASSES, n=60, seed=0)
    ax, = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == CLASSES
    counts = [len(collection.get_offsets()) for collection in ax.collections]
    assert sum(counts) == 60 and counts == [20, 20, 20]  # class-balanced subsample
    assert_sensible_figure(fig)


def test_plot_tsne_clear_errors():
    features, labels = torch.randn(50, 4), torch.arange(50) % 3
    with pytest.raises(ValueError, match="labels must have shape"):
        plot_tsne(features, labels[:10], CLASSES)
    with pytest.raises(ValueError, match="index classes"):
        plot_tsne(features, labels, CLASSES[:2])
    with pytest.raises(ValueError, match="perplexity"):
        plot_tsne(features, labels, CLASSES, n=20)


# --- neighbours ----------------------------------------------------------------------------------

def test_show_neighbours_frames_match_brute_force_search():
    g = torch.Generator().manual_seed(1)
    gallery_features, query_features = torch.randn(30, 6, generator=g), torch.randn(4, 6, generator=g)
    gallery_labels, query_labels = torch.randint(0, 3, (30,), generator=g), torch.tensor([0, 1, 2, 0])
    k = 5
    fig = show_neighbours(random_images(4, seed=2), query_labels, random_images(30, seed=3), gallery_labels,
                          query_features, gallery_features, CLASSES, k=k)
    assert len(fig.axes) == 4 * (1 + k) and image_count(fig) == 4 * (1 + k)

    def cosine(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    same = to_rgba(SAME_CLASS_COLOUR)
    other = to_rgba(OTHER_CLASS_COLOUR)
    colours_seen = set()
    for q in range(4):
        sims = [cosine(query_features[q], gallery_features[i]) for i in range(30)]
        top = sorted(range(30), key=lambda i: -sims[i])[:k]
        row = fig.axes[q * (1 + k):(q + 1) * (1 + k)]
        assert row[0].get_xlabel() == CLASSES[int(query_labels[q])]
        for j, i in enumerate(top):
            expected = same if gallery_labels[i] == query_labels[q] else other
            spine_colours = {tuple(s.get_edgecolor()) for s in row[1 + j].spines.values()}
            assert spine_colours == {expected}
            assert row[1 + j].get_xlabel() == f"{sims[i]:.2f}"
            colours_seen.add(expected)
    assert colours_seen == {same, other}  # both cases exercised
    assert_sensible_figure(fig)


def test_show_neighbours_clear_errors():
    features, labels, images = torch.randn(6, 4), torch.arange(6) % 3, random_images(6)
    with pytest.raises(ValueError, match="between 1 and the gallery size"):
        show_neighbours(images[:2], labels[:2], images, labels, features[:2], features, CLASSES, k=7)
    with pytest.raises(ValueError, match="must share D"):
        show_neighbours(images[:2], labels[:2], images, labels, features[:2, :3], features, CLASSES, k=3)
    with pytest.raises(ValueError, match="same length"):
        show_neighbours(images[:2], labels[:1], images, labels, features[:2], features, CLASSES, k=3)


# --- top images per unit (prototype) ------------------------------------------------------------

def test_show_top_images_rows_match_brute_force_ranking():
    g = torch.Generator().manual_seed(4)
    images, scores = random_images(20, seed=5), torch.randn(20, 7, generator=g)
    labels, units, k = torch.randint(0, 3, (20,), generator=g), [5, 0, 3], 4
    fig = show_top_images(images, scores, units, k=k, labels=labels, classes=CLASSES)
    assert len(fig.axes) == len(units) * k and image_count(fig) == len(units) * k
    for row, unit in enumerate(units):
        best = sorted(range(20), key=lambda i: -float(scores[i, unit]))[:k]  # brute-force ranking
        axes = fig.axes[row * k:(row + 1) * k]
        assert axes[0].get_ylabel() == f"prototype {unit}"
        for ax, i in zip(axes, best):
            np.testing.assert_allclose(ax.images[0].get_array(), to_display(images[i])[0])
            assert ax.get_xlabel() == f"{CLASSES[int(labels[i])]}\n{float(scores[i, unit]):.2f}"
    assert_sensible_figure(fig)
    no_labels = show_top_images(images, scores, [1], k=2, unit_name="unit")
    assert no_labels.axes[0].get_ylabel() == "unit 1" and "\n" not in no_labels.axes[0].get_xlabel()


def test_show_top_images_clear_errors():
    images, scores = random_images(6), torch.randn(6, 3)
    with pytest.raises(ValueError, match="one column per unit"):
        show_top_images(images, scores[:, 0], [0])
    with pytest.raises(ValueError, match="one row per image"):
        show_top_images(images[:4], scores, [0])
    with pytest.raises(ValueError, match="index the 3 columns"):
        show_top_images(images, scores, [3])
    with pytest.raises(ValueError, match="between 1 and 16 units"):
        show_top_images(images, scores, [])
    with pytest.raises(ValueError, match="between 1 and the number of images"):
        show_top_images(images, scores, [0], k=7)
    with pytest.raises(ValueError, match="pass classes="):
        show_top_images(images, scores, [0], k=2, labels=torch.zeros(6, dtype=torch.long))
