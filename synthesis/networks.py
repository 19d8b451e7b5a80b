"""The networks: pix2pix's U-Net generator and 70x70 PatchGAN, and a small segmentation U-Net.

The generator and discriminator follow the pix2pix reference (Isola et al. 2017;
junyanz/pytorch-CycleGAN-and-pix2pix, ``unet_256`` and ``basic``) layer for layer, so that with
``norm="batch"`` the parameter counts match the reference (1 -> 1 channel: 54,407,809 and
2,764,609). The project's default is ``norm="instance"`` (research/synthesis.md §4.3): batch
statistics in train mode make a generated image depend on the other images of its batch, instance
statistics do not. As in the reference, convolutions carry a bias exactly when the norm after them
has no shift of its own (instance norm here is ``affine=False``, as the reference's).

The segmenter is not pix2pix: it is the judge of the quality gate and the model of the downstream
evaluation, a plain U-Net with two 3x3 convolutions per level, which is what "a small U-Net"
means in the segmentation literature.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthesis.config import Norm


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs as im2col + one matrix product when the output is small.

    Same parameters and state dict as ``nn.Conv2d``, same arithmetic up to float rounding. Why: at
    the U-Net's innermost levels (outputs of 8x8 pixels and less, 512 channels, 4x4 kernels)
    oneDNN's direct convolution reaches a few GFLOP/s on CPU, while one GEMM on the unfolded
    input is bound only by reading the weight once (benchmarks/synthesis.py measures it).
    """

    def __init__(self, *args: Any, gemm_max_pixels: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gemm_max_pixels = gemm_max_pixels
        self._pad = _int_pair(self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph, pw = self._pad
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh * ow > self.gemm_max_pixels or self.groups != 1 or self.dilation != (1, 1):
            return super().forward(x)
        cols = F.unfold(x, self.kernel_size, padding=self._pad, stride=self.stride)
        y = torch.matmul(self.weight.reshape(self.out_channels, -1), cols)  # (B, C_out, oh * ow)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.reshape(b, self.out_channels, oh, ow)


class GemmConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that runs as one matrix product + col2im when the input is small.

    The transposed convolution is, by definition, W^T x scattered back with ``fold``; oneDNN's
    deconvolution (and its backward) is slow on CPU for inputs of a few pixels with 1024 channels,
    and for a single output channel at full size. Same parameters and state dict as
    ``nn.ConvTranspose2d``; stride/padding as constructed, no output padding, groups or dilation.
    """

    def __init__(
        self, *args: Any, gemm_max_pixels: int = 0, gemm_max_out: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.gemm_max_pixels = gemm_max_pixels
        self.gemm_max_out = gemm_max_out
        self._pad = _int_pair(self.padding)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        b, cin, h, w = x.shape
        small = h * w <= self.gemm_max_pixels or self.out_channels <= self.gemm_max_out
        if (
            not small
            or output_size is not None
            or self.groups != 1
            or self.dilation != (1, 1)
            or self.output_padding != (0, 0)
        ):
            return super().forward(x, output_size)
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph, pw = self._pad
        oh, ow = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
        weight = self.weight.reshape(cin, -1).t()  # (C_out * kh * kw, C_in)
        cols = torch.matmul(weight, x.reshape(b, cin, h * w))  # (B, C_out * kh * kw, H * W)
        y = F.fold(cols, (oh, ow), self.kernel_size, padding=self._pad, stride=self.stride)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y


def _int_pair(padding: str | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(padding, str) or len(padding) != 2:
        raise ValueError(f"GEMM convolutions need explicit 2D padding, got {padding!r}")
    return int(padding[0]), int(padding[1])


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """The normalisation after a convolution; ``kind`` as in the pix2pix reference's ``--norm``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {kind!r}")


class UNetGenerator(nn.Module):
    """pix2pix U-Net: mask (B, in_ch, S, S) in [-1, 1] -> image (B, out_ch, S, S) in [-1, 1].

    ``n_down`` stride-2 4x4 convolutions take S down to S / 2**n_down (8 levels and a 1x1
    bottleneck for S = 256: ``unet_256``); widths ngf, 2ngf, 4ngf, 8ngf, 8ngf, ...; the decoder
    mirrors them with 4x4 stride-2 transposed convolutions and concatenates the encoder output of
    the same level (a skip at every level). Dropout(0.5) follows the ``n_down - 5`` innermost
    decoder levels: pix2pix's only noise source, since it has no latent z.
    """

    def __init__(
        self,
        in_ch: int = 1,
        out_ch: int = 1,
        ngf: int = 64,
        n_down: int = 8,
        norm: Norm = "instance",
        dropout: float = 0.5,
        gemm_max_pixels: int = 0,
    ) -> None:
        super().__init__()
        if n_down < 5:
            raise ValueError(f"n_down must be >= 5 (widths ngf..8ngf), got {n_down}")
        widths = [ngf * min(2**i, 8) for i in range(n_down)]
        bias = norm != "batch"
        n_dropout = n_down - 5
        self.down = nn.ModuleList()
        prev = in_ch
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(
                GemmConv2d(prev, width, 4, 2, 1, bias=bias, gemm_max_pixels=gemm_max_pixels)
            )
            if 0 < i < n_down - 1:  # no norm on the outermost conv nor on the 1x1 bottleneck
                layers.append(norm_layer(norm, width))
            self.down.append(nn.Sequential(*layers))
            prev = width
        self.up = nn.ModuleList()
        for i in reversed(range(n_down)):
            inner = widths[i] if i == n_down - 1 else 2 * widths[i]  # 2x: skip concatenated
            outer = widths[i - 1] if i > 0 else out_ch
            up = GemmConvTranspose2d(
                inner,
                outer,
                4,
                2,
                1,
                bias=bias or i == 0,
                gemm_max_pixels=gemm_max_pixels,
                gemm_max_out=1 if gemm_max_pixels else 0,
            )
            layers = [nn.ReLU(), up]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(norm_layer(norm, outer))
                if dropout > 0 and n_down - 1 - n_dropout <= i < n_down - 1:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, S, S) -> (B, out_ch, S, S); S must be divisible by 2**n_down."""
        x = mask
        skips: list[torch.Tensor] = []
        for down in self.down:
            x = down(x)  # (B, w_i, S / 2**(i+1), S / 2**(i+1))
            skips.append(x)
        skips.pop()  # the bottleneck feeds the decoder directly
        for up in self.up:
            x = up(x)
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)
        return x


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: (mask, image) pair -> (B, 1, P, P) real/fake logits.

    With ``n_layers=3`` every logit sees a 70x70 patch (30x30 logits for a 256x256 pair): the
    reference's ``basic`` discriminator.
    """

    def __init__(
        self, in_ch: int = 2, ndf: int = 64, n_layers: int = 3, norm: Norm = "instance"
    ) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, S, S) concatenated (mask, image) -> (B, 1, P, P) logits."""
        return self.net(pair)  # type: ignore[no-any-return]


class SegmenterUNet(nn.Module):
    """Small U-Net segmenter: image (B, 1, S, S) in [-1, 1] -> mask logits (B, 1, S, S).

    Two 3x3 conv + instance norm + ReLU per level, ``depth`` 2x poolings, bilinear-free
    transposed-conv upsampling. Instance norm keeps a prediction independent of its batch, so the
    judge scores every synthetic image on its own.
    """

    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        prev = 1
        for w in widths:
            self.enc.append(_double_conv(prev, w))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.upconv = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.upconv.append(nn.ConvTranspose2d(prev, w, 2, 2))
            self.dec.append(_double_conv(2 * w, w))
            prev = w
        self.head = nn.Conv2d(prev, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, 1, S, S) logits; S divisible by 2**depth."""
        skips: list[torch.Tensor] = []
        x = image
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for upconv, dec in zip(self.upconv, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), upconv(x)], dim=1))
        return self.head(x)  # type: ignore[no-any-return]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.InstanceNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.InstanceNorm2d(cout),
        nn.ReLU(),
    )


def init_pix2pix(net: nn.Module, seed: int | None = None, gain: float = 0.02) -> None:
    """The reference initialisation: conv weights N(0, gain), BN weights N(1, gain), biases 0.

    Draws from a local generator when ``seed`` is given, so building a model never moves the
    global RNG (a resumed run must find it where the checkpoint left it).
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.BatchNorm2d):
                mean = 1.0 if isinstance(module, nn.BatchNorm2d) else 0.0
                noise = torch.randn(module.weight.shape, generator=gen)
                module.weight.copy_(mean + gain * noise)
                if module.bias is not None:
                    module.bias.zero_()


def n_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
