import math

import pytest
import torch
import torch.nn.functional as F
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


def test_mlp_without_bn_is_fc_relu_fc():
    # MoCo v2's head (moco/builder.py): Linear -> ReLU -> Linear, biases kept, no batch norm
    head = mlp(16, 32, 8, bn=False)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert head[0].bias is not None and head[2].bias is not None
    x = torch.randn(4, 16)
    expected = F.linear(F.linear(x, head[0].weight, head[0].bias).clamp(min=0), head[2].weight, head[2].bias)
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("backbone", [SmallCNN, ResNet18])
@pytest.mark.parametrize("in_channels", [1, 2])
def test_backbones_take_in_channels(backbone, in_channels):
    # notebook 04 (CMC): one encoder reads the L channel (1), the other the ab channels (2)
    net = backbone(width=4, in_channels=in_channels)
    assert net(torch.randn(2, in_channels, 16, 16)).shape == (2, net.feature_dim)
    with pytest.raises(RuntimeError, match="channels"):
        net(torch.randn(2, 3, 16, 16))


# ---------------------------------------------------------------- CPC context network

from ssl_core.models import MaskedConvContext  # noqa: E402


@pytest.mark.parametrize("kernel_size, layers", [((2, 3), 3), ((3, 3), 2), ((1, 1), 1)])
def test_context_of_row_r_never_depends_on_rows_below(kernel_size, layers):
    """Causal-mask check by perturbation: change rows > r, the context of rows <= r stays put."""
    torch.manual_seed(0)
    net = MaskedConvContext(dim=6, hidden=8, layers=layers, kernel_size=kernel_size)
    z = torch.randn(2, 6, 7, 7)                                        # (N, D, R, S)
    c = net(z)
    assert c.shape == (2, 8, 7, 7)
    for r in range(7):
        z2 = z.clone()
        z2[:, :, r + 1:] = torch.randn_like(z2[:, :, r + 1:]) * 10
        c2 = net(z2)
        torch.testing.assert_close(c2[:, :, :r + 1], c[:, :, :r + 1])
        if r < 6:                                                      # and row r+1 does change
            assert not torch.allclose(c2[:, :, r + 1], c[:, :, r + 1])


def test_context_receptive_field_reaches_the_stated_rows():
    """Row r sees rows r - layers*(kh-1) .. r: perturbing row r - 3 moves row r, row r - 4 does not."""
    torch.manual_seed(0)
    net = MaskedConvContext(dim=4, layers=3, kernel_size=(2, 3))
    z = torch.randn(1, 4, 7, 7)
    grad = torch.autograd.functional.jacobian(lambda t: net(t)[0, :, 6].sum(), z)   # (1, 4, 7, 7)
    rows_seen = grad.abs().sum(dim=(0, 1, 3)) > 0                                  # (7,)
    assert rows_seen.tolist() == [False, False, False, True, True, True, True]


def test_context_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="odd kw"):
        MaskedConvContext(dim=4, kernel_size=(2, 2))
    with pytest.raises(ValueError, match=r"\(N, D, R, S\)"):
        MaskedConvContext(dim=4)(torch.randn(4, 7, 7))


# ---------------------------------------------------------------- MoCo's split (per-GPU) batch norm

import copy  # noqa: E402

from ssl_core.models import SplitBatchNorm, split_batchnorm_  # noqa: E402


def naive_per_group_bn(x, groups, weight, bias, eps=1e-5):
    """Each chunk of N/G samples normalised with its own mean and biased variance (train mode)."""
    out = []
    for chunk in x.chunk(groups):                                        # (N/G, C, H, W)
        mean = chunk.mean(dim=(0, 2, 3), keepdim=True)
        var = chunk.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        out.append((chunk - mean) / (var + eps).sqrt() * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
    return torch.cat(out)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_split_batchnorm_matches_per_group_loop(groups):
    torch.manual_seed(0)
    bn = SplitBatchNorm(3, groups=groups)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.normal_()
    x = torch.randn(8, 3, 4, 5) * 3 + torch.arange(8.0).view(8, 1, 1, 1)   # groups differ in mean
    torch.testing.assert_close(bn(x), naive_per_group_bn(x, groups, bn.weight, bn.bias))
    # running statistics: momentum 0.1 towards the mean over groups of each group's (unbiased) stats
    means = torch.stack([c.mean(dim=(0, 2, 3)) for c in x.chunk(groups)]).mean(0)
    vars_ = torch.stack([c.var(dim=(0, 2, 3), unbiased=True) for c in x.chunk(groups)]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * means)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * vars_)


def test_split_batchnorm_groups_are_independent():
    torch.manual_seed(0)
    bn = SplitBatchNorm(2, groups=4)
    x = torch.randn(8, 2, 3, 3)
    x2 = x.clone()
    x2[2:] = torch.randn(6, 2, 3, 3) * 10 + 5                 # change every group but the first
    torch.testing.assert_close(bn(x2)[:2], bn(x)[:2])           # group 0's output does not move
    assert not torch.allclose(bn(x2)[2:4], bn(x)[2:4])


def test_split_batchnorm_one_group_equals_batchnorm_and_eval_uses_running_stats():
    torch.manual_seed(0)
    plain, split = nn.BatchNorm2d(3), SplitBatchNorm(3, groups=1)
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    torch.testing.assert_close(split(x), plain(x))
    torch.testing.assert_close(split.running_var, plain.running_var)
    grouped = SplitBatchNorm(3, groups=3)
    grouped.load_state_dict(plain.state_dict())
    grouped.eval(), plain.eval()
    torch.testing.assert_close(grouped(x), plain(x))           # eval: running statistics, no groups


def test_split_batchnorm_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="groups must be >= 1"):
        SplitBatchNorm(3, groups=0)
    with pytest.raises(ValueError, match="does not split into 4 groups"):
        SplitBatchNorm(3, groups=4)(torch.randn(6, 3, 2, 2))
    with pytest.raises(ValueError, match="groups must be >= 1"):
        split_batchnorm_(SmallCNN(width=4), 0)


def test_split_batchnorm_converts_a_network_and_keeps_its_state():
    torch.manual_seed(0)
    net = SmallCNN(width=4)
    net.train()(torch.randn(8, 3, 16, 16))                     # give the running stats some values
    reference = copy.deepcopy(net)                             # plain batch norm
    x = torch.randn(8, 3, 16, 16)
    split_batchnorm_(net, 4)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, SplitBatchNorm) and m.groups == 4 for m in bns)
    torch.testing.assert_close(net.eval()(x), reference.eval()(x))   # same parameters, running stats
    grouped = net.train()(x)
    for g in range(4):                                         # = the plain network on each chunk alone
        torch.testing.assert_close(grouped[2 * g:2 * g + 2], reference.train()(x[2 * g:2 * g + 2]))
    split_batchnorm_(net, 1)
    torch.testing.assert_close(net.train()(x), reference.train()(x))


def test_split_batchnorm_keeps_a_frozen_encoder_frozen():
    from ssl_core.momentum import copy_frozen
    online = SmallCNN(width=4)
    key = split_batchnorm_(copy_frozen(online), 4)             # MoCo: the key encoder is made frozen, then split
    assert sum(p.requires_grad for p in key.parameters()) == 0
    query = split_batchnorm_(online, 4)                        # the query encoder stays trainable
    assert all(p.requires_grad for p in query.parameters())


# ---------------------------------------------------------------- ViT and the DINO head (12-13)

from ssl_core.models import ViT, Attention, DINOHead  # noqa: E402


def test_vit_shapes_and_cls_feature():
    torch.manual_seed(0)
    vit = ViT(image_size=16, patch_size=4, dim=32, depth=2, heads=4)
    x = torch.randn(3, 3, 16, 16)
    assert vit.feature_dim == 32 and vit(x).shape == (3, 32)
    assert vit.tokens(x).shape == (3, 1 + 16, 32)                  # [CLS] + (16/4)^2 patches
    assert vit.last_attention(x).shape == (3, 4, 16)               # (N, heads, patches)


def test_attention_rows_sum_to_one_and_match_sdpa():
    torch.manual_seed(0)
    attn = Attention(dim=24, heads=3)
    x = torch.randn(2, 7, 24)
    out, a = attn(x)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, 7))
    q, k, v = attn.qkv(x).reshape(2, 7, 3, 3, 8).permute(2, 0, 3, 1, 4)
    reference = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, 24)
    torch.testing.assert_close(out, attn.proj(reference))
    loop = torch.zeros(2, 3, 7, 7)                                   # softmax(q k^T / sqrt(d)), entry by entry
    for n in range(2):
        for h in range(3):
            for i in range(7):
                logits = torch.stack([q[n, h, i] @ k[n, h, j] / 8 ** 0.5 for j in range(7)])
                loop[n, h, i] = logits.exp() / logits.exp().sum()
    torch.testing.assert_close(a, loop)


def test_vit_last_attention_is_cls_row_of_last_block():
    torch.manual_seed(0)
    vit = ViT(image_size=8, patch_size=4, dim=16, depth=2, heads=2).eval()
    x = torch.randn(2, 3, 8, 8)
    h = vit.tokens(x)
    h, _ = vit.blocks[0](h)
    _, a = vit.blocks[1](h)
    torch.testing.assert_close(vit.last_attention(x), a[:, :, 0, 1:])
    assert (vit.last_attention(x).sum(-1) < 1).all()                # the rest of the mass is on [CLS] itself


def test_vit_frozen_patch_embedding_gets_no_gradient():
    torch.manual_seed(0)
    vit = ViT(image_size=8, patch_size=4, dim=16, depth=1, heads=2).freeze_patch_embed_()
    vit(torch.randn(4, 3, 8, 8)).pow(2).sum().backward()
    assert all(p.grad is None for p in vit.patch_embed.parameters())
    assert vit.pos_embed.grad is not None and vit.blocks[0].attn.qkv.weight.grad is not None


def test_vit_position_embedding_interpolates_for_other_sizes():
    torch.manual_seed(0)
    vit = ViT(image_size=16, patch_size=4, dim=16, depth=1, heads=2)
    assert vit(torch.randn(2, 3, 8, 8)).shape == (2, 16)            # a local crop: 2x2 patches
    torch.testing.assert_close(vit._position_embedding(4, 4), vit.pos_embed)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit(torch.randn(1, 3, 10, 10))
    with pytest.raises(ValueError, match="divisible"):
        ViT(dim=30, heads=4)


def test_dino_head_outputs_cosines_and_ignores_feature_scale():
    torch.manual_seed(0)
    head = DINOHead(in_dim=16, out_dim=10, hidden=32, bottleneck=8, n_layers=3)
    x = torch.randn(5, 16)
    y = head(x)
    assert y.shape == (5, 10) and y.abs().max() <= 1 + 1e-6
    z = F.normalize(head.mlp(x), dim=1)
    loop = torch.stack([torch.stack([z[n] @ head.last[k] / head.last[k].norm() for k in range(10)]) for n in range(5)])
    torch.testing.assert_close(y, loop)
    assert len([m for m in head.mlp if isinstance(m, nn.Linear)]) == 3


def test_dino_head_use_bn_normalises_each_hidden_layer_over_the_batch():
    torch.manual_seed(0)
    head = DINOHead(in_dim=16, out_dim=10, hidden=32, bottleneck=8, n_layers=3, use_bn=True)
    lin = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert len(lin) == 3 and len([m for m in head.mlp if isinstance(m, nn.BatchNorm1d)]) == 2
    x = torch.randn(6, 16)
    h = x
    for layer in lin[:-1]:                                           # Linear -> BN (batch statistics) -> GELU
        a = layer(h)
        a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5)
        h = F.gelu(a)
    z = F.normalize(lin[-1](h), dim=1)
    torch.testing.assert_close(head(x), z @ F.normalize(head.last, dim=1).T)


def test_vit_conv_stem_matches_written_out_layers_and_grid():
    torch.manual_seed(0)
    vit = ViT(image_size=16, patch_size=4, dim=16, depth=1, heads=2, stem="conv").eval()
    stem = vit.patch_embed
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs] == \
        [(3, 8, 2, 3), (8, 16, 2, 3), (16, 16, 1, 1)]              # log2(4) = 2 stride-2 3x3 convs, then 1x1
    x = torch.randn(2, 3, 16, 16)
    h = x
    for conv, bn in zip(convs[:2], [m for m in stem if isinstance(m, nn.BatchNorm2d)]):   # conv, BN (eval), ReLU
        h = F.conv2d(h, conv.weight, None, stride=2, padding=1)
        h = (h - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
        h = torch.relu(h * bn.weight[:, None, None] + bn.bias[:, None, None])
    h = F.conv2d(h, convs[2].weight, convs[2].bias)
    tokens = h.flatten(2).transpose(1, 2)                           # (2, 16 = 4x4 grid, dim)
    torch.testing.assert_close(vit.tokens(x)[:, 1:] - vit.pos_embed[:, 1:], tokens)
    with pytest.raises(ValueError, match="freezes the one-layer patch projection"):
        vit.freeze_patch_embed_()
    with pytest.raises(ValueError, match="power of 2"):
        ViT(image_size=12, patch_size=6, dim=16, depth=1, heads=2, stem="conv")
    with pytest.raises(ValueError, match="stem must be"):
        ViT(image_size=16, patch_size=4, dim=16, depth=1, heads=2, stem="convolution")


def test_vit_mocov3_init_sincos_positions_and_bounds():
    from ssl_core.models import sincos_position_embedding
    torch.manual_seed(0)
    dim, grid = 16, 3
    vit = ViT(image_size=12, patch_size=4, dim=dim, depth=2, heads=2, init="mocov3")
    pe = torch.zeros(grid * grid, dim)                              # the formula, entry by entry
    for t in range(grid * grid):
        y, x = divmod(t, grid)                                      # token t: row y, column x
        for j in range(dim // 4):
            w = 10000.0 ** (-j / (dim // 4))
            pe[t, j], pe[t, dim // 4 + j] = math.sin(x * w), math.cos(x * w)
            pe[t, dim // 2 + j], pe[t, 3 * dim // 4 + j] = math.sin(y * w), math.cos(y * w)
    torch.testing.assert_close(sincos_position_embedding(grid, dim)[0], pe)
    torch.testing.assert_close(vit.pos_embed[0, 1:], pe)
    assert vit.pos_embed[0, 0].abs().max() == 0 and not vit.pos_embed.requires_grad     # fixed, [CLS] slot zero
    assert vit.cls_token.abs().max() < 1e-5                         # N(0, 1e-6^2)
    qkv = vit.blocks[0].attn.qkv.weight                             # (3 dim, dim): bound of a (dim, dim) matrix
    assert qkv.abs().max() <= math.sqrt(6 / (dim + dim)) and qkv.abs().max() > 0.9 * math.sqrt(6 / (dim + dim))
    fc = vit.blocks[0].mlp[0].weight                                # Xavier-uniform (4 dim, dim)
    assert fc.abs().max() <= math.sqrt(6 / (5 * dim))
    pw = vit.patch_embed.weight                                     # Xavier-uniform on (dim, 3 p p)
    assert pw.abs().max() <= math.sqrt(6 / (48 + dim)) and pw.abs().max() > 0.9 * math.sqrt(6 / (48 + dim))
    assert vit.patch_embed.bias.abs().max() == 0
    vit(torch.randn(2, 3, 12, 12)).sum().backward()
    assert vit.pos_embed.grad is None
    with pytest.raises(ValueError, match="divisible\nby 4|divisible by 4"):
        ViT(image_size=8, patch_size=4, dim=6, depth=1, heads=2, init="mocov3")
    with pytest.raises(ValueError, match="init must be"):
        ViT(image_size=8, patch_size=4, dim=8, depth=1, heads=2, init="xavier")
