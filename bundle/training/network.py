"""Access to the MONAI UNet that reconstructs healthy chest X-rays: bottleneck features and size checks.

The bundle's ``network_def`` is a plain :class:`monai.networks.nets.UNet` (2D, 1 channel in and out), so
``models/model.pt`` stays a plain state dict that TorchScript export and MONAI Label load unchanged. The
feature-alignment loss needs the UNet's bottleneck (encoder output) features; they are read with a forward
hook on the innermost block of the same network, never from a second model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet
from torch import nn

__all__ = ["unwrap", "unet_bottom", "unet_total_stride", "check_image_size", "BottleneckHook"]


def unwrap(network: nn.Module) -> nn.Module:
    """Return the bare module inside ``DistributedDataParallel`` / ``DataParallel`` (or the module itself)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def unet_bottom(network: nn.Module) -> nn.Module:
    """Return the innermost (bottleneck) block of a MONAI UNet.

    MONAI builds its UNet as nested ``Sequential(down, SkipConnection(sub), up)`` blocks; the bottleneck is the
    ``sub`` of the deepest level. Works on a UNet wrapped in DDP/DataParallel.

    Raises:
        TypeError: when ``network`` is not a MONAI UNet.
    """
    net = unwrap(network)
    if not isinstance(net, UNet):
        raise TypeError(f"expected a monai.networks.nets.UNet (optionally DDP-wrapped), got {type(net).__name__}.")
    node: nn.Module = net.model
    while isinstance(node, nn.Sequential) and len(node) == 3 and isinstance(node[1], SkipConnection):
        node = node[1].submodule
    return node


def unet_total_stride(strides: Sequence[int] | int) -> int:
    """Total downsampling factor of a UNet with the given per-level ``strides`` (product of the strides)."""
    if isinstance(strides, int):
        return strides
    return math.prod(int(s) if isinstance(s, int) else int(max(s)) for s in strides)


def check_image_size(image_size: int | Sequence[int], strides: Sequence[int] | int) -> int | Sequence[int]:
    """Fail early, with a clear message, when the training image size does not fit the UNet.

    Args:
        image_size: side length (or (H, W)) the images are resized to.
        strides: the UNet's ``strides`` argument.

    Returns:
        ``image_size`` unchanged, so that configs can use it inline.

    Raises:
        ValueError: when a side is not a positive multiple of the UNet's total stride.
    """
    total = unet_total_stride(strides)
    sides = [image_size] if isinstance(image_size, int) else list(image_size)
    for side in sides:
        if int(side) <= 0 or int(side) % total != 0:
            raise ValueError(
                f"image_size {image_size} is not divisible by the UNet's total stride {total} "
                f"(strides {list(strides) if not isinstance(strides, int) else strides}); "
                f"use a multiple of {total}, e.g. {max(total, round(int(side) / total) * total)}."
            )
    return image_size


class BottleneckHook:
    """Capture the bottleneck features of a MONAI UNet on every forward pass.

    The hook lives on the UNet's innermost block (:func:`unet_bottom`), so it works unchanged when the network
    is wrapped in ``DistributedDataParallel`` after the hook was registered, and adds no parameters.

    Args:
        network: a MONAI UNet, optionally wrapped in DDP/DataParallel.

    Example::

        hook = BottleneckHook(net)
        recon = net(x)           # (B, 1, H, W)
        feats = hook.features    # (B, C_bottom, H / stride, W / stride), part of the autograd graph
    """

    def __init__(self, network: nn.Module) -> None:
        self.module = unet_bottom(network)
        self.features: torch.Tensor | None = None
        self._handle = self.module.register_forward_hook(self._store)

    def _store(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.features = output

    def pop(self) -> torch.Tensor:
        """Return the features of the latest forward pass and release the reference."""
        if self.features is None:
            raise RuntimeError("no bottleneck features captured: run the network forward first.")
        feats, self.features = self.features, None
        return feats

    def remove(self) -> None:
        """Detach the hook from the network."""
        self._handle.remove()
