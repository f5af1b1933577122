"""Tests for ssl_core.profiles: the SSL_PROFILE switch, pick(), clear errors, seeding."""

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from ssl_core import profiles
from ssl_core.profiles import PROFILES, Profile, describe_device, get_profile, seed_everything


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_environment_variable_is_respected(monkeypatch):
    monkeypatch.setenv("SSL_PROFILE", "smoke")
    assert get_profile() == Profile("smoke", torch.device("cpu"), n_train=2000, n_test=1000)
    monkeypatch.setenv("SSL_PROFILE", " Laptop ")
    assert get_profile().name == "laptop"
    assert get_profile("smoke").name == "smoke"  # an explicit name wins over the environment


def test_auto_picks_laptop_without_cuda_and_gpu_with_it(monkeypatch, no_cuda):
    monkeypatch.delenv("SSL_PROFILE", raising=False)
    assert get_profile() == Profile("laptop", torch.device("cpu"), None, None)
    assert get_profile("auto").name == "laptop"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile() == Profile("gpu", torch.device("cuda"), None, None)


def test_smoke_and_laptop_stay_on_the_cpu_even_with_cuda(fake_cuda):
    assert get_profile("smoke").device == get_profile("laptop").device == torch.device("cpu")
    assert get_profile("gpu").device == torch.device("cuda")


def test_unknown_name_lists_valid_names_and_how_to_set_it(monkeypatch):
    with pytest.raises(ValueError) as info:
        get_profile("labtop")
    for text in ("'labtop'", "smoke, laptop, gpu, gpu-dry, auto", "SSL_PROFILE=laptop", 'get_profile("laptop")'):
        assert text in str(info.value)
    monkeypatch.setenv("SSL_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast' \\(from SSL_PROFILE\\)"):
        get_profile()


def test_gpu_without_cuda_says_to_use_laptop(no_cuda):
    with pytest.raises(ValueError, match="needs CUDA.*SSL_PROFILE=laptop"):
        get_profile("gpu")


def test_pick_returns_this_profiles_value_and_rejects_typos_and_gaps():
    laptop = Profile("laptop", torch.device("cpu"), None, None)
    assert laptop.pick(smoke=1, laptop=15, gpu=200) == 15
    assert Profile("smoke", torch.device("cpu"), 2000, 1000).pick(smoke="a", laptop="b", gpu="c") == "a"
    with pytest.raises(ValueError, match="'labtop' \\(did you mean 'laptop'\\?\\)"):
        laptop.pick(smoke=1, labtop=15, gpu=200)
    with pytest.raises(ValueError, match="no value for the current profile 'laptop' \\(got smoke, gpu\\)"):
        laptop.pick(smoke=1, gpu=200)
    assert laptop.pick(laptop=None) is None  # None is a value, not a gap


def test_describe_names_profile_and_device():
    assert Profile("laptop", torch.device("cpu"), None, None).describe() == \
        f"profile laptop on cpu ({torch.get_num_threads()} threads)"
    assert describe_device("meta") == "meta"
    assert PROFILES == ("smoke", "laptop", "gpu")


def test_seed_everything_makes_every_generator_repeat():
    def draw(generator):
        return (random.random(), np.random.rand(), torch.rand(3).tolist(), torch.rand(2, generator=generator).tolist())

    first = draw(seed_everything(7))
    second = draw(seed_everything(7))
    other = draw(seed_everything(8))
    assert first == second and first != other
    assert isinstance(seed_everything(0), torch.Generator)
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(1.5)


def test_gpu_dry_runs_the_gpu_recipe_on_the_cpu_with_capped_loops(fake_cuda):
    from ssl_core import data
    dry = get_profile("gpu-dry")
    assert dry.device == torch.device("cpu") and dry.dry_run and (dry.n_train, dry.n_test) == (40, 32)
    assert dry.pick(smoke=1, laptop=15, gpu=200) == 200             # the gpu recipe's values ...
    assert dry.epochs(smoke=1, laptop=15, gpu=200) == 1             # ... but a single epoch
    assert dry.epochs(smoke=(10, 2), laptop=(100, 20), gpu=(60, 30)) == (1, 1)
    images = torch.zeros(512, 3, 4, 4, dtype=torch.uint8)
    loader = data.OnDeviceLoader(images, batch_size=256)
    batches = [x for _, x, _ in loader]
    assert len(loader) == len(batches) == profiles.DRY_RUN_STEPS == 1 and all(len(x) == 32 for x in batches)
    assert dry.steps(smoke=30, laptop=560, gpu=19_500) == 1
    laptop = get_profile("laptop")                                 # switching back lifts the caps
    assert laptop.epochs(smoke=1, laptop=15, gpu=200) == 15 and not laptop.dry_run
    assert len(data.OnDeviceLoader(images, batch_size=256)) == 2 and len(list(data.OnDeviceLoader(images, batch_size=64))) == 8


def test_gpu_dry_caps_the_bn_refresh_at_a_few_images():
    from ssl_core import evaluate
    seen = []
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    net.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    images = torch.randint(0, 256, (300, 3, 4, 4), dtype=torch.uint8)
    prep = lambda x: x.float() / 255                                     # noqa: E731
    for name, expected in (("gpu-dry", profiles.DRY_RUN_BN_IMAGES), ("laptop", 300)):
        get_profile(name)
        seen.clear()
        evaluate.refresh_bn_stats(net, images, prep, batch_size=50)
        assert sum(seen) == expected, name
    get_profile("laptop")


def test_gpu_dry_caps_the_knn_k_at_the_bank_size_and_only_there():
    from ssl_core import evaluate
    g = torch.Generator().manual_seed(0)
    bank, labels, queries = torch.randn(100, 8, generator=g), torch.arange(100) % 10, torch.randn(7, 8, generator=g)
    get_profile("gpu-dry")
    try:                                     # the notebooks' k = 200 against a bank of 100 images
        assert torch.equal(evaluate.knn_predict(bank, labels, queries, 10, k=200),
                           evaluate.knn_predict(bank, labels, queries, 10, k=100))
    finally:
        get_profile("laptop")
    with pytest.raises(ValueError, match="k=200 is larger than the number of train samples"):
        evaluate.knn_predict(bank, labels, queries, 10, k=200)


def test_autocast_is_bf16_only_for_the_gpu_recipe_and_can_be_switched_off(monkeypatch):
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    for name in ("smoke", "laptop"):
        with get_profile(name).autocast():
            assert (x @ w).dtype == torch.float32
    dry = get_profile("gpu-dry")
    monkeypatch.setattr(profiles, "cpu_has_native_bf16", lambda: True)
    assert dry.mixed_precision
    with dry.autocast():                      # on the CPU: the same dtype path as on CUDA
        assert (x @ w).dtype == torch.bfloat16
    monkeypatch.setattr(profiles, "cpu_has_native_bf16", lambda: False)
    assert not dry.mixed_precision            # emulated bf16: ~20x slower, off in the dry run ...
    monkeypatch.setenv("SSL_AMP", "1")
    assert dry.mixed_precision                # ... unless asked for
    with dry.autocast():
        assert (x @ w).dtype == torch.bfloat16
    monkeypatch.setenv("SSL_AMP", "0")
    assert not dry.mixed_precision
    with dry.autocast():
        assert (x @ w).dtype == torch.float32
    get_profile("laptop")                     # leave no dry-run caps behind for other tests


def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not profiles.cpu_has_native_bf16(str(x86))             # AVX2 only: bf16 is emulated
    x86.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert profiles.cpu_has_native_bf16(str(x86))
    arm.write_text("Features\t: fp asimd sve bf16 i8mm\n")
    assert profiles.cpu_has_native_bf16(str(arm))
    assert not profiles.cpu_has_native_bf16(str(tmp_path / "absent"))
    assert get_profile("gpu-dry").mixed_precision == profiles.cpu_has_native_bf16() or os.environ.get("SSL_AMP")
    get_profile("laptop")


def test_prepare_sets_channels_last_for_conv_nets_only_under_the_gpu_recipe(monkeypatch):
    from ssl_core import models

    net = models.SmallCNN(width=8)
    assert get_profile("laptop").prepare(net) is net
    assert not net.net[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    dry = get_profile("gpu-dry")
    assert dry.prepare(net) is net and net.net[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert net.state_dict().keys() == before.keys()  # parameter names unchanged: checkpoints still load
    mlp = models.mlp(4, 8, 2)
    dry.prepare(mlp)                          # no conv: left alone
    assert all(p.is_contiguous() for p in mlp.parameters())
    get_profile("laptop")
