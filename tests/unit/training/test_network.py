"""UNet bottleneck access and image-size checks (bundle/training/network.py)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from bundle.training.network import (
    BottleneckHook,
    check_image_size,
    unet_bottom,
    unet_total_stride,
    unwrap,
)


def _unet(channels=(4, 8, 16), strides=(2, 2)):
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=channels, strides=strides, num_res_units=1)


def test_hook_captures_bottleneck_with_gradient():
    net = _unet()
    hook = BottleneckHook(net)
    x = torch.rand(3, 1, 32, 32)
    out = net(x)
    feats = hook.pop()
    assert out.shape == (3, 1, 32, 32)
    # two stride-2 levels: 32 / 4 = 8; the bottom block keeps the deepest channel count
    assert feats.shape == (3, 16, 8, 8)
    assert feats.requires_grad
    feats.sum().backward()
    assert all(p.grad is not None for p in unet_bottom(net).parameters())
    with pytest.raises(RuntimeError, match="forward"):
        hook.pop()
    hook.remove()
    net(x)
    assert hook.features is None


def test_bottom_is_found_through_wrappers():
    net = _unet(channels=(4, 8, 16, 32), strides=(2, 2, 2))
    wrapped = torch.nn.DataParallel(net)
    assert unwrap(wrapped) is net
    assert unet_bottom(wrapped) is unet_bottom(net)
    hook = BottleneckHook(wrapped)
    wrapped(torch.rand(2, 1, 32, 32))
    assert hook.pop().shape == (2, 32, 4, 4)


def test_bottom_rejects_other_networks():
    with pytest.raises(TypeError, match="UNet"):
        unet_bottom(torch.nn.Conv2d(1, 1, 3))


def test_image_size_check():
    assert unet_total_stride((2, 2, 2, 2)) == 16
    assert check_image_size(256, (2, 2, 2, 2)) == 256
    assert check_image_size([64, 128], (2, 2)) == [64, 128]
    with pytest.raises(ValueError, match="not divisible by the UNet's total stride 16"):
        check_image_size(200, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="total stride"):
        check_image_size(0, (2, 2))
