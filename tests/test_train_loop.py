"""The training loop end to end on synthetic scenes with tiny random CLIPs: every stage, learning, resume, CLI,
torch.distributed, mixed precision, offline failures, and the trained checkpoint through export and the runtime."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from train_helpers import TINY_RESNET, TINY_VIT, backlit_scene, make_dataset, well_lit_scene, write_tiny_clip

from cliplit.core.errors import CliplitError
from cliplit.train import cli, enhancer_stages
from cliplit.train.checkpoint import load_enhancer
from cliplit.train.clip_models import ClipWeightsError, ImageEncoder, build_clip, resolve_clip
from cliplit.train.config import from_mapping
from cliplit.train.loop import train
from cliplit.train.losses import prompt_logits, stage3_loss
from cliplit.train.network import apply_light_map
from cliplit.train.prompts import TextEncoder, load_prompts
from cliplit.train.schedule import plan

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("train")
    backlit, well_lit = make_dataset(root / "data", backlit=24, well_lit=24, seed=0)
    clip_config, clip_weights = write_tiny_clip(root, "tiny-vit", TINY_VIT, seed=1)
    identity_config, identity_weights = write_tiny_clip(root, "tiny-rn", TINY_RESNET, seed=2)
    options = {
        "backlit": str(backlit),
        "well_lit": str(well_lit),
        "clip_model": str(clip_config),
        "clip_pretrained": str(clip_weights),
        "identity_model": str(identity_config),
        "identity_pretrained": str(identity_weights),
        "image_size": 32,
        "prompt_image_size": 32,
        "batch_size": 4,
        "prompt_batch_size": 8,
        "prompt_lr": 1e-3,
        "enhancer_lr": 1e-4,
        "device": "cpu",
        "num_workers": 0,
        "progress": False,
    }
    return {"root": root, "options": options, "clip": (clip_config, clip_weights)}


def quick(setup: dict[str, Any], out: Path, **changes: Any) -> dict[str, Any]:
    """A few iterations of every stage."""
    options = {
        "init_enhancer": "none",
        "warmup_iters": 3,
        "prompt_init_iters": 3,
        "rounds": 2,
        "enhance_iters": 3,
        "refine_iters": 3,
        "enhance_extend_iters": 0,
        "refine_extend_iters": 0,
    }
    return {**setup["options"], **options, "out": str(out), **changes}


def held_out(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backlit scenes with their dark masks, and well-lit scenes, none of them seen in training."""
    rng = np.random.default_rng(seed)
    scenes = [backlit_scene(rng) for _ in range(count)]
    backlit = torch.from_numpy(np.stack([image for image, _ in scenes])).permute(0, 3, 1, 2)
    dark = torch.from_numpy(np.stack([mask for _, mask in scenes]))
    well_lit = torch.from_numpy(np.stack([well_lit_scene(rng) for _ in range(count)])).permute(0, 3, 1, 2)
    return backlit, dark, well_lit


@pytest.fixture(scope="module")
def trained(setup: dict[str, Any]) -> Path:
    """One run through every stage but the warm-up (the released initial network needs none; the quick runs below
    cover it): two rounds, with extensions, on the synthetic scenes."""
    run = setup["root"] / "run"
    config = from_mapping(
        {
            **setup["options"],
            "out": str(run),
            "init_enhancer": "clip-lit-init",  # the released initial network, from the test cache (conftest)
            "rounds": 2,
            "prompt_init_iters": 60,
            "enhance_iters": 40,
            "refine_iters": 20,
            "enhance_extend_iters": 10,
            "refine_extend_iters": 10,
            "max_extensions": 2,
            "prompt_augment": "dihedral",
            "num_samples": 2,
            "log_every": 5,
        }
    )
    started = time.perf_counter()
    assert train(config).finished
    (run.parent / "wall_seconds").write_text(str(time.perf_counter() - started))
    return run


@pytest.mark.slow
def test_end_to_end_learns_prompts_and_brightens_backlit_scenes(setup: dict[str, Any], trained: Path) -> None:
    run = trained
    summary = json.loads((run / "summary.json").read_text())
    phases = [(p["stage"], p["round"]) for p in summary["phases"]]
    assert phases == [("prompt_init", 0), ("enhance", 0), ("refine", 0), ("enhance", 1), ("refine", 1)]
    for phase in summary["phases"]:
        base = {"prompt_init": 60, "enhance": 40, "refine": 20}[phase["stage"]]
        assert phase["iterations"] == base + 10 * phase["extensions"]
    # The timed steps are part of the run, and each stage's rate is an average of its phases' rates.
    assert 0 < sum(p["seconds"] for p in summary["phases"]) < float((run.parent / "wall_seconds").read_text())
    assert set(summary["stages"]) == {"prompt_init", "enhance", "refine"}
    for name, stage in summary["stages"].items():
        rates = [p["its_per_s"] for p in summary["phases"] if p["stage"] == name]
        assert min(rates) * 0.999 <= stage["its_per_s"] <= max(rates) * 1.001, name  # 0.1 %: both are rounded
    assert summary["accuracy"] >= 0.9  # on the training images; labels from folders despite misleading names

    # Prompt classification on held-out scenes.
    clip_source = resolve_clip(str(setup["clip"][0]), str(setup["clip"][1]))
    clip = build_clip(clip_source)
    prompts = load_prompts(run / "prompts_best.pt", prompt_length=16)
    backlit, dark, well_lit = held_out(8, seed=99)
    with torch.no_grad():
        text = prompts(TextEncoder(clip))
        logits = prompt_logits(
            ImageEncoder(clip, clip_source.preprocess())(torch.cat([backlit, well_lit])), text, 100.0
        )
    labels = torch.tensor([0] * 8 + [1] * 8)
    assert (logits.argmax(dim=1) == labels).float().mean() >= 0.9

    # The trained enhancer brightens the dark regions of held-out backlit scenes, compared with its initialisation.
    trained = load_enhancer(run / "enhancer_best.pth")
    initial = load_enhancer("clip-lit-init")
    with torch.no_grad():
        after = apply_light_map(backlit, trained.model(backlit)).mean(dim=1)[dark].mean()
        before = apply_light_map(backlit, initial.model(backlit)).mean(dim=1)[dark].mean()
    assert after > before + 0.1, (float(before), float(after))
    assert trained.model.padding == "test" and trained.source["kind"] == "best"
    assert trained.source["init_enhancer_sha256"] == initial.sha256 and trained.source["config"]["rounds"] == 2

    # Everything a user relies on is in the run directory.
    for name in ("config.yaml", "log.csv", "checkpoints/last.pt", "enhancer_final.pth", "enhancer_round_001.pth"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "round_001.png").is_file() and (run / "prompts_final.pt").is_file()
    for round_dir in ("round_000", "round_001"):  # the last two rounds' results, one per backlit image
        assert len(list((run / "results" / round_dir).glob("*.png"))) == 24, round_dir
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert {row["stage"] for row in rows} == {"prompt_init", "enhance", "refine"}
    for phase in summary["phases"]:  # each phase's last log row is its end, timed as the summary says
        last = [row for row in rows if (row["stage"], int(row["round"])) == (phase["stage"], phase["round"])][-1]
        assert int(last["iteration"]) == phase["iterations"]
        assert float(last["elapsed_s"]) == pytest.approx(phase["seconds"], abs=1e-3)


@pytest.mark.slow
def test_trained_checkpoint_exports_and_runs_in_the_runtime(trained: Path, tmp_path: Path) -> None:
    """export-engine turns the trained checkpoint into a verified ONNX model; the runtime's Enhancer runs it and
    matches the PyTorch network to one 8-bit level."""
    from cliplit.export.cli import main as export_engine
    from cliplit.runtime.backends.onnxruntime import OnnxRuntimeOptions
    from cliplit.runtime.enhancer import Enhancer

    onnx_path = tmp_path / "trained.onnx"
    assert export_engine(["--weights", str(trained / "enhancer_best.pth"), "--onnx", str(onnx_path)]) == 0
    backlit, dark, _ = held_out(2, seed=7)
    frame = np.ascontiguousarray((backlit[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
    with Enhancer.open(onnx_path, OnnxRuntimeOptions(threads=1)) as enhancer:
        enhanced = enhancer.enhance(frame)
    rgb = torch.from_numpy(frame[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        model = load_enhancer(trained / "enhancer_best.pth").model
        expected = apply_light_map(rgb, model(rgb))[0].permute(1, 2, 0).numpy()[:, :, ::-1]
    expected = np.clip(np.floor(expected * 255 + 0.5), 0, 255).astype(np.uint8)
    assert enhanced.shape == frame.shape and enhanced.dtype == np.uint8
    assert np.abs(enhanced.astype(int) - expected.astype(int)).max() <= 1
    mask = dark[0].numpy()
    assert enhanced[mask].mean() > frame[mask].mean() + 25


def state_of(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def log_rows(run: Path) -> list[tuple[str, ...]]:
    """The log without its timing columns."""
    timing = {"its_per_s", "elapsed_s"}
    return [tuple(v for k, v in row.items() if k not in timing) for row in csv.DictReader((run / "log.csv").open())]


def test_resume_reproduces_the_uninterrupted_run(setup: dict[str, Any], tmp_path: Path) -> None:
    """Interrupted in stage 2 (between its re-initialisations), stages 3, 4 and 3 again, then resumed to the end.

    Full augmentation and a data-loading worker: neither the sampler nor the worker holds state that resume needs.
    Everything is compared bit for bit (CPU kernels are deterministic for the same inputs and thread count).
    """
    options = quick(setup, tmp_path / "x", prompt_augment="full", num_workers=1, running_loss_window=2)
    # A PSNR no enhancer reaches: the warm-up re-initialises (drawing on the global RNG) until it gives up, each time
    # after two iterations of an attempt, adding two iterations.
    options.update(warmup_check_iters=1, warmup_min_psnr=99.0, warmup_max_restarts=2, warmup_restart_iters=2)
    options.update(enhance_extend_iters=2, enhance_extend_above=-1.0, max_extensions=1)  # always extend once
    whole = train(from_mapping({**options, "out": str(tmp_path / "whole")}))
    assert whole.finished and whole.step == 3 + (3 + 2 + 2) + 2 * (5 + 3)
    assert [p["stage"] for p in whole.summary["phases"]][:2] == ["prompt_init", "warmup"]
    assert whole.summary["phases"][1]["restarts"] == 2

    parts = tmp_path / "parts"
    for stop in (5, 11, 17, 22):
        outcome = train(from_mapping({**options, "out": str(parts), "max_steps": stop}), resume=stop != 5)
        assert not outcome.finished and outcome.step == stop
    assert train(from_mapping({**options, "out": str(parts)}), resume=True).finished

    a, b = state_of(tmp_path / "whole"), state_of(parts)
    for key in ("enhancer", "enhancer_best"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    for key in ("prompts", "prompts_best"):
        assert torch.equal(a[key], b[key]), key
    for key in ("enhancer_optimizer", "prompt_optimizer"):
        for index, moments in a[key]["state"].items():
            assert all(torch.equal(value, b[key]["state"][index][name]) for name, value in moments.items()), key
    assert {k: v for k, v in a["progress"].items() if k not in ("phase_seconds", "phases")} == {
        k: v for k, v in b["progress"].items() if k not in ("phase_seconds", "phases")
    }
    assert log_rows(tmp_path / "whole") == log_rows(parts)  # rows logged after a checkpoint are not duplicated

    with pytest.raises(CliplitError, match="cannot change prompt-lr"):
        train(from_mapping({**options, "out": str(parts), "prompt_lr": 0.5}), resume=True)


def test_cli_trains_from_a_config_file_and_guards_the_run_directory(setup: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    options = quick(setup, tmp_path / "run", rounds=1)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump({k: v for k, v in options.items() if k != "out"}))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--config", str(config_file), "--out", str(tmp_path / "run"), "--enhance-iters", "2"]
    assert cli.run(parser.parse_args(argv)) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [p["iterations"] for p in summary["phases"] if p["stage"] == "enhance"] == [2]
    assert load_enhancer(tmp_path / "run" / "enhancer_best.pth").source["config"]["enhance_iters"] == 2
    with pytest.raises(CliplitError, match="already holds a training run"):
        cli.run(parser.parse_args(argv))
    assert cli.run(parser.parse_args([*argv, "--resume", "--rounds", "2"])) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [p["round"] for p in summary["phases"] if p["stage"] == "refine"] == [0, 1]


def test_offline_without_weights_fails_before_any_work(setup: dict[str, Any], tmp_path: Path) -> None:
    options = quick(setup, tmp_path / "run", clip_model="ViT-B-32", clip_pretrained="openai", offline=True)
    options["clip_cache_dir"] = str(tmp_path / "empty-cache")
    with pytest.raises(ClipWeightsError, match=r"ViT-B-32.*openai.*empty-cache"):
        train(from_mapping(options))
    assert not (tmp_path / "run").exists()


def test_single_process_gloo_group_matches_plain_training(setup: dict[str, Any], tmp_path: Path) -> None:
    """Under torchrun every rank joins a process group and trains DistributedDataParallel modules; with one process
    the gradients are the same, so the run must equal a plain one."""
    options = quick(setup, tmp_path / "plain", rounds=1)
    plain = state_of(train(from_mapping(options)).run_dir)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        outcome = train(from_mapping({**options, "out": str(tmp_path / "ddp")}))
    finally:
        dist.destroy_process_group()
    assert outcome.summary["world_size"] == 1
    distributed = state_of(outcome.run_dir)
    for name, value in plain["enhancer"].items():
        assert torch.allclose(value, distributed["enhancer"][name], atol=1e-6), name
    assert torch.allclose(plain["prompts"], distributed["prompts"], atol=1e-6)


def test_mixed_precision_runs_every_stage(setup: dict[str, Any], tmp_path: Path) -> None:
    """AMP is meant for CUDA; bfloat16 autocast on the CPU exercises the same code path here."""
    outcome = train(from_mapping(quick(setup, tmp_path / "amp", rounds=1, amp="on", log_every=1)))
    assert outcome.finished and outcome.summary["amp"] is True
    losses = [float(row["loss"]) for row in csv.DictReader((tmp_path / "amp" / "log.csv").open())]
    assert len(losses) == 12 and all(np.isfinite(losses))


def test_the_run_ends_where_its_epochs_do(setup: dict[str, Any], tmp_path: Path) -> None:
    """24 backlit and 24 well-lit images. Batches an epoch: stage 1, 2 x 24 rows in 8s: 6; stage 3, 24 in 4s: 6;
    stage 4, 24 in 8s: 3. Stage 1's 4 iterations take 1 epoch + 1 reset; a round's 7 + 4 iterations 2 + 2 epochs +
    1 reset. 10 epochs: stage 1 (2), round 0 (5), round 1's stage 3 (2) and 1 epoch of its stage 4: 3 iterations."""
    options = quick(setup, tmp_path / "run", init_enhancer="clip-lit-init", rounds=None, epochs=10)
    options.update(prompt_init_iters=4, enhance_iters=7, refine_iters=4)
    outcome = train(from_mapping(options))
    phases = [(p["stage"], p["round"], p["iterations"]) for p in outcome.summary["phases"]]
    assert phases == [("prompt_init", 0, 4), ("enhance", 0, 7), ("refine", 0, 4), ("enhance", 1, 7), ("refine", 1, 3)]
    assert phases == [(p.stage, p.round, p.iterations) for p in plan(from_mapping(options), 24, 24)]
    assert outcome.finished and outcome.summary["epochs"] == 10
    assert [p["truncated"] for p in outcome.summary["phases"]] == [False] * 4 + [True]


def test_the_trainer_computes_stage3_with_stage3_loss(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public stage3_loss is what a training step minimises: every logged stage-3 loss is one of its totals."""
    totals = []

    def spy(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        losses = stage3_loss(*args, **kwargs)
        totals.append(losses["total"].item())
        return losses

    monkeypatch.setattr(enhancer_stages, "stage3_loss", spy)
    train(from_mapping(quick(setup, tmp_path / "run", rounds=1, log_every=1, init_enhancer="clip-lit-init")))
    rows = [row for row in csv.DictReader((tmp_path / "run" / "log.csv").open()) if row["stage"] == "enhance"]
    assert len(totals) == 3 and [float(row["loss"]) for row in rows] == pytest.approx(totals, rel=1e-5)
