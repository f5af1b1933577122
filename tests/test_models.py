import pytest
import torch
from torch import nn

from ssl_core.models import ResNet18, SmallCNN, mlp


@pytest.mark.parametrize("size", [32, 64])
def test_small_cnn_shapes_and_feature_dim(size):
    net = SmallCNN(width=8)
    assert net(torch.randn(2, 3, size, size)).shape == (2, net.feature_dim) == (2, 32)


def test_small_cnn_stem_halves_resolution():
    assert SmallCNN(width=8).net[0](torch.randn(1, 3, 32, 32)).shape[-2:] == (16, 16)


def test_resnet18_cifar_stem_and_features():
    net = ResNet18()
    assert net.feature_dim == 512
    assert net.net[0][0].stride == (1, 1) and not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    n_params = sum(p.numel() for p in net.parameters())
    assert 11.0e6 < n_params < 11.3e6                 # ResNet-18 without the fc layer: ~11.2M


def test_mlp_structure():
    head = mlp(16, 32, 8)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head(torch.randn(4, 16)).shape == (4, 8)
    assert isinstance(mlp(16, 8, last_bn=True)[-1], nn.BatchNorm1d)
    assert [type(m) for m in mlp(16, 8)] == [nn.Linear]
    with pytest.raises(ValueError, match="at least an input and an output"):
        mlp(16)
