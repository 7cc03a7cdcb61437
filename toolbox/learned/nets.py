"""Compact restoration networks for the learned tools (plain PyTorch, CPU-friendly).

* :class:`UNetRes`: scale-1 restoration. ``pixel_unshuffle(2)`` to half resolution (3 -> 12
  channels), a two-level residual U-Net there (``c`` channels at 1/2, ``2c`` at 1/4 of the input
  resolution, so the receptive field covers JPEG blocks and blur kernels cheaply),
  ``pixel_shuffle(2)`` back; the output is ``input + residual``. Needs ``H`` and ``W`` to be
  multiples of :attr:`UNetRes.multiple` (4); the tools reflect-pad and crop back.
* :class:`SRRes`: x4 super-resolution. Residual blocks at the low resolution, ``pixel_shuffle``
  x2 twice, added to the bicubic (``F.interpolate``) upsampling of the input.

Neither network clamps; the tools clamp to ``[0, 1]`` at inference only. ``ARCHS`` maps the
``arch`` name stored in a weights file's metadata to the class; ``build(arch, **kwargs)`` makes one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCHS", "ResBlock", "SRRes", "UNetRes", "build", "count_params"]


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions, no normalisation."""

    def __init__(self, ch: int, leaky: float = 0.0) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.leaky = float(leaky)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.leaky_relu(self.c1(x), self.leaky))


class UNetRes(nn.Module):
    """Scale-1 residual restorer working at half resolution (see the module docstring)."""

    multiple = 4

    def __init__(self, ch: int = 32, blocks_hi: int = 2, blocks_lo: int = 3, leaky: float = 0.0) -> None:
        super().__init__()
        self.leaky = float(leaky)  # negative slope of the activations (0: ReLU)
        self.head = nn.Conv2d(12, ch, 3, padding=1)
        self.enc = nn.Sequential(*[ResBlock(ch, leaky) for _ in range(blocks_hi)])
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = nn.Sequential(*[ResBlock(2 * ch, leaky) for _ in range(blocks_lo)])
        self.up = nn.Conv2d(2 * ch, 4 * ch, 3, padding=1)  # pixel_shuffle(2) -> ch
        self.dec = nn.Sequential(*[ResBlock(ch, leaky) for _ in range(blocks_hi)])
        self.tail = nn.Conv2d(ch, 12, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity
        assert self.tail.bias is not None  # Conv2d(bias=True) has one
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.leaky
        f = F.leaky_relu(self.head(F.pixel_unshuffle(x, 2)), a)
        e = self.enc(f)
        m = self.mid(F.leaky_relu(self.down(e), a))
        d = self.dec(e + F.pixel_shuffle(self.up(m), 2))
        return x + F.pixel_shuffle(self.tail(F.leaky_relu(d, a)), 2)


class SRRes(nn.Module):
    """x4 super-resolution: residual over bicubic upsampling (see the module docstring)."""

    multiple = 1

    def __init__(self, ch: int = 64, blocks: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, ch, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(blocks)])
        self.tail = nn.Conv2d(ch, 3 * 16, 3, padding=1)  # pixel_shuffle(4) -> 3 channels
        nn.init.zeros_(self.tail.weight)
        assert self.tail.bias is not None  # Conv2d(bias=True) has one
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False)
        f = self.head(x)
        f = f + self.body(f)
        return base + F.pixel_shuffle(self.tail(F.relu(f)), 4)


ARCHS: dict[str, type[nn.Module]] = {"unetres": UNetRes, "srres": SRRes}


def build(arch: str, **kwargs: Any) -> nn.Module:
    """A network by ``arch`` name (a key of :data:`ARCHS`) and constructor keyword arguments."""
    if arch not in ARCHS:
        raise ValueError(f"unknown network architecture {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](**kwargs)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
