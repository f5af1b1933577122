"""MemoryBank: the proximal update from InstDisc Sec. 3.3, invariants, checkpointing."""
import pytest
import torch
import torch.nn.functional as F

from ssl_core.memory import MemoryBank


def test_rows_start_unit_norm_and_seeded():
    bank = MemoryBank(100, 16, seed=3)
    torch.testing.assert_close(bank.memory.norm(dim=1), torch.ones(100))
    torch.testing.assert_close(bank.memory, MemoryBank(100, 16, seed=3).memory)
    assert len(bank) == 100


def test_update_is_normalised_momentum_mix_of_touched_rows_only():
    bank = MemoryBank(10, 4, momentum=0.5)
    before = bank.memory.clone()
    idx = torch.tensor([2, 7])
    f = F.normalize(torch.randn(2, 4), dim=1)
    bank.update_(idx, f)
    for row, fi in zip(idx.tolist(), f):
        mixed = 0.5 * before[row] + 0.5 * fi                    # v <- normalize(m v + (1 - m) f)
        torch.testing.assert_close(bank.memory[row], mixed / mixed.norm())
    untouched = [i for i in range(10) if i not in (2, 7)]
    torch.testing.assert_close(bank.memory[untouched], before[untouched])
    torch.testing.assert_close(bank.memory.norm(dim=1), torch.ones(10))


def test_momentum_zero_copies_features_and_update_takes_no_grad():
    bank = MemoryBank(5, 3, momentum=0.0)
    f = F.normalize(torch.randn(2, 3), dim=1).requires_grad_()
    bank.update_(torch.tensor([0, 4]), f)
    torch.testing.assert_close(bank.memory[[0, 4]], f.detach())
    assert not bank.memory.requires_grad


def test_sample_draws_rows_of_the_bank():
    bank = MemoryBank(50, 8)
    g = torch.Generator().manual_seed(0)
    neg = bank.sample(32, generator=g)
    assert neg.shape == (32, 8)
    hits = (neg @ bank.memory.T - 1).abs() < 1e-5                # every sample equals some row
    assert hits.any(dim=1).all()
    torch.testing.assert_close(neg, bank.sample(32, generator=torch.Generator().manual_seed(0)))


def test_bank_is_a_buffer_in_state_dict():
    bank = MemoryBank(6, 4, seed=0)
    other = MemoryBank(6, 4, seed=1)
    other.load_state_dict(bank.state_dict())
    torch.testing.assert_close(other.memory, bank.memory)


def test_errors():
    with pytest.raises(ValueError, match="momentum"):
        MemoryBank(5, 3, momentum=1.0)
    with pytest.raises(ValueError, match=r"features must be \(N, 3\)"):
        MemoryBank(5, 3).update_(torch.tensor([0, 1]), torch.zeros(2, 4))


# --- Queue (MoCo's dictionary) -----------------------------------------------------------------
from ssl_core.memory import Queue  # noqa: E402


def test_queue_is_fifo_ring_buffer():
    q = Queue(size=5, dim=2, seed=1, unit_keys=False)  # raw values make the order visible
    torch.testing.assert_close(q.keys.norm(dim=1), torch.ones(5))
    naive = [row.clone() for row in q.keys]          # a Python list: dequeue from the front
    for step in range(4):
        batch = torch.full((2, 2), float(step + 1)) + torch.arange(2.0).unsqueeze(1)
        q.enqueue_(batch)
        naive = naive[2:] + [batch[0], batch[1]]     # drop the two oldest, append the new ones
        # the ring buffer, read from the write pointer on, is the list from oldest to newest
        ring = torch.roll(q.keys, -int(q.ptr), dims=0)
        torch.testing.assert_close(ring, torch.stack(naive))
    assert int(q.ptr) == 8 % 5


def test_queue_enqueue_is_detached_and_checked():
    q = Queue(size=4, dim=3)
    k = torch.nn.functional.normalize(torch.randn(2, 3), dim=1).requires_grad_()
    q.enqueue_(k)
    assert not q.keys.requires_grad
    with pytest.raises(ValueError, match=r"must be \(N, 3\)"):
        q.enqueue_(torch.randn(2, 4))
    with pytest.raises(ValueError, match="does not fit a queue of 4"):
        q.enqueue_(torch.randn(5, 3))
    with pytest.raises(ValueError, match="size must be >= 1"):
        Queue(size=0)


def test_queue_state_dict_round_trip():
    q = Queue(size=6, dim=2)
    q.enqueue_(torch.full((4, 2), 0.5 ** 0.5))
    r = Queue(size=6, dim=2, seed=5)
    r.load_state_dict(q.state_dict())
    torch.testing.assert_close(r.keys, q.keys)
    assert int(r.ptr) == 4


def test_bank_and_queue_take_bf16_features_and_stay_float32():
    """Under the gpu recipe's bf16 autocast, features and keys arrive in bfloat16 (a gpu-only bug
    found by the gpu-dry run); the stored rows stay float32."""
    from ssl_core.memory import MemoryBank, Queue

    queue = Queue(size=8, dim=4)
    keys = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    queue.enqueue_(keys.to(torch.bfloat16))
    assert queue.keys.dtype == torch.float32
    torch.testing.assert_close(queue.keys[:3], keys.to(torch.bfloat16).float())
    bank = MemoryBank(size=6, dim=4, momentum=0.5)
    bank.update_(torch.tensor([0, 2]), keys[:2].to(torch.bfloat16))
    assert bank.memory.dtype == torch.float32
    torch.testing.assert_close(bank.memory.norm(dim=1), torch.ones(6))
