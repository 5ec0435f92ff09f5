"""CLIP loading (configs, local files, offline failures), the prompt text encoder and the identity features."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from train_helpers import SIZE, TINY_RESNET, TINY_TEXT, TINY_VIT, bilinear_reference, write_tiny_clip

from cliplit.train import clip_models
from cliplit.train.clip_models import (
    ClipWeightsError,
    IdentityFeatures,
    ImageEncoder,
    Preprocess,
    build_clip,
    resolve_clip,
)
from cliplit.train.models import fresh_enhancer
from cliplit.train.prompts import PromptPair, TextEncoder, check_prompts_fit, load_prompts, save_prompts

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny-clip")
    vit_config, vit_weights = write_tiny_clip(folder, "tiny-vit", TINY_VIT, seed=1)
    rn_config, rn_weights = write_tiny_clip(folder, "tiny-rn", TINY_RESNET, seed=2)
    return {"vit": vit_config, "vit_weights": vit_weights, "rn": rn_config, "rn_weights": rn_weights}


def test_offline_failure_names_model_tag_cache_and_the_local_file_option(tmp_path: Path) -> None:
    with pytest.raises(ClipWeightsError) as error:
        resolve_clip("ViT-B/32", "openai", cache_dir=str(tmp_path), offline=True, flag="--clip-pretrained")
    message = str(error.value)
    for part in ("'ViT-B-32'", "'openai'", str(tmp_path), "--clip-pretrained /path/to/file", "offline"):
        assert part in message


def test_download_failure_is_reported_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> str:
        raise OSError("Name or service not known")

    monkeypatch.setattr(clip_models, "download_pretrained", no_network)
    with pytest.raises(ClipWeightsError, match=r"download failed \(OSError: Name or service not known\)") as error:
        resolve_clip("RN101", "openai", cache_dir=str(tmp_path), flag="--identity-pretrained")
    assert "--identity-pretrained /path/to/file" in str(error.value) and "RN101-quickgelu" in str(error.value)


def test_cached_tag_resolves_without_network_and_uses_quick_gelu(tmp_path: Path) -> None:
    """OpenAI's tags point at QuickGELU weights; open_clip's plain RN101 config would silently use GELU."""
    (tmp_path / "RN101.pt").write_bytes(b"stand-in for the cached download")
    source = resolve_clip("RN101", "openai", cache_dir=str(tmp_path), offline=True)
    assert source.weights == tmp_path / "RN101.pt"
    assert source.config["quick_gelu"] is True and source.image_size == 224


def test_unknown_tag_and_model_fail_clearly() -> None:
    with pytest.raises(ClipWeightsError, match=r"neither a file nor an open_clip tag of ViT-B-32 .*openai"):
        resolve_clip("ViT-B-32", "no-such-tag")
    with pytest.raises(Exception, match="unknown open_clip model"):
        resolve_clip("ViT-Z-99", "none")


def test_local_checkpoint_and_config_json_load_exactly(tiny: dict[str, Path]) -> None:
    source = resolve_clip(str(tiny["vit"]), str(tiny["vit_weights"]))
    model = build_clip(source)
    saved = torch.load(tiny["vit_weights"], weights_only=True)
    assert all(torch.equal(saved[key], value) for key, value in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    random = build_clip(resolve_clip(str(tiny["vit"]), "none"))
    assert not torch.equal(random.token_embedding.weight, model.token_embedding.weight)


def test_torchscript_archive_loads_like_openai_files(tiny: dict[str, Path], tmp_path: Path) -> None:
    config = {**TINY_VIT, "text_cfg": TINY_TEXT}
    original = open_clip.CLIP(**config)
    original.load_state_dict(torch.load(tiny["vit_weights"], weights_only=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        torch.jit.script(original.eval()).save(str(tmp_path / "scripted.pt"))
    source = resolve_clip(str(tiny["vit"]), str(tmp_path / "scripted.pt"))
    assert source.config["quick_gelu"] is True
    model = build_clip(source)
    assert all(torch.equal(original.state_dict()[key], value) for key, value in model.state_dict().items())


def test_text_encoder_on_token_embeddings_equals_clip_encode_text(tiny: dict[str, Path]) -> None:
    clip = build_clip(resolve_clip(str(tiny["vit"]), str(tiny["vit_weights"])))
    tokens = open_clip.tokenize(["a backlit photo", "X X X X"])
    expected = F.normalize(clip.encode_text(tokens), dim=-1)
    encoder = TextEncoder(clip)
    for row in range(2):
        embeddings = clip.token_embedding(tokens[row : row + 1])
        actual = encoder(embeddings, int(tokens[row].argmax()))
        assert torch.allclose(actual, expected[row : row + 1], atol=1e-5)


def test_prompt_pair_starts_from_the_placeholder_text(tiny: dict[str, Path], tmp_path: Path) -> None:
    clip = build_clip(resolve_clip(str(tiny["vit"]), str(tiny["vit_weights"])))
    prompts = PromptPair.from_clip(clip, 16)
    tokens = open_clip.tokenize([" ".join(["X"] * 16)])
    assert prompts.eot_index == 17  # start-of-text, 16 placeholders, end-of-text
    assert prompts.embeddings.shape == (2, 77, 32) and prompts.embeddings.requires_grad
    assert torch.equal(prompts.embeddings[0], clip.token_embedding(tokens)[0])
    features = prompts(TextEncoder(clip))
    assert features.shape == (2, 32) and torch.allclose(features.norm(dim=-1), torch.ones(2))
    features.sum().backward()
    # The features are read at the end-of-text token under a causal mask: every position up to it gets a gradient,
    # none after it does.
    touched = prompts.embeddings.grad.abs().sum(dim=-1) > 0
    assert touched[:, :18].all() and not touched[:, 18:].any()

    with torch.no_grad():
        prompts.embeddings[1] += 1.0
    loaded = load_prompts(save_prompts(prompts, tmp_path / "p.pt"), prompt_length=16)
    assert torch.equal(loaded.embeddings, prompts.embeddings) and loaded.eot_index == 17
    # The released init_prompt_pair.pth: a DataParallel state dict with the key embedding_prompt.
    torch.save({"module.embedding_prompt": prompts.embeddings.detach()}, tmp_path / "released.pth")
    released = load_prompts(tmp_path / "released.pth", prompt_length=16)
    assert torch.equal(released.embeddings, prompts.embeddings) and released.eot_index == 17
    check_prompts_fit(released, clip)
    with pytest.raises(Exception, match="learned with another CLIP model"):
        check_prompts_fit(PromptPair(torch.zeros(2, 77, 64), 17), clip)


def test_identity_features_are_the_five_resnet_stages(tiny: dict[str, Path]) -> None:
    source = resolve_clip(str(tiny["rn"]), str(tiny["rn_weights"]))
    identity = IdentityFeatures(build_clip(source), source.preprocess())
    features = identity(torch.rand(2, 3, 48, 48))  # resized to the model's 32 x 32 first
    # width 8: stem 8 channels at 1/4 of the input, then 32, 64, 128, 256 channels at 1/4, 1/8, 1/16, 1/32.
    shapes = [tuple(f.shape) for f in features]
    assert shapes == [(2, 8, 8, 8), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2), (2, 256, 1, 1)]
    vit = resolve_clip(str(tiny["vit"]), "none")
    with pytest.raises(Exception, match="must be a CLIP ResNet"):
        IdentityFeatures(build_clip(vit), vit.preprocess())


def test_images_are_resized_and_normalised_for_clip(tiny: dict[str, Path]) -> None:
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    prepared = Preprocess(SIZE, mean, std)(torch.ones(1, 3, 64, 64))
    assert prepared.shape == (1, 3, SIZE, SIZE)
    assert torch.allclose(prepared[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    source = resolve_clip(str(tiny["vit"]), str(tiny["vit_weights"]))
    features = ImageEncoder(build_clip(source), source.preprocess())(torch.rand(3, 3, SIZE, SIZE))
    assert features.shape == (3, 32) and torch.allclose(features.norm(dim=-1), torch.ones(3))


def test_clip_resize_is_bilinear_without_antialiasing_as_the_official_code() -> None:
    image = torch.rand(1, 3, 512, 384, generator=torch.Generator().manual_seed(0))
    resized = Preprocess(224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(image)
    expected = bilinear_reference(image[0].double().numpy(), 224)
    # 1e-4: PyTorch computes the sample positions in float32; any other filter (bicubic, antialiasing, corner
    # alignment) is off by more than 1e-2 on random pixels.
    assert np.abs(resized[0].double().numpy() - expected).max() < 1e-4
    antialiased = Preprocess(224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize="bicubic-antialias")(image)
    assert np.abs(antialiased[0].double().numpy() - expected).max() > 1e-2


def test_official_resize_gives_a_clip_gradient_to_766_per_mille_of_a_512_image() -> None:
    """Shrinking 512 to 224 without antialiasing reads 448 of the 512 rows and columns: (448 / 512)^2 = 76.5625 %
    of the pixels get a gradient from CLIP; CLIP's own antialiased bicubic resize reaches all of them."""
    for resize, expected in (("bilinear", (448 / 512) ** 2), ("bicubic-antialias", 1.0)):
        image = torch.rand(1, 3, 512, 512, requires_grad=True)
        Preprocess(224, resize=resize)(image).sum().backward()
        assert (image.grad[0, 0] != 0).float().mean().item() == pytest.approx(expected), resize


def test_identity_features_run_in_the_towers_precision(tiny: dict[str, Path]) -> None:
    """The official RN101 on CUDA holds FP16 weights (BatchNorm FP32) and casts its input to FP16."""
    source = resolve_clip(str(tiny["rn"]), str(tiny["rn_weights"]))
    clip = build_clip(source)
    image = torch.rand(2, 3, 32, 32)
    full = IdentityFeatures(clip, source.preprocess())(image)
    open_clip.model.convert_weights_to_lp(clip, dtype=torch.float16)
    half = IdentityFeatures(clip, source.preprocess())(image)
    assert [f.dtype for f in half] == [torch.float16] * 5
    for a, b in zip(full, half, strict=True):
        assert torch.allclose(a, b.float(), rtol=1e-2, atol=1e-2)


def test_a_fresh_enhancer_is_drawn_as_the_official_weights_init() -> None:
    torch.manual_seed(0)
    enhancer = fresh_enhancer()
    convs = torch.cat([m.weight.flatten() for m in enhancer.modules() if isinstance(m, torch.nn.Conv2d)])
    assert (
        convs.numel() > 270_000 and abs(convs.mean().item()) < 1e-3 and convs.std().item() == pytest.approx(0.02, 0.01)
    )
    prelu = [m.weight for m in enhancer.modules() if isinstance(m, torch.nn.PReLU)]
    assert prelu and all(torch.all(w == 0.25) for w in prelu)  # untouched: PyTorch's default
