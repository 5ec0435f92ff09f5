"""The PyTorch variants: what each can run on, and that each computes the baseline's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliplit.benchmarks.variants import TORCH_VARIANTS, TorchVariant, unavailable_reason
from cliplit.runtime.backends.torch import TorchBackend, TorchOptions

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")


def test_gpu_only_variants_say_so_on_cpu():
    assert unavailable_reason("torch-fp16", "cpu") == "needs CUDA (no GPU visible to torch)"
    assert unavailable_reason("torch-fp16-cudagraphs", "cpu").startswith("needs CUDA")
    assert unavailable_reason("torch-channels-last", "cpu") is None


def test_compile_on_cpu_needs_a_cxx_compiler(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert "C++ compiler" in unavailable_reason("torch-compile", "cpu")


def test_unknown_variant_is_refused(released_weights):
    with pytest.raises(ValueError, match="unknown PyTorch variant"):
        TorchVariant(released_weights, "torch-int4", "cpu")


def _compare_with_baseline(weights, name: str, device: str, tolerance: float) -> None:
    batch = np.random.default_rng(3).random((2, 3, 40, 56), dtype=np.float32)
    with (
        TorchBackend(weights, TorchOptions(cpu_only=device == "cpu")) as baseline,
        TorchVariant(weights, name, device) as variant,
    ):
        expected, actual = baseline.run(batch), variant.run(batch)
    assert set(actual) == {"enhanced", "light_map"}
    for key in actual:
        assert actual[key].shape == expected[key].shape and actual[key].dtype == np.float32
        assert actual[key].flags["C_CONTIGUOUS"], "outputs in the contract's NCHW layout"
        assert np.abs(actual[key] - expected[key]).max() < tolerance, key


def test_channels_last_computes_the_baseline_output(released_weights):
    _compare_with_baseline(released_weights, "torch-channels-last", "cpu", 1e-4)


@pytest.mark.slow
@pytest.mark.skipif(unavailable_reason("torch-compile", "cpu") is not None, reason="torch.compile cannot run here")
def test_torch_compile_computes_the_baseline_output(released_weights):
    _compare_with_baseline(released_weights, "torch-compile", "cpu", 1e-4)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name", sorted(TORCH_VARIANTS))
def test_every_variant_on_the_gpu_stays_close_to_the_fp32_baseline(released_weights, name):
    spec = TORCH_VARIANTS[name]
    if spec.compile_mode is not None and unavailable_reason(name, "cuda") is not None:
        pytest.skip(unavailable_reason(name, "cuda"))
    _compare_with_baseline(released_weights, name, "cuda", 2e-2 if spec.fp16 else 1e-3)
