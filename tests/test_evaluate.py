"""Tests for ssl_core.evaluate: kNN against a loop written from InstDisc's definition, a toy case
solved by hand, invariants of feature extraction and of the linear probe, clear errors."""

import math

import pytest
import torch
from torch import nn

from ssl_core.evaluate import (extract_features, fit_linear_classifier, knn_accuracy, knn_predict,
                               linear_probe, raw_pixel_features, raw_pixel_knn_accuracy)


def to_float(x):
    return x.float() / 255.0


def knn_loop(train_features, train_labels, test_features, num_classes, k, temperature):
    """Weighted kNN written from the definition, one test sample and one neighbour at a time."""
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    train = [unit(row) for row in train_features.tolist()]
    predictions = []
    for query in test_features.tolist():
        q = unit(query)
        sims = [sum(a * b for a, b in zip(q, t)) for t in train]
        neighbours = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        scores = [0.0] * num_classes
        for i in neighbours:
            scores[int(train_labels[i])] += math.exp(sims[i] / temperature)
        predictions.append(max(range(num_classes), key=lambda c: (scores[c], -c)))
    return torch.tensor(predictions)


@pytest.fixture
def random_features():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(40, 5, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    test = torch.randn(15, 5, generator=g)
    return train, labels, test


# --- knn_predict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 17, 40])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_knn_predict_matches_brute_force_loop(random_features, k, temperature):
    train, labels, test = random_features
    expected = knn_loop(train, labels, test, 4, k, temperature)
    got = knn_predict(train, labels, test, num_classes=4, k=k, temperature=temperature)
    assert got.dtype == torch.int64 and got.shape == (15,)
    assert torch.equal(got, expected)


def test_knn_oracle_comparison_is_not_trivial(random_features):
    # the grid above must exercise k and temperature: they change the predictions on this data
    train, labels, test = random_features
    outcomes = {tuple(knn_predict(train, labels, test, 4, k=k, temperature=t).tolist())
                for k in (1, 5, 17, 40) for t in (0.05, 1.0)}
    assert len(outcomes) >= 4
    assert len(set(knn_predict(train, labels, test, 4, k=1).tolist())) == 4


def test_knn_toy_case_solved_by_hand():
    # The query points along (1,0). Train neighbours and their cosine similarities:
    #   (5,0) class 0: s=1;  (1,1) class 1: s=0.7071;  (2,-2) class 1: s=0.7071;  (-1,0) class 0: s=-1.
    # k=3: w_0 = exp(1/T), w_1 = 2 exp(0.7071/T): class 0 wins iff T < (1-0.7071)/ln 2 = 0.4226.
    train = torch.tensor([[5.0, 0.0], [1.0, 1.0], [2.0, -2.0], [-1.0, 0.0]])  # norms differ on purpose
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[3.0, 0.0]])
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.1).item() == 0  # e^10 > 2e^7.07
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.40).item() == 0
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.45).item() == 1
    assert knn_predict(train, labels, query, 2, k=3, temperature=1.0).item() == 1  # e < 2e^0.707
    # k=4 adds the opposite point with weight e^(-1/T): at T=1, e + 1/e = 3.09 < 4.06, still class 1
    assert knn_predict(train, labels, query, 2, k=4, temperature=1.0).item() == 1
    assert knn_predict(train, labels, query, 2, k=1, temperature=1.0).item() == 0  # nearest only


def test_knn_chunk_size_does_not_change_predictions(random_features):
    train, labels, test = random_features
    reference = knn_predict(train, labels, test, 4, k=7)
    for chunk_size in (1, 3, 7, 15, 1000):
        assert torch.equal(knn_predict(train, labels, test, 4, k=7, chunk_size=chunk_size), reference)


def test_knn_tiny_temperature_is_finite_and_becomes_one_nearest_neighbour(random_features):
    # exp(1/1e-4) overflows float32; the max-shifted exponentials must not.
    train, labels, test = random_features
    sharp = knn_predict(train, labels, test, 4, k=10, temperature=1e-4)
    nearest = knn_predict(train, labels, test, 4, k=1)
    assert torch.equal(sharp, nearest)


def test_knn_rows_are_independent_of_other_test_rows(random_features):
    train, labels, test = random_features
    together = knn_predict(train, labels, test, 4, k=5)
    alone = torch.cat([knn_predict(train, labels, test[i:i + 1], 4, k=5) for i in range(len(test))])
    assert torch.equal(together, alone)


def test_knn_clear_errors(random_features):
    train, labels, test = random_features
    with pytest.raises(ValueError, match="k=41 is larger than the number of train samples"):
        knn_predict(train, labels, test, 4, k=41)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        knn_predict(train, labels, test[:, :3], 4, k=5)
    with pytest.raises(ValueError, match="num_classes"):
        knn_predict(train, labels, test, 3, k=5)  # labels go up to 3
    with pytest.raises(ValueError, match="one label per sample"):
        knn_predict(train, labels[:-1], test, 4, k=5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_predict(train, labels, test, 4, k=5, temperature=0.0)
    with pytest.raises(ValueError, match="2-D tensor"):
        knn_predict(train[0], labels, test, 4, k=5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn_predict(train, labels, test, 4, k=0)


# --- extract_features, knn_accuracy, raw pixels --------------------------------------------------

def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1))  # output (N,4,1,1): flattened to (N,4)


def random_images(n, seed=0, size=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_extract_features_batched_equals_eval_forward_and_restores_modes():
    net = small_net().train()
    net[3].eval()  # a submodule deliberately in another mode than its parent
    images = random_images(10)
    bn = net[1]
    bn.running_mean.add_(0.3)  # non-trivial running statistics
    mean, var, tracked = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()

    features = extract_features(net, images, to_float, batch_size=3)

    assert features.shape == (10, 4) and features.dtype == torch.float32
    assert not features.requires_grad
    assert net.training and net[0].training and not net[3].training  # every mode as it was
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert torch.equal(bn.num_batches_tracked, tracked)
    with torch.no_grad():
        expected = net.eval()(to_float(images)).flatten(1)
    torch.testing.assert_close(features, expected)


def test_extract_features_restores_mode_when_forward_raises():
    net = small_net().train()

    def broken_preprocess(batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(net, random_images(4), broken_preprocess)
    assert all(module.training for module in net.modules())


def test_extract_features_clear_errors():
    net = small_net()
    with pytest.raises(ValueError, match="uint8"):
        extract_features(net, random_images(4).float(), to_float)
    with pytest.raises(ValueError, match="uint8 tensor of shape"):
        extract_features(net, random_images(4)[0], to_float)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        extract_features(net, random_images(4), to_float, batch_size=0)


def test_raw_pixel_features_is_flattened_over_255():
    images = random_images(5)
    features = raw_pixel_features(images)
    assert features.shape == (5, 3 * 6 * 6)
    assert torch.equal(features[2].view(3, 6, 6), images[2].float() / 255)


def test_knn_accuracy_equals_knn_predict_on_model_features():
    images, labels = random_images(30, seed=1), torch.arange(30) % 3
    net = small_net().train()
    accuracy = knn_accuracy(net, images[:20], labels[:20], images[20:], labels[20:], to_float, k=5,
                            refresh_bn=False)
    features = extract_features(net, images, to_float)
    predictions = knn_predict(features[:20], labels[:20], features[20:], 3, k=5)
    assert accuracy == pytest.approx((predictions == labels[20:]).float().mean().item())
    assert net.training


def test_knn_accuracy_refreshes_bn_on_train_images_and_leaves_the_model_unchanged():
    images, labels = random_images(30, seed=1), torch.arange(30) % 3
    net = small_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    accuracy = knn_accuracy(net, images[:20], labels[:20], images[20:], labels[20:], to_float, k=5)
    for key, value in net.state_dict().items():          # running statistics put back
        assert torch.equal(value, before[key]), key
    with fresh_bn(net, images[:20], to_float):
        features = extract_features(net, images, to_float)
    predictions = knn_predict(features[:20], labels[:20], features[20:], 3, k=5)
    assert accuracy == pytest.approx((predictions == labels[20:]).float().mean().item())
    assert net.training


# --- the evaluation protocol: BatchNorm refresh ------------------------------------------------

from ssl_core.evaluate import fresh_bn, mean_cosine, protocol, refresh_bn_stats  # noqa: E402


def bn_stats_loop(net, images, n, batch_size):
    """The refreshed running mean / variance of net[1] (the BN after net[0]) written out: the same
    seeded sample, per-batch mean and unbiased variance over (N, H, W), averaged over batches."""
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    means, variances = [], []
    for start in range(0, n, batch_size):
        with torch.no_grad():
            a = net[0](to_float(images[order[start:start + batch_size]]))        # (b,C,H,W)
        flat = a.transpose(0, 1).reshape(a.shape[1], -1)                        # (C, b*H*W)
        means.append(flat.mean(dim=1))
        variances.append(flat.var(dim=1, correction=1))
    return torch.stack(means).mean(0), torch.stack(variances).mean(0)


def test_refresh_bn_stats_equals_a_cumulative_average_loop():
    images = random_images(64, seed=4)
    net = small_net()
    net[1].running_mean.fill_(3.0)                                   # stale statistics
    net[1].momentum = 0.1
    assert refresh_bn_stats(net, images, to_float, n_images=48, batch_size=16) == 1
    mean, var = bn_stats_loop(net, images, 48, 16)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    assert net[1].momentum == 0.1 and all(m.training for m in net.modules())


def test_refresh_bn_stats_keeps_modes_and_parameters_and_skips_models_without_bn():
    images = random_images(20, seed=5)
    net = small_net().eval()
    params = [p.clone() for p in net.parameters()]
    refresh_bn_stats(net, images, to_float, batch_size=7)            # last batch of 6: kept
    assert not any(m.training for m in net.modules())
    assert all(torch.equal(p, q) for p, q in zip(params, net.parameters()))
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 4, 4]))
    assert refresh_bn_stats(no_bn, images, to_float) == 0
    with pytest.raises(ValueError, match="at least 2 images"):
        refresh_bn_stats(net, images[:1], to_float)
    with pytest.raises(ValueError, match="uint8"):
        refresh_bn_stats(net, images.float(), to_float)


def test_refresh_bn_stats_treats_split_batchnorm_as_one_group():
    from ssl_core.models import split_batchnorm_
    images = random_images(32, seed=6)
    plain, split = small_net(), split_batchnorm_(small_net(), groups=4)
    refresh_bn_stats(plain, images, to_float, batch_size=16)
    refresh_bn_stats(split, images, to_float, batch_size=16)
    assert split[1].groups == 4
    torch.testing.assert_close(split[1].running_var, plain[1].running_var)


def test_fresh_bn_restores_statistics_even_on_error():
    images = random_images(20, seed=7)
    net = small_net()
    old = net[1].running_var.clone()
    with pytest.raises(RuntimeError, match="inside"):
        with fresh_bn(net, images, to_float):
            assert not torch.equal(net[1].running_var, old)
            raise RuntimeError("inside")
    assert torch.equal(net[1].running_var, old)
    assert protocol()["bn_refresh_images"] == 5000


def test_raw_pixel_knn_centres_by_train_mean_only():
    images, labels = random_images(30, seed=2), torch.arange(30) % 3
    train, test = images[:20], images[20:]
    centred = raw_pixel_features(images) - raw_pixel_features(train).mean(dim=0)
    predictions = knn_predict(centred[:20], labels[:20], centred[20:], 3, k=5)
    expected = (predictions == labels[20:]).float().mean().item()
    assert raw_pixel_knn_accuracy(train, labels[:20], test, labels[20:], k=5) == pytest.approx(expected)
    # test statistics are not used: splitting the test set changes nothing per sample
    first = raw_pixel_knn_accuracy(train, labels[:20], test[:4], labels[20:24], k=5)
    rest = raw_pixel_knn_accuracy(train, labels[:20], test[4:], labels[24:], k=5)
    assert (4 * first + 6 * rest) / 10 == pytest.approx(expected)


# --- linear probe --------------------------------------------------------------------------------

def separable_problem(n_train=300, n_test=100):
    """Images whose labels are a linear function of a fixed backbone's features (margin kept)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.BatchNorm1d(8))
    images = random_images(3 * (n_train + n_test), seed=3, size=4)
    with torch.no_grad():
        features = backbone.eval()(to_float(images))  # (N,8)
    scores = features @ torch.randn(8, 3, generator=torch.Generator().manual_seed(1))  # (N,3)
    top2 = scores.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1] > 0.5).nonzero().squeeze(1)[: n_train + n_test]  # clear margin
    images, labels = images[keep], scores[keep].argmax(dim=1)
    return backbone, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


@pytest.mark.parametrize("start_in_train_mode", [True, False])
def test_linear_probe_freezes_backbone_and_separates_toy_data(start_in_train_mode):
    backbone, x_train, y_train, x_test, y_test = separable_problem()
    backbone.train(start_in_train_mode)
    bn = backbone[2]
    state = {name: value.clone() for name, value in backbone.state_dict().items()}

    result = linear_probe(backbone, x_train, y_train, x_test, y_test, to_float, num_classes=3,
                          epochs=30, batch_size=64)

    assert result["train_acc"] >= 0.99 and result["test_acc"] >= 0.95  # default lr, 150 steps
    assert all(p.grad is None for p in backbone.parameters())
    assert all(torch.equal(value, state[name]) for name, value in backbone.state_dict().items())
    assert torch.equal(bn.running_mean, state["2.running_mean"])  # BN statistics untouched
    assert all(m.training == start_in_train_mode for m in backbone.modules())
    assert result["loss_history"][-1] < result["loss_history"][0]
    # the returned classifier acts on raw backbone features (standardisation folded in), measured
    # with the BN statistics refreshed on the training images (the protocol)
    with fresh_bn(backbone, x_train, to_float):
        features = extract_features(backbone, x_test, to_float)
    predictions = result["classifier"](features).argmax(dim=1)
    assert (predictions == y_test).float().mean().item() == pytest.approx(result["test_acc"])


def test_linear_probe_is_deterministic_and_never_trains_on_test_data():
    backbone, x_train, y_train, x_test, y_test = separable_problem(n_train=120, n_test=40)
    kwargs = dict(num_classes=3, epochs=3, batch_size=32, seed=5)
    a = linear_probe(backbone, x_train, y_train, x_test, y_test, to_float, **kwargs)
    b = linear_probe(backbone, x_train, y_train, x_test[:10], y_test[:10], to_float, **kwargs)
    assert torch.equal(a["classifier"].weight, b["classifier"].weight)
    assert torch.equal(a["classifier"].bias, b["classifier"].bias)
    assert a["train_acc"] == b["train_acc"] and a["loss_history"] == b["loss_history"]


def test_fit_linear_classifier_clear_errors():
    features, labels = torch.randn(20, 4), torch.arange(20) % 2
    with pytest.raises(ValueError, match="feature dimensions differ"):
        fit_linear_classifier(features, labels, features[:, :3], labels, 2)
    with pytest.raises(ValueError, match="num_classes"):
        fit_linear_classifier(features, labels + 1, features, labels, 2)
    with pytest.raises(ValueError, match="one label per sample"):
        fit_linear_classifier(features, labels[:5], features, labels, 2)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit_linear_classifier(features, labels, features, labels, 2, epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        fit_linear_classifier(features, labels, features, labels, 2, lr=-1.0)
    with pytest.raises(ValueError, match="integer tensor of class indices"):
        fit_linear_classifier(features, labels.float(), features, labels, 2)


# --- collapse meter ----------------------------------------------------------------------------

from ssl_core.evaluate import collapse_meter, effective_rank, output_std  # noqa: E402


def test_nan_features_are_rejected_by_knn_probe_and_meter():
    features, labels = torch.randn(10, 4), torch.arange(10) % 2
    bad = features.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite values .* in 1 of 10 rows"):
        knn_predict(bad, labels, features, 2, k=3)
    with pytest.raises(ValueError, match="test_features has non-finite"):
        knn_predict(features, labels, bad, 2, k=3)
    with pytest.raises(ValueError, match="lower the learning rate"):
        fit_linear_classifier(bad, labels, features, labels, 2)
    bad[5, 0] = float("inf")
    with pytest.raises(ValueError, match="in 2 of 10 rows"):
        collapse_meter(bad)


def test_output_std_matches_per_dimension_loop():
    z = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    u = z / z.norm(dim=1, keepdim=True)
    naive = 0.0
    for d in range(6):
        col = [float(u[n, d]) for n in range(50)]
        mean = sum(col) / 50
        naive += math.sqrt(sum((c - mean) ** 2 for c in col) / 49) / 6   # unbiased, as torch.std
    assert output_std(z) == pytest.approx(naive, rel=1e-5)


def test_output_std_spread_is_about_one_over_sqrt_d_and_collapsed_is_zero():
    spread = torch.randn(4000, 64, generator=torch.Generator().manual_seed(1))
    assert output_std(spread) * math.sqrt(64) == pytest.approx(1.0, abs=0.02)
    collapsed = torch.randn(1, 64).expand(100, 64) * torch.rand(100, 1)   # one direction, any length
    assert output_std(collapsed) == pytest.approx(0.0, abs=1e-6)


def test_effective_rank_analytic_values_and_eigen_loop():
    g = torch.Generator().manual_seed(2)
    assert effective_rank(torch.randn(20000, 8, generator=g)) == pytest.approx(8, rel=0.02)   # isotropic
    line = torch.randn(100, 1, generator=g) * torch.randn(1, 8, generator=g)                  # rank 1
    assert effective_rank(line) == pytest.approx(1.0, rel=1e-4)
    two = torch.zeros(1000, 8)
    two[:, :2] = torch.randn(1000, 2, generator=g) * torch.tensor([1.0, 2.0])               # two axes, var 1:4
    cov = torch.cov(two.double().T)
    lam = [float(v) for v in torch.linalg.eigvalsh(cov) if v > 1e-12]
    p = [v / sum(lam) for v in lam]
    assert effective_rank(two) == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)), rel=1e-6)
    assert effective_rank(torch.ones(10, 4)) == 0.0


def test_mean_cosine_equals_pairwise_loop_and_sees_collapse_plus_noise():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(12, 5, generator=g)
    u = [v / v.norm() for v in z]
    pairs = [float(u[i] @ u[j]) for i in range(12) for j in range(12) if i != j]
    assert mean_cosine(z) == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)
    # 09's toy: one constant vector plus small noise. The std is small but not 0, the effective
    # rank of the normalised outputs is high (the noise is isotropic); the mean cosine says 1.
    toy = torch.randn(1, 128, generator=g) + 0.01 * torch.randn(1000, 128, generator=g)
    m = collapse_meter(toy)
    assert m["mean_cosine"] > 0.99 and m["effective_rank"] > 100
    spread = collapse_meter(torch.randn(4000, 128, generator=g))
    assert abs(spread["mean_cosine"]) < 0.01


def test_collapse_meter_reports_its_figures_and_checks_input():
    z = torch.randn(500, 16, generator=torch.Generator().manual_seed(3))
    m = collapse_meter(z)
    assert set(m) == {"std", "std_sqrt_d", "effective_rank", "mean_cosine", "dim"} and m["dim"] == 16
    assert m["effective_rank"] == pytest.approx(effective_rank(z / z.norm(dim=1, keepdim=True)))
    assert m["std_sqrt_d"] == pytest.approx(m["std"] * 4)
    with pytest.raises(ValueError, match=r"\(N,D\)"):
        output_std(torch.zeros(5))
    with pytest.raises(ValueError, match="at least 2"):
        effective_rank(torch.zeros(1, 3))
