"""Bad input gets a clear error, and no run is silently lost (issue 24).

Each case is what a reader who tweaks a cell might write. Every one must raise the right error
type with a message that names the knob or the fix (pytest.raises(..., match=...)); the cases that
used to pass silently (a NaN view, a reversed objective, a moved last bank row, bf16 left on)
are the most important. The second half checks the behaviour that is now fixed instead of
refused (16-bit PNGs, GIFs, hidden files, a stale cache, mixed dtypes) and every way a run could
be lost (resume with changed settings, an unstable settings hash, an unwritable checkpoint
folder, stale temporary files).
"""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_core import augment as A
from ssl_core import checkpoint, data, losses, memory, models, momentum, profiles, schedules

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def unit(n=4, d=8, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def floats(n=2, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def uint8_images(n=2, size=16):
    return (floats(n, size) * 255).to(torch.uint8)


def frozen_pair():  # (online, target): passing them in this order is the swap
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    return online, momentum.copy_frozen(online)


def bank_update(idx, features=None):
    bank = memory.MemoryBank(4, dim=3)
    bank.update_(idx, unit(len(idx), 3) if features is None else features)


Z = unit()
T = 0.0  # the temperature that used to give NaN silently

# (id, call, error type, message pattern): the pattern names the knob or the fix
CASES = [
    # ---- 1. uint8 images straight into a model
    ("SmallCNN uint8", lambda: models.SmallCNN(width=4)(uint8_images()), TypeError, r"uint8 images.*augment\.preprocess"),
    ("ResNet18 uint8", lambda: models.ResNet18(width=4)(uint8_images()), TypeError, r"augment\.preprocess"),
    ("ViT uint8", lambda: models.ViT(16, 4, dim=8, depth=1, heads=2)(uint8_images()), TypeError, r"augment\.preprocess"),
    ("ViT attention uint8", lambda: models.ViT(16, 4, dim=8, depth=1, heads=2).last_attention(uint8_images()),
     TypeError, r"augment\.preprocess"),
    # ---- 2. temperature <= 0, one check for every loss
    ("nt_xent t=0", lambda: losses.nt_xent(Z, Z, T), ValueError, r"nt_xent: temperature must be > 0.*NaN"),
    ("nt_xent t<0", lambda: losses.nt_xent(Z, Z, -0.5), ValueError, r"temperature must be > 0.*reverses"),
    ("nt_xent t=nan", lambda: losses.nt_xent(Z, Z, float("nan")), ValueError, r"temperature must be > 0"),
    ("nt_xent t str", lambda: losses.nt_xent(Z, Z, "0.5"), TypeError, r"temperature must be a number"),
    ("info_nce t=0", lambda: losses.info_nce(Z, Z, temperature=T), ValueError, r"info_nce: temperature must be > 0"),
    ("info_nce t<0", lambda: losses.info_nce(Z, Z, Z, temperature=-0.1), ValueError, r"temperature must be > 0"),
    ("invaspread t=0", lambda: losses.invaspread_loss(Z, Z, T), ValueError, r"invaspread_loss: tau must be > 0"),
    ("invaspread t<0", lambda: losses.invaspread_loss(Z, Z, -0.1), ValueError, r"tau must be > 0"),
    ("softmax t=0", lambda: losses.nonparametric_softmax_loss(Z, Z, torch.arange(4), T), ValueError,
     r"nonparametric_softmax_loss: tau must be > 0"),
    ("softmax t<0", lambda: losses.nonparametric_softmax_loss(Z, Z, torch.arange(4), -0.07), ValueError,
     r"tau must be > 0"),
    ("nce t=0", lambda: losses.instdisc_nce_loss(torch.zeros(4), torch.zeros(4, 3), 0.0, tau=T, n_data=10),
     ValueError, r"instdisc_nce_loss: tau must be > 0"),
    ("nce t<0", lambda: losses.instdisc_nce_loss(torch.zeros(4), torch.zeros(4, 3), 0.0, tau=-1, n_data=10),
     ValueError, r"tau must be > 0"),
    ("log Z t=0", lambda: losses.estimate_log_Z(torch.zeros(4, 3), T, 10), ValueError, r"estimate_log_Z: tau must be > 0"),
    ("distillation t<0", lambda: losses.distillation_loss(Z, Z, -1.0), ValueError, r"temperature must be > 0"),
    ("swav t=0", lambda: losses.swav_loss(Z, Z, T), ValueError, r"swav_loss: temperature must be > 0"),
    ("dino student t=0", lambda: losses.dino_loss([Z, Z], [Z, Z], torch.zeros(8), student_temp=T), ValueError,
     r"student_temp must be > 0"),
    ("dino teacher t<0", lambda: losses.dino_loss([Z, Z], [Z, Z], torch.zeros(8), teacher_temp=-0.04), ValueError,
     r"teacher_temp must be > 0"),
    # ---- 3. a NaN or infinite loss in a training loop
    ("NaN loss", lambda: losses.check_finite(torch.tensor(float("nan")), step=7, lr=0.5, tau=0.2),
     FloatingPointError, r"loss is nan at step 7 \(lr=0\.5, tau=0\.2\).*lower the learning rate"),
    ("inf loss", lambda: losses.check_finite(float("inf"), step=3, hint="raise tau"), FloatingPointError,
     r"loss is inf at step 3.*Fix: raise tau"),
    # ---- 4. augmentation knobs, named
    ("gray_p=20", lambda: A.Augment(gray_p=20), ValueError, r"Augment\.gray_p .*must be in \[0, 1\], got 20"),
    ("flip_p<0", lambda: A.Augment(flip_p=-0.1), ValueError, r"Augment\.flip_p"),
    ("jitter_p>1", lambda: A.Augment(jitter_p=1.5), ValueError, r"Augment\.jitter_p"),
    ("blur_p=2", lambda: A.Augment(blur_p=2), ValueError, r"Augment\.blur_p"),
    ("solarize_p<0", lambda: A.Augment(solarize_p=-1), ValueError, r"Augment\.solarize_p"),
    ("crop_scale (0, 0)", lambda: A.Augment(crop_scale=(0, 0)), ValueError, r"Augment\.crop_scale.*0 < low <= high <= 1"),
    ("crop_scale (1, 0.2)", lambda: A.Augment(crop_scale=(1, 0.2)), ValueError, r"Augment\.crop_scale"),
    ("crop_scale > 1", lambda: A.Augment(crop_scale=(0.2, 1.5)), ValueError, r"Augment\.crop_scale"),
    ("crop_scale scalar", lambda: A.Augment(crop_scale=0.2), TypeError, r"Augment\.crop_scale .*pair"),
    ("crop_ratio 0", lambda: A.Augment(crop_ratio=(0, 1)), ValueError, r"Augment\.crop_ratio"),
    ("blur_sigma (0, 0)", lambda: A.Augment(blur_sigma=(0, 0)), ValueError, r"Augment\.blur_sigma"),
    ("jitter 3-tuple", lambda: A.Augment(jitter=(0.4, 0.4, 0.4)), ValueError, r"Augment\.jitter must be 4 strengths"),
    ("jitter hue 0.7", lambda: A.Augment(jitter=(0.4, 0.4, 0.4, 0.7)), ValueError, r"Augment\.jitter hue"),
    ("jitter negative", lambda: A.Augment(jitter=(-0.4, 0.4, 0.4, 0.1)), ValueError, r"Augment\.jitter brightness"),
    ("size float", lambda: A.Augment(size=24.0), TypeError, r"Augment\.size .*int.*int\(24\.0\)"),
    ("size 0", lambda: A.Augment(size=0), ValueError, r"Augment\.size"),
    ("std 0", lambda: A.Augment(std=(0.2, 0.2, 0.0)), ValueError, r"Augment\.std"),
    ("mean 1 value", lambda: A.Augment(mean=(0.5,)), ValueError, r"Augment\.mean must be 3 numbers"),
    ("strength 3", lambda: A.simclr_augment(strength=3.0), ValueError, r"jitter hue"),
    ("crop size float", lambda: A.random_resized_crop(floats(), 24.0), TypeError, r"random_resized_crop: size"),
    ("crop scale reversed", lambda: A.random_resized_crop(floats(), 8, scale=(1, 0.2)), ValueError,
     r"random_resized_crop: scale"),
    ("flip p", lambda: A.horizontal_flip(floats(), p=2), ValueError, r"horizontal_flip: p"),
    ("jitter hue kernel", lambda: A.color_jitter(floats(), hue=0.7), ValueError, r"color_jitter: hue"),
    ("jitter brightness kernel", lambda: A.color_jitter(floats(), brightness=-1), ValueError, r"color_jitter: brightness"),
    ("grayscale p", lambda: A.random_grayscale(floats(), p=20), ValueError, r"random_grayscale: p"),
    ("blur sigma kernel", lambda: A.gaussian_blur(floats(), sigma=(0, 0)), ValueError, r"gaussian_blur: sigma"),
    ("blur kernel float", lambda: A.gaussian_blur(floats(), kernel_size=5.0), TypeError, r"gaussian_blur: kernel_size"),
    ("solarize p", lambda: A.random_solarize(floats(), p=1.5), ValueError, r"random_solarize: p"),
    ("multicrop n_local float", lambda: A.MultiCrop(A.Augment(), 2, A.Augment(size=8), n_local=2.0), TypeError,
     r"MultiCrop: n_local"),
    ("warm-up float", lambda: schedules.cosine_schedule(0.1, 0.0, 100, warmup_steps=10.0), TypeError,
     r"cosine_schedule: warmup_steps .*int\(10\.0\)"),
    ("total steps float", lambda: schedules.cosine_schedule(0.1, 0.0, 100.0), TypeError, r"cosine_schedule: total_steps"),
    ("schedule base nan", lambda: schedules.cosine_schedule(float("nan"), 0.0, 10), ValueError, r"cosine_schedule: base"),
    ("queue length float", lambda: memory.Queue(4096.0), TypeError, r"Queue size .*int"),
    # ---- 5. environment switches: see test_env_flags_* below
    # ---- 8. memory structures
    ("bank size 0", lambda: memory.MemoryBank(0), ValueError, r"MemoryBank size .*len\(train\)"),
    ("bank size float", lambda: memory.MemoryBank(100.0), TypeError, r"MemoryBank size"),
    ("bank idx -1", lambda: bank_update(torch.tensor([0, -1])), IndexError, r"idx must be training indices in \[0, 4\)"),
    ("bank idx 4", lambda: bank_update(torch.tensor([4])), IndexError, r"in \[0, 4\).*from 4 to 4"),
    ("bank idx float", lambda: bank_update(torch.tensor([0.0])), TypeError, r"idx must be integer row indices"),
    ("bank NaN features", lambda: bank_update(torch.tensor([1]), torch.full((1, 3), float("nan"))), ValueError,
     r"features contain NaN.*learning rate"),
    ("queue 0", lambda: memory.Queue(0), ValueError, r"queue size must be >= 1"),
    ("queue un-normalised", lambda: memory.Queue(8, dim=8).enqueue_(3 * unit()), ValueError,
     r"unit vectors.*F\.normalize\(k, dim=1\)"),
    ("queue NaN keys", lambda: memory.Queue(8, dim=8).enqueue_(torch.full((2, 8), float("nan"))), ValueError,
     r"keys contain NaN"),
    ("ema swapped", lambda: momentum.ema_update_(*frozen_pair(), 0.99), ValueError,
     r"swapped.*copy_frozen\(online\)"),
    # ---- 11. smaller ones
    ("dino concatenated", lambda: losses.dino_loss(torch.cat([Z, Z]), torch.cat([Z, Z]), torch.zeros(8)), TypeError,
     r"lists of per-crop outputs.*chunk"),
    ("head size", lambda: models.mlp(32, 16)(torch.randn(2, 16)), ValueError,
     r"features of size 32.*backbone\.feature_dim"),
    ("head after backbone", lambda: nn.Sequential(models.SmallCNN(width=4), models.mlp(64, 8))(floats()), ValueError,
     r"backbone\.feature_dim"),
    ("DINO head size", lambda: models.DINOHead(32, 8, hidden=16, bottleneck=8)(torch.randn(2, 16)), ValueError,
     r"DINOHead\(in_dim=32\).*backbone\.feature_dim"),
    ("mlp float size", lambda: models.mlp(32, 16.0), ValueError, r"mlp sizes must be positive ints"),
    ("SmallCNN width 0", lambda: models.SmallCNN(width=0), ValueError, r"SmallCNN width must be an int >= 1"),
    ("ResNet18 width float", lambda: models.ResNet18(width=32.0), TypeError, r"ResNet18 width .*int\(32\.0\)"),
    ("ViT patch float", lambda: models.ViT(32, 4.0), TypeError, r"ViT patch_size"),
    ("DINOHead K 0", lambda: models.DINOHead(8, 0), ValueError, r"DINOHead out_dim"),
    ("split BN groups float", lambda: models.split_batchnorm_(models.SmallCNN(width=4), 2.0), TypeError,
     r"split_batchnorm_ groups"),
    ("DINOCenter dim float", lambda: losses.DINOCenter(8.0), TypeError, r"DINOCenter dim"),
    ("sinkhorn iters float", lambda: losses.sinkhorn(torch.randn(4, 3), n_iters=2.5), TypeError, r"sinkhorn: n_iters"),
    ("bank sample float", lambda: memory.MemoryBank(10, 4).sample(5.0), TypeError, r"MemoryBank\.sample: m"),
    ("augment float images", lambda: A.Augment()(floats()), TypeError, r"uint8 images.*dataset\.images.*normalize"),
    ("normalize 1 channel", lambda: A.normalize(torch.rand(2, 1, 8, 8)), ValueError,
     r"one mean and one std per channel.*1-channel"),
    # ---- 7. settings that cannot be hashed stably
    ("hash lambda", lambda: checkpoint.hparams_hash({"lr": 0.1, "act": lambda x: x}), TypeError,
     r"hparams\['act'\] is <function.*every kernel restart"),
    ("hash function", lambda: checkpoint.hparams_hash({"act": F.relu}), TypeError, r"hparams\['act'\].*name"),
    ("hash set", lambda: checkpoint.hparams_hash({"sizes": {1, 2}}), TypeError, r"hparams\['sizes'\] is a set.*sorted tuple"),
    ("hash nested set", lambda: checkpoint.hparams_hash({"vit": {"dims": frozenset("ab")}}), TypeError,
     r"hparams\['vit'\]\['dims'\] is a set"),
    ("hash object", lambda: checkpoint.hparams_hash({"opt": object()}), TypeError, r"hparams\['opt'\].*0x"),
    ("hash key", lambda: checkpoint.hparams_hash({("a", 1): 2}), TypeError, r"key \('a', 1\).*must be str"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_field_changed_after_construction_is_checked_at_the_call():
    aug = A.simclr_augment(16)
    aug.gray_p = 20
    with pytest.raises(ValueError, match=r"Augment\.gray_p"):
        aug(uint8_images())


# ---- 5. environment switches

def gpu_dry() -> profiles.Profile:
    """The gpu recipe on the CPU, built directly: get_profile("gpu-dry") would switch on the
    loader's dry-run caps for every later test."""
    return profiles.Profile("gpu-dry", torch.device("cpu"), n_train=profiles.DRY_RUN_TRAIN, n_test=profiles.DRY_RUN_TEST,
                            recipe="gpu")


ENV_CASES = [("SSL_AMP", "maybe"), ("SSL_AMP", "2"), ("SSL_COMPILE", "yes please"), ("SSL_COMPILE", "-1")]


@pytest.mark.parametrize("name, value", ENV_CASES)
def test_env_flags_reject_other_values(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    profile = gpu_dry()
    with pytest.raises(ValueError, match=rf"{name}='{value}' is not an on/off value; use {name}=1 or {name}=0"):
        profile.autocast() if name == "SSL_AMP" else profile.prepare(nn.Linear(2, 2))


@pytest.mark.parametrize("value, on", [("0", False), ("false", False), ("OFF", False), ("No", False),
                                       ("1", True), ("true", True), ("On", True), ("YES", True), ("", True)])
def test_ssl_amp_accepts_the_usual_spellings(monkeypatch, value, on):
    monkeypatch.setenv("SSL_AMP", value)            # SSL_AMP=false used to leave bf16 on
    monkeypatch.setattr(profiles, "cpu_has_native_bf16", lambda: True)   # unset: on where bf16 is native
    assert gpu_dry().mixed_precision is on


def test_ssl_compile_off_spellings_do_not_compile(monkeypatch):
    monkeypatch.setenv("SSL_COMPILE", "false")
    model = gpu_dry().prepare(nn.Linear(2, 2))
    assert type(model.forward).__name__ == "method"  # not wrapped by torch.compile


# ---- 9-10. files and folders

def png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_half_copied_png_names_the_file(tmp_path):
    good = png(tmp_path / "cat" / "a.png", rgb(0))
    (tmp_path / "cat" / "b.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"could not read the image .*cat/b\.png.*delete or replace"):
        data.load_image_folder(tmp_path)


def test_ssl_data_dir_pointing_at_a_file(tmp_path, monkeypatch):
    (tmp_path / "data.tar").write_bytes(b"not a folder")
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "data.tar"))
    with pytest.raises(NotADirectoryError, match=r"SSL_DATA_DIR=.*data\.tar is a file, not a folder"):
        data.load_cifar10("train")
    monkeypatch.delenv("SSL_DATA_DIR")
    with pytest.raises(NotADirectoryError, match=r"data root .* is a file.*pass root= a folder"):
        data.load_cifar10("train", root=tmp_path / "data.tar")


def test_ssl_checkpoint_dir_pointing_at_a_file(tmp_path, monkeypatch):
    (tmp_path / "ckpt").write_bytes(b"a file")
    monkeypatch.setenv("SSL_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    with pytest.raises(NotADirectoryError, match=r"SSL_CHECKPOINT_DIR=.*ckpt is a file, not a folder"):
        checkpoint.checkpoint_path("06_simclr_v1", "smoke", {"lr": 0.1})


def test_own_images_16_bit_png_gif_and_hidden_files_load(tmp_path):
    from PIL import Image
    png(tmp_path / "a" / "plain.png", rgb(0))
    grey16 = (np.random.default_rng(1).random((8, 8)) * 65535).astype(np.uint16)
    png(tmp_path / "a" / "deep.png", grey16)                                       # 16-bit PNG
    frames = [Image.fromarray(rgb(s)) for s in (2, 3, 4)]
    (tmp_path / "b").mkdir()
    frames[0].save(tmp_path / "b" / "anim.gif", save_all=True, append_images=frames[1:])  # animated GIF, 3 frames
    (tmp_path / "b" / "._anim.gif").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    ds = data.load_image_folder(tmp_path)
    assert len(ds) == 3 and ds.images.shape == (3, 3, 8, 8) and ds.images.dtype == torch.uint8
    deep = ds.images[0]                                                            # sorted: deep.png first
    torch.testing.assert_close(deep[0].float(), torch.from_numpy(grey16 / 257.0).round().float())
    assert torch.equal(deep[0], deep[2])                                           # grey: 3 equal channels
    first = torch.from_numpy(np.array(frames[0].convert("RGB"))).permute(2, 0, 1)  # GIF: its first frame
    assert (ds.images[2].int() - first.int()).abs().max() <= 8                     # (GIF palette quantisation)


def test_stale_decoded_cache_is_decoded_again(tmp_path):
    for c in data.CIFAR10_CLASSES:
        png(tmp_path / "cifar10" / "test" / c / "0.png", rgb(len(c), 32))
    assert len(data.load_cifar10("test", root=tmp_path)) == 10                      # writes the cache
    assert data.load_cifar10("test", root=tmp_path).source.startswith("decoded cache")
    png(tmp_path / "cifar10" / "test" / "cat" / "1.png", rgb(99, 32))               # a reader adds an image
    with pytest.warns(UserWarning, match="now has a different number; decoding it again"):
        fresh = data.load_cifar10("test", root=tmp_path)
    assert len(fresh) == 11
    assert len(data.load_cifar10("test", root=tmp_path)) == 11                      # the cache was rewritten


# ---- 11. mixed dtypes into info_nce are promoted, not an einsum error

def test_info_nce_promotes_bf16_keys():
    q, k, n = unit(4, 8, 0), unit(4, 8, 1), unit(6, 8, 2)
    for negatives in (None, n):
        mixed = losses.info_nce(q, k.bfloat16(), None if negatives is None else negatives.bfloat16())
        expected = losses.info_nce(q, k.bfloat16().float(), None if negatives is None else negatives.bfloat16().float())
        torch.testing.assert_close(mixed, expected)


def test_check_finite_returns_the_float_of_a_finite_loss():
    assert losses.check_finite(torch.tensor(1.25), step=0, lr=0.1) == 1.25


def test_queue_accepts_bf16_unit_keys_and_other_vectors_when_asked():
    q = memory.Queue(8, dim=8)
    q.enqueue_(unit().bfloat16())                              # autocast keys: norms within bf16 rounding
    memory.Queue(8, dim=8, unit_keys=False).enqueue_(3 * unit())


# ---- ways to lose work

def make_run(lr=0.1, t_max=10, seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max)
    return model, optimizer, scheduler


def save_after_steps(path, steps=3, settings=None, **run):
    model, optimizer, scheduler = make_run(**run)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    extra = {} if settings is None else {"settings": settings}
    checkpoint.save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, **extra)


@pytest.mark.parametrize("changed, match", [(dict(t_max=30), r"T_max 10 there, 30 now"),
                                            (dict(lr=0.5), r"base_lrs \[0\.1\] there, \[0\.5\] now")])
def test_resume_with_another_schedule_is_refused(tmp_path, changed, match):
    # ddp_simclr.py --epochs 3 after a 1-epoch run: the lr used to climb from 0 again (issue 24, item 6)
    path = tmp_path / "run.pt"
    save_after_steps(path)
    model, optimizer, scheduler = make_run(**changed)
    before = model.weight.clone()
    with pytest.raises(ValueError, match=rf"another schedule \(scheduler: {match}\).*Delete the file"):
        checkpoint.resume(path, model=model, optimizer=optimizer, scheduler=scheduler)
    assert torch.equal(model.weight, before)                 # refused before anything was loaded
    model, optimizer, scheduler = make_run()                 # the same settings still resume
    assert checkpoint.resume(path, model=model, optimizer=optimizer, scheduler=scheduler)["epoch"] == 1
    assert scheduler.last_epoch == 3


def test_resume_with_other_stored_settings_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    save_after_steps(path, settings={"epochs": 1, "tau": 0.2, "crop": (24, 24)})
    model, optimizer, scheduler = make_run()
    with pytest.raises(ValueError, match=r"other settings \(tau: 0\.2 there, 0\.5 now\).*Delete the file"):
        checkpoint.resume(path, settings={"epochs": 1.0, "tau": 0.5, "crop": [24, 24]},
                          model=model, optimizer=optimizer, scheduler=scheduler)
    state = checkpoint.resume(path, settings={"epochs": 1.0, "tau": 0.2, "crop": [24, 24]},  # 1.0 == 1, list == tuple
                              model=model, optimizer=optimizer, scheduler=scheduler)
    assert state["epoch"] == 1 and state["settings"] == {"crop": [24, 24], "epochs": 1, "tau": 0.2}


def test_settings_hash_is_stable_across_processes_and_numbers_are_normalised():
    hp = {"epochs": 200, "lr": 0.06, "crop_scale": (0.2, 1), "backbone": "SmallCNN", "vit": {"depth": 6},
          "memory": None, "blur": False}
    assert checkpoint.hparams_hash(hp) == checkpoint.hparams_hash({**hp, "epochs": 200.0, "crop_scale": [0.2, 1.0]})
    assert checkpoint.hparams_hash(hp) == checkpoint.hparams_hash({**hp, "epochs": np.int64(200)})
    legacy = hashlib.sha256(json.dumps(hp, sort_keys=True, default=str).encode()).hexdigest()[:8]
    assert checkpoint.hparams_hash(hp) == legacy      # ints, strs, tuples: the same names as before
    code = ("from ssl_core.checkpoint import hparams_hash; "
            f"print(hparams_hash({hp!r}))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == checkpoint.hparams_hash(hp)


def test_checkpoints_named_by_the_old_hash_are_still_found(tmp_path):
    hp = {"epochs": 2, "temperature": 1.0}           # 1.0 hashed differently before the normalisation
    new = checkpoint.checkpoint_path("02_cpc", "smoke", hp, root=tmp_path)
    old_name = f"02_cpc-smoke-{checkpoint._legacy_hash(hp)}.pt"
    assert new.name != old_name
    checkpoint.save_checkpoint(tmp_path / old_name, epoch=2)
    assert checkpoint.checkpoint_path("02_cpc", "smoke", hp, root=tmp_path).name == old_name


def test_unwritable_checkpoint_folder_fails_at_the_start(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_bytes(b"x")
    model, optimizer, scheduler = make_run()
    with pytest.raises(PermissionError, match=r"cannot write checkpoints in .*SSL_CHECKPOINT_DIR"):
        checkpoint.resume(tmp_path / "a_file" / "run.pt", model=model)           # the folder cannot be made

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(checkpoint.tempfile, "TemporaryFile", refuse)        # a read-only folder (we run as root)
    with pytest.raises(PermissionError, match=r"cannot write checkpoints in .*lost at its first save.*SSL_CHECKPOINT_DIR"):
        checkpoint.resume(tmp_path / "run.pt", model=model, optimizer=optimizer, scheduler=scheduler)
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"could not write the checkpoint .*SSL_CHECKPOINT_DIR"):
        checkpoint.save_checkpoint(tmp_path / "run.pt", epoch=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_checkpoint_folder_fails_at_the_start(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="SSL_CHECKPOINT_DIR"):
            checkpoint.resume(folder / "run.pt")
    finally:
        folder.chmod(0o700)


def test_stale_temporary_files_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "run.pt"
    stale = tmp_path / ".run.pt.abc123.tmp"                  # what kill -9 during a save leaves
    stale.write_bytes(b"\0" * 1000)
    old = time.time() - checkpoint.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    live = tmp_path / ".run.pt.def456.tmp"                   # another save, still being written
    live.write_bytes(b"\0" * 10)
    other = tmp_path / ".results.json.x.tmp"                 # another file's: not ours to remove
    other.write_bytes(b"")
    os.utime(other, (old, old))
    checkpoint.save_checkpoint(path, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".results.json.x.tmp", ".run.pt.def456.tmp", "run.pt"])


def test_value_checks_run_once_on_a_gpu_and_every_call_on_the_cpu():
    """MemoryBank/Queue read values back only where that costs no GPU sync per step."""
    from types import SimpleNamespace
    on = lambda kind: SimpleNamespace(device=torch.device(kind))  # noqa: E731 (a stand-in with a device)
    gpu_queue, cpu_queue = memory.Queue(4, dim=2), memory.Queue(4, dim=2)
    assert [memory._check_now(gpu_queue, on("cuda")) for _ in range(3)] == [True, False, False]
    assert [memory._check_now(cpu_queue, on("cpu")) for _ in range(3)] == [True, True, True]
