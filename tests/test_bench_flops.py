"""The analytic FLOP count agrees with one counted from the convolutions PyTorch actually runs."""

from __future__ import annotations

import pytest
from torch import nn

from cliplit.benchmarks.flops import conv_costs, flops_per_frame, flops_per_pixel, hooked_conv_flops


@pytest.mark.parametrize(("height", "width"), [(2, 2), (7, 9), (64, 96), (67, 93)])
def test_analytic_count_matches_the_convolutions_that_run(released_enhancer, height, width):
    model = released_enhancer.model
    assert flops_per_frame(model, height, width) == hooked_conv_flops(model, height, width)


def test_cost_per_pixel_is_the_architectures():
    # The released architecture, layer by layer: cond1 3→32; 2 residual blocks of two 32→32 convs; the PPM fuse
    # (32 + 4·8 = 64)→32; condx 32→64; 2 blocks of two 64→64; condy 64→32; 2 blocks of two 32→32; cond_add1 32→1;
    # all 3×3.
    macs = 9 * (3 * 32 + 4 * 32 * 32 + 64 * 32 + 32 * 64 + 4 * 64 * 64 + 64 * 32 + 4 * 32 * 32 + 32 * 1)
    from cliplit.train.network import LightMapNet

    assert flops_per_pixel(LightMapNet()) == 2 * macs
    # the figure: about 1.15 TFLOP for a 1080p frame
    assert flops_per_frame(LightMapNet(), 1080, 1920) / 1e12 == pytest.approx(1.15, abs=0.01)


def test_pyramid_pooling_convolutions_run_on_the_pooled_maps():
    from cliplit.train.network import LightMapNet

    pooled = {cost.name: cost.pooled_side for cost in conv_costs(LightMapNet()) if cost.pooled_side is not None}
    assert sorted(pooled.values()) == [1, 2, 3, 6]
    assert all(name.startswith("PPM1.features.") for name in pooled)


def test_convolutions_that_change_the_resolution_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="stride-1"):
        conv_costs(model)
