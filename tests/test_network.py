"""The PyTorch enhancer is exactly the released model: structure, padding variants, pooling, and the references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PHOTO_NAMES, SMALL_PHOTO, photo, reference, shared_file

from cliplit.core.contract import LIGHT_MAP_EPS
from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.train.network import LightMapNet, adaptive_avg_pool2d_exportable, apply_light_map


def test_released_state_dict_loads_strictly_with_expected_parameter_count(released_weights):
    state = torch.load(released_weights, map_location="cpu", weights_only=True)
    assert all(key.startswith("module.") for key in state)
    model = LightMapNet("test")
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 278_790
    assert len(state) == 30


def test_padding_variants_differ_only_on_the_four_outer_convolutions():
    test, train = LightMapNet("test"), LightMapNet("train")
    modes = {name: m.padding_mode for name, m in test.named_modules() if isinstance(m, torch.nn.Conv2d)}
    train_modes = {name: m.padding_mode for name, m in train.named_modules() if isinstance(m, torch.nn.Conv2d)}
    differing = {name for name in modes if modes[name] != train_modes[name]}
    assert differing == {"cond1", "condx", "condy", "cond_add1"}
    assert all(train_modes[name] == "zeros" for name in differing)
    assert modes["PPM1.fuse.0"] == "zeros" and modes["ResidualBlock3.conv2"] == "reflect"
    with pytest.raises(ValueError, match="padding variant"):
        LightMapNet("valid")


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (6, 6), (7, 9), (13, 11), (67, 93), (100, 37)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_exportable_adaptive_pool_matches_pytorch_bin_boundaries(size, bins):
    x = torch.rand(2, 4, *size, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, bins)
    torch.testing.assert_close(adaptive_avg_pool2d_exportable(x, bins), expected, rtol=0, atol=1e-12)


def test_light_map_guard_removes_nan_and_keeps_official_saturation():
    x = torch.tensor([0.0, 0.5, 1.0, 0.2]).view(1, 1, 2, 2)
    light = torch.tensor([0.0, 0.0, 1e-9, 0.5]).view(1, 1, 2, 2)
    official = torch.clamp(x / light, 0, 1)
    ours = apply_light_map(x, light)
    assert torch.isnan(official).sum() == 1  # 0/0
    assert not torch.isnan(ours).any()
    assert ours.flatten().tolist() == pytest.approx([0.0, 1.0, 1.0, 0.4])
    finite = ~torch.isnan(official)
    assert torch.equal(ours[finite], official[finite])
    assert LIGHT_MAP_EPS <= 1e-6


def _enhance_like_the_reference(model: LightMapNet, rgb: np.ndarray, eps: float | None):
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        light = model(x)
    y = torch.clamp(x / light, 0, 1) if eps is None else apply_light_map(x, light, eps)
    out = np.clip(np.floor(y[0].permute(1, 2, 0).numpy() * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return out, light[0, 0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_released_weights_reproduce_official_outputs(released_enhancer, name):
    """PSNR >= 50 dB against the official output; the guarded division changes no pixel of these photos."""
    torch.set_num_threads(2)
    rgb = read_image(photo(name))[:, :, ::-1]
    ours, light = _enhance_like_the_reference(released_enhancer.model, rgb, LIGHT_MAP_EPS)
    official_division, _ = _enhance_like_the_reference(released_enhancer.model, rgb, None)
    expected = read_image(reference(name))[:, :, ::-1]
    assert ours.shape == expected.shape
    assert psnr(ours, expected) >= 50.0
    assert np.array_equal(ours, official_division)
    if name == SMALL_PHOTO:
        official_light = np.load(shared_file(f"reference/{name}_lightmap.npy"))
        assert official_light.shape == light.shape
        assert float(np.abs(official_light - light).max()) <= 1e-4
