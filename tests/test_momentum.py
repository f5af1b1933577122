"""copy_frozen and ema_update_ against MoCo's eq. 2 written per parameter."""
import pytest
import torch
from torch import nn

from ssl_core.momentum import copy_frozen, ema_update_


def net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_copy_frozen_is_equal_independent_and_frozen():
    online = net(0)
    target = copy_frozen(online)
    for t, o in zip(target.parameters(), online.parameters()):
        torch.testing.assert_close(t, o)
        assert not t.requires_grad and o.requires_grad
        assert t.data_ptr() != o.data_ptr()


@pytest.mark.parametrize("m", [0.0, 0.9, 0.999, 1.0])
def test_ema_update_matches_equation(m):
    online, target = net(0), copy_frozen(net(1))
    online[1].running_mean.fill_(0.7)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, m)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, m * b + (1 - m) * o.detach())   # theta_k <- m theta_k + (1-m) theta_q
    torch.testing.assert_close(target[1].running_mean, torch.full((3,), 0.7))


def test_ema_update_takes_no_grad_and_checks_input():
    online, target = net(0), copy_frozen(net(1))
    ema_update_(target, online, 0.5)
    assert all(p.grad_fn is None for p in target.parameters())
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ema_update_(target, online, 1.5)
    with pytest.raises(ValueError, match="same architecture"):
        ema_update_(nn.Linear(4, 3), online, 0.9)
