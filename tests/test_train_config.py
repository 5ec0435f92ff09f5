"""Training options: paper defaults, YAML/TOML files, flag precedence, validation, resume rules, a torch-free CLI."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from cliplit.train import cli
from cliplit.train.config import ConfigError, TrainConfig, from_mapping, resume_config, write_config
from cliplit.train.config_files import read_config_file


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_the_papers_setting() -> None:
    c = TrainConfig()
    assert (c.clip_model, c.clip_pretrained, c.identity_model, c.identity_pretrained) == (
        "ViT-B-32",
        "openai",
        "RN101",
        "openai",
    )
    assert (c.prompt_lr, c.prompt_weight_decay, c.prompt_batch_size, c.prompt_image_size) == (5e-6, 1e-3, 16, 256)
    assert (c.enhancer_lr, c.enhancer_weight_decay, c.batch_size, c.image_size) == (2e-5, 1e-3, 8, 512)
    assert (c.enhance_iters, c.enhance_extend_iters, c.enhance_extend_above) == (2100, 60, 90.0)
    assert (c.refine_iters, c.refine_extend_iters, c.refine_extend_above) == (1000, 100, 60.0)
    assert (c.clip_loss_weight, c.identity_scale, c.identity_weight, c.rank_loss_weight) == (320.0, 25.0, 0.9, 200.0)
    assert c.warmup_layer_weights == (1.0,) * 5 and c.identity_layer_weights == (1.0, 1.0, 1.0, 1.0, 0.5)
    assert (c.logit_scale, c.prompt_length) == (100.0, 16)
    # The official train.py's length, loop rules, augmentation and precision (issue 14; docs/training.md's table).
    assert (c.epochs, c.rounds, c.prompt_init_iters, c.warmup_iters) == (2000, None, 8000, 1000)
    assert (c.extension_test, c.best_enhancer, c.stage3_prompts) == ("last-loss", "official", "latest")
    assert (c.warmup_check_iters, c.warmup_min_psnr, c.warmup_restart_iters) == (100, 8.0, 100)
    assert (c.zoom_prob, c.enhance_zoom, c.prompt_zoom) == (0.3, (0.7, 1.3), (0.5, 1.5))
    assert (c.rotation_prob, c.max_rotation) == (0.3, 90.0)
    assert (c.clip_resize, c.amp) == ("bilinear", "official")


def test_every_option_has_a_flag() -> None:
    args = parse("--backlit", "b", "--well-lit", "w", "--out", "o")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    names = {action.dest for action in parser._actions}
    assert set(TrainConfig().to_dict()) <= names
    assert (args.backlit, args.well_lit, args.out) == ("b", "w", "o")
    assert not hasattr(args, "rounds")  # flags not given stay out, so the config file's values stand


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_then_flags(tmp_path: Path, suffix: str) -> None:
    if suffix == ".yaml":
        text = "backlit: /data/backlit\nwell-lit: /data/welllit\nout: /runs/a\nrounds: 3\nprompt_lr: 1.0e-4\n"
        text += "identity_layer_weights: [1, 1, 1, 1, 0.25]\noffline: true\n"
    else:
        text = 'backlit = "/data/backlit"\nwell-lit = "/data/welllit"\nout = "/runs/a"\nrounds = 3\nprompt_lr = 1e-4\n'
        text += "identity_layer_weights = [1, 1, 1, 1, 0.25]\noffline = true\n"
    path = tmp_path / f"options{suffix}"
    path.write_text(text)
    config = cli.config_from_args(parse("--config", str(path), "--rounds", "5", "--no-offline", "--device", "cpu"))
    assert config.rounds == 5  # the flag wins over the file
    assert config.prompt_lr == 1e-4 and config.identity_layer_weights == (1.0, 1.0, 1.0, 1.0, 0.25)
    assert config.offline is False and config.device == "cpu" and config.well_lit == "/data/welllit"


def test_bad_options_fail_with_the_option_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'rounds'"):
        from_mapping({"round": 3})
    with pytest.raises(ConfigError, match="'batch_size'"):
        from_mapping({"batch_size": 2.5})
    with pytest.raises(ConfigError, match="offline"):
        from_mapping({"offline": "maybe"})
    base = {"backlit": "b", "well_lit": "w", "out": "o"}
    with pytest.raises(ConfigError, match="--backlit is required"):
        TrainConfig().validate()
    with pytest.raises(ConfigError, match="5 weights"):
        from_mapping({**base, "identity_layer_weights": [1, 1]}).validate()
    with pytest.raises(ConfigError, match="prompt-augment must be one of"):
        from_mapping({**base, "prompt_augment": "sometimes"}).validate()
    with pytest.raises(ConfigError, match="batch-size must be at least 1"):
        from_mapping({**base, "batch_size": 0}).validate()
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(bad)
    ini = tmp_path / "options.ini"
    ini.write_text("rounds = 3\n")
    with pytest.raises(ConfigError, match="unknown format"):
        read_config_file(ini)


def test_the_old_export_variant_key_still_reads_as_export_padding() -> None:
    with pytest.warns(FutureWarning, match="'export-variant' is deprecated; it is now 'export_padding'"):
        assert from_mapping({"export-variant": "train"}).export_padding == "train"


def test_resume_keeps_the_run_and_allows_only_harmless_changes(tmp_path: Path) -> None:
    saved = from_mapping({"backlit": "b", "well_lit": "w", "out": str(tmp_path), "max_steps": 10, "prompt_lr": 1e-3})
    write_config(saved, tmp_path / "config.yaml")
    config = cli.config_from_args(parse("--resume", "--out", str(tmp_path), "--rounds", "20", "--device", "cpu"))
    assert (config.rounds, config.device, config.prompt_lr, config.backlit) == (20, "cpu", 1e-3, "b")
    assert config.max_steps is None  # a stop point belongs to one invocation
    with pytest.raises(ConfigError, match="cannot change prompt-lr"):
        cli.config_from_args(parse("--resume", "--out", str(tmp_path), "--prompt-lr", "0.1"))
    with pytest.raises(ConfigError, match="cannot change seed"):
        resume_config(saved.to_dict(), {"seed": 7})
    with pytest.raises(Exception, match=r"config\.yaml not found"):
        cli.config_from_args(parse("--resume", "--out", str(tmp_path / "elsewhere")))


def test_the_cli_module_imports_without_torch() -> None:
    """`cliplit --help` builds every subcommand's parser in environments without torch."""
    code = (
        "import sys, argparse; import cliplit.train.cli as c; c.add_arguments(argparse.ArgumentParser()); "
        "assert not {'torch', 'open_clip', 'yaml'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_training_guide_documents_every_option() -> None:
    guide = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    flags = [f for action in parser._actions for f in action.option_strings if f.startswith("--") and f != "--help"]
    missing = [flag for flag in flags if f"`{flag}" not in guide]
    assert not missing, f"docs/training.md does not document {missing}"
