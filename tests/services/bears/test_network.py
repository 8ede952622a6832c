"""EfficientNet-Lite0 in numpy: the architecture, convolutions checked against plain loops, ImageNet sense."""

from __future__ import annotations

import numpy as np
import pytest

from society5.services.bears.vision import network as net_mod
from society5.services.bears.vision.network import EfficientNetLite0, preprocess

from .conftest import BEAR_STAMP


def _naive_depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    k = w.shape[0]
    _, h, wd, _ = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    top = max((oh - 1) * stride + k - h, 0) // 2
    left = max((ow - 1) * stride + k - wd, 0) // 2
    out = np.tile(b, (1, oh, ow, 1)).astype(np.float64)
    for oy in range(oh):
        for ox in range(ow):
            for i in range(k):
                for j in range(k):
                    y, xx = oy * stride + i - top, ox * stride + j - left
                    if 0 <= y < h and 0 <= xx < wd:
                        out[0, oy, ox] += x[0, y, xx] * w[i, j]
    return out


@pytest.mark.parametrize(("size", "k", "stride"), [(8, 3, 1), (8, 3, 2), (9, 5, 2), (7, 5, 1)])
def test_depthwise_matches_a_plain_loop_with_tensorflow_same_padding(size: int, k: int, stride: int) -> None:
    rng = np.random.default_rng(size + k + stride)
    x = rng.normal(size=(1, size, size, 4)).astype(np.float32)
    w = rng.normal(size=(k, k, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    np.testing.assert_allclose(net_mod.depthwise(x, w, b, stride), _naive_depthwise(x, w, b, stride),
                               rtol=1e-4, atol=1e-4)


def test_stem_convolution_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    w4 = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)  # (kh, kw, c_in, c_out)
    b = np.zeros(5, np.float32)
    got = net_mod.conv_full(x, w4.reshape(27, 5), b, stride=2)
    expected = np.zeros((1, 3, 3, 5))
    xp = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))  # SAME, stride 2 on an even size: pad after
    for oy in range(3):
        for ox in range(3):
            patch = xp[0, oy * 2:oy * 2 + 3, ox * 2:ox * 2 + 3]
            expected[0, oy, ox] = np.einsum("ijc,ijco->o", patch, w4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_architecture_output_shape_and_softmax(network: EfficientNetLite0) -> None:
    assert len(network.blocks) == 16
    assert [b.stride for b in network.blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert sum(b.skip for b in network.blocks) == 9
    rng = np.random.default_rng(0)
    batch = preprocess(rng.integers(0, 255, (2, 224, 224, 3), dtype=np.uint8))
    probs = network.probabilities(batch)
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert network.features(batch).shape == (2, 1280)


def test_wrong_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="lack"):
        EfficientNetLite0.from_state_dict({})


@pytest.mark.skipif(not BEAR_STAMP.is_file(), reason="needs Debian's tuxpaint-stamps-default")
def test_a_bear_photograph_is_a_bear_class(network: EfficientNetLite0) -> None:
    from PIL import Image

    stamp = Image.open(BEAR_STAMP).convert("RGBA")
    side = max(stamp.size)
    canvas = Image.new("RGBA", (side, side), (110, 130, 90, 255))
    canvas.alpha_composite(stamp, ((side - stamp.width) // 2, (side - stamp.height) // 2))
    rgb = np.asarray(canvas.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    probs = network.probabilities(preprocess(rgb))[0]
    assert int(np.argmax(probs)) in (294, 295, 296, 297)
    assert probs[294:298].sum() > 0.5
