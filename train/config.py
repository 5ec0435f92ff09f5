"""Every training option in one dataclass, readable from YAML or TOML and overridable from the command line.

Defaults are the paper's setting (the released training code's numbers). The dataclass is the single source of truth:
the CLI flags, the config-file keys and ``docs/training.md`` all derive from the fields and their ``cli`` metadata, so
an option cannot exist in one place and be missing in another. This module imports no torch.
"""

from __future__ import annotations

import difflib
import types
import typing
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from cliplit.core.cli_settings import setting
from cliplit.core.errors import CliplitError


class ConfigError(CliplitError):
    """An option is unknown, has the wrong type or an invalid value."""


PROMPT_AUGMENT_MODES = ("full", "dihedral", "none")
RANK_ORDERS = ("released", "progressive")
AMP_MODES = ("official", "auto", "on", "off")
CLIP_RESIZES = ("bilinear", "bicubic-antialias")
EXTENSION_TESTS = ("last-loss", "running-mean")
BEST_ENHANCER_RULES = ("official", "running-mean")
STAGE3_PROMPTS = ("latest", "best")
AMP_DTYPES = ("bfloat16", "float16")


@dataclass(frozen=True)
class TrainConfig:
    """All options of ``cliplit train``; see docs/training.md for what each stage does with them."""

    # Data and output.
    backlit: str = setting(
        "", "folder of backlit images (searched recursively); label 0 comes from this folder", metavar="DIR"
    )
    well_lit: str = setting(
        "", "folder of well-lit images (searched recursively); label 1 comes from this folder", metavar="DIR"
    )
    out: str = setting("", "run directory: config, logs, checkpoints, samples and the trained enhancer", metavar="DIR")

    # Models.
    clip_model: str = setting(
        "ViT-B-32", "open_clip model name or model-config JSON for the prompts and CLIP loss", metavar="MODEL"
    )
    clip_pretrained: str = setting(
        "openai", "open_clip tag, local checkpoint file, or 'none' (random weights)", metavar="TAG|FILE|none"
    )
    identity_model: str = setting(
        "RN101", "ResNet open_clip model (name or config JSON) for the identity loss", metavar="MODEL"
    )
    identity_pretrained: str = setting(
        "openai", "open_clip tag, local checkpoint file, or 'none' for the identity model", metavar="TAG|FILE|none"
    )
    clip_cache_dir: str | None = setting(
        None, "where open_clip caches downloaded weights (default: its own cache)", metavar="DIR"
    )
    offline: bool = setting(False, "never download CLIP weights; use only local files and caches", negatable=True)
    init_enhancer: str = setting(
        "clip-lit-init",
        "initial enhancer: 'clip-lit-init' (released), a .pth path, or 'none' (random + warm-up)",
        metavar="NAME|FILE|none",
    )
    init_prompts: str | None = setting(
        None, "initial prompt pair (.pt from a run or the released .pth); skips stage 1", metavar="FILE"
    )
    prompt_length: int = setting(16, "number of placeholder tokens 'X' in each prompt")
    clip_resize: str = setting(
        "bilinear",
        "how images are resized to CLIP's input: 'bilinear' without antialiasing (the official code) or "
        "'bicubic-antialias' (CLIP's own preprocessing)",
        choices=CLIP_RESIZES,
    )

    # Schedule.
    epochs: int | None = setting(
        2000,
        "training length in the official code's epochs: a stage takes ceil(iterations / batches per epoch) of them, "
        "stage 1, stage 2 and each round one more; 'none': no limit (then --rounds decides)",
    )
    rounds: int | None = setting(None, "stop after this many rounds of stages 3 and 4 (default: as --epochs allows)")
    prompt_init_iters: int = setting(8000, "stage 1: prompt initialisation iterations")
    warmup_iters: int = setting(1000, "stage 2: enhancer warm-up iterations (only with --init-enhancer none)")
    warmup_check_iters: int = setting(
        100, "stage 2: after this many iterations of an attempt, check the mean PSNR of the last 30 every iteration"
    )
    warmup_min_psnr: float = setting(
        8.0, "stage 2: re-initialise the enhancer when that mean luma PSNR is below this (dB)"
    )
    warmup_restart_iters: int = setting(100, "stage 2: iterations each re-initialisation adds")
    warmup_max_restarts: int = setting(100, "stage 2: safety limit on re-initialisations (the official code has none)")
    enhance_iters: int = setting(2100, "stage 3: enhancer iterations per round")
    enhance_extend_iters: int = setting(60, "stage 3: iterations added while the loss is above the threshold")
    enhance_extend_above: float = setting(90.0, "stage 3: loss threshold for extending the stage")
    refine_iters: int = setting(1000, "stage 4: prompt refinement iterations per round")
    refine_extend_iters: int = setting(100, "stages 1 and 4: iterations added while the loss is above the threshold")
    refine_extend_above: float = setting(60.0, "stages 1 and 4: loss threshold for extending the stage")
    extension_test: str = setting(
        "last-loss",
        "what the extension thresholds test at a stage's last iteration: 'last-loss' (that batch's loss, as the "
        "official code) or 'running-mean' (the mean of the last --running-loss-window losses)",
        choices=EXTENSION_TESTS,
    )
    max_extensions: int = setting(1000, "safety limit on extensions per stage (the official code has none)")
    best_enhancer: str = setting(
        "official",
        "stage 3's best model (its outputs are the round's results): 'official' (every 20 iterations, the sum of the "
        "last 30 losses / 30) or 'running-mean' (every iteration, the running loss)",
        choices=BEST_ENHANCER_RULES,
    )
    stage3_prompts: str = setting(
        "latest",
        "prompts stage 3 uses: 'latest' (as the official code) or 'best' (lowest running loss in stage 4)",
        choices=STAGE3_PROMPTS,
    )
    running_loss_window: int = setting(20, "iterations averaged into the running loss (logs, best prompts, options)")

    # Sizes.
    batch_size: int = setting(8, "enhancer batch size (stages 2 and 3), per process")
    prompt_batch_size: int = setting(16, "prompt batch size (stages 1 and 4), per process")
    image_size: int = setting(512, "enhancer training images are resized to this square size")
    prompt_image_size: int = setting(256, "prompt training images and the per-round results use this square size")

    # Optimisers.
    prompt_lr: float = setting(5e-6, "Adam learning rate of the prompts")
    prompt_weight_decay: float = setting(1e-3, "Adam weight decay of the prompts")
    enhancer_lr: float = setting(2e-5, "Adam learning rate of the enhancer")
    enhancer_weight_decay: float = setting(1e-3, "Adam weight decay of the enhancer")

    # Losses.
    logit_scale: float = setting(100.0, "prompt logits are this times the cosine similarity")
    clip_loss_weight: float = setting(320.0, "stage 3: weight of the mean P(negative | enhanced)")
    identity_scale: float = setting(25.0, "scale of the identity loss (stages 2 and 3)")
    identity_weight: float = setting(0.9, "stage 3: weight of the (scaled) identity loss")
    warmup_layer_weights: tuple[float, ...] = setting((1.0, 1.0, 1.0, 1.0, 1.0), "stage 2: weights of the 5 stages")
    identity_layer_weights: tuple[float, ...] = setting((1.0, 1.0, 1.0, 1.0, 0.5), "stage 3: weights of the 5 stages")
    rank_loss_weight: float = setting(200.0, "stage 4: weight of the margin ranking loss")
    rank_margin_no_result: float = setting(1.0, "stage 4 without results: margin of s(backlit) > s(well-lit)")
    rank_margin_backlit: float = setting(0.9, "stage 4 with results: margin of s(backlit) over s(well-lit), s(newest)")
    rank_margin_one_result: float = setting(0.2, "stage 4 with one result R: margin of s(R) > s(well-lit)")
    rank_margin_two_results: float = setting(0.1, "stage 4 with two results: margin between results and to well-lit")
    rank_order: str = setting(
        "released",
        "stage 4 with two results: 'released' ranks s(newer) > s(older) as the released code; "
        "'progressive' ranks s(older) > s(newer)",
        choices=RANK_ORDERS,
    )

    # Augmentation.
    prompt_augment: str = setting(
        "full",
        "stages 1 and 4: 'full' (symmetries, zoom, rotation), 'dihedral' (the 8 flip/quarter-turn symmetries only; "
        "image features are computed once and cached, much faster) or 'none' (cached)",
        choices=PROMPT_AUGMENT_MODES,
    )
    enhance_augment: bool = setting(True, "stages 2 and 3: random symmetries, zoom and rotation")
    zoom_prob: float = setting(0.3, "probability of a zoom (after the random symmetry)")
    enhance_zoom: tuple[float, ...] = setting((0.7, 1.3), "stages 2 and 3: zoom factors per axis, uniform in LOW HIGH")
    prompt_zoom: tuple[float, ...] = setting((0.5, 1.5), "stages 1 and 4: zoom factors per axis, uniform in LOW HIGH")
    rotation_prob: float = setting(0.3, "probability of a rotation (after the zoom)")
    max_rotation: float = setting(90.0, "rotations are uniform in [-max_rotation, max_rotation] degrees")

    # Runtime.
    device: str = setting(
        "auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'; torchrun sets one per rank", metavar="DEVICE"
    )
    seed: int = setting(0, "seed of every random choice (data order, augmentation, random initialisations)")
    amp: str = setting(
        "official",
        "precision of the CLIP models: 'official' (on CUDA the identity model in FP16, the CLIP ViT in FP32, as the "
        "official code; FP32 on CPU), or autocast of both: 'auto' (on for CUDA), 'on' or 'off' (FP32)",
        choices=AMP_MODES,
    )
    amp_dtype: str = setting("bfloat16", "mixed-precision type (float16 uses a gradient scaler)", choices=AMP_DTYPES)
    num_workers: int = setting(2, "data-loading worker processes per training process (0: load in the main process)")
    checkpoint_every: int = setting(
        500, "save a resumable checkpoint every this many iterations (and after each stage)"
    )
    log_every: int = setting(10, "write a log row every this many iterations")
    num_samples: int = setting(4, "backlit images shown in the per-round sample sheets")
    max_steps: int | None = setting(
        None, "stop (with a resumable checkpoint) once this many iterations are done in all"
    )
    progress: bool = setting(True, "show progress bars")
    export_padding: str = setting(
        "test",
        "padding recorded in the saved enhancers ('test': reflect, as the released inference runs)",
        choices=("test", "train"),
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly values (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def validate(self) -> TrainConfig:
        """Check every value once, up front, so a bad option fails before any work; returns self."""
        problems = [*_missing(self), *_out_of_range(self), *_not_a_choice(self)]
        if problems:
            raise ConfigError(problems[0])
        return self


_AT_LEAST_ONE = ("prompt_length", "batch_size", "prompt_batch_size", "image_size", "prompt_image_size")
_AT_LEAST_ONE += ("running_loss_window", "checkpoint_every", "log_every")
_NON_NEGATIVE = ("prompt_init_iters", "warmup_iters", "warmup_check_iters", "warmup_max_restarts")
_NON_NEGATIVE += ("warmup_restart_iters", "enhance_iters", "enhance_extend_iters", "refine_iters")
_NON_NEGATIVE += ("refine_extend_iters", "max_extensions", "num_workers", "num_samples")


def _missing(config: TrainConfig) -> Iterator[str]:
    for name in ("backlit", "well_lit", "out"):
        if not getattr(config, name):
            yield f"--{_flag(name)} is required"


def _out_of_range(config: TrainConfig) -> Iterator[str]:
    for name in _AT_LEAST_ONE:
        if getattr(config, name) < 1:
            yield f"{_flag(name)} must be at least 1 (got {getattr(config, name)})"
    for name in _NON_NEGATIVE:
        if getattr(config, name) < 0:
            yield f"{_flag(name)} must not be negative (got {getattr(config, name)})"
    for name in ("warmup_layer_weights", "identity_layer_weights"):
        if len(getattr(config, name)) != 5:
            yield f"{_flag(name)} needs 5 weights (stem, layer1..layer4), got {getattr(config, name)}"
    for name in ("enhance_zoom", "prompt_zoom"):
        low_high = getattr(config, name)
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
            yield f"{_flag(name)} needs LOW HIGH with 0 < LOW <= HIGH, got {low_high}"
    for name in ("zoom_prob", "rotation_prob"):
        if not 0 <= getattr(config, name) <= 1:
            yield f"{_flag(name)} must be a probability in [0, 1] (got {getattr(config, name)})"
    yield from _limits(config)


def _limits(config: TrainConfig) -> Iterator[str]:
    """The run's length: --epochs (at least 1) or --rounds (not negative), at least one of them, and --max-steps."""
    if config.epochs is None and config.rounds is None:
        yield "--epochs none needs --rounds N: the run would never end"
    if config.epochs is not None and config.epochs < 1:
        yield f"epochs must be at least 1 (got {config.epochs})"
    for name in ("rounds", "max_steps"):
        if getattr(config, name) is not None and getattr(config, name) < 0:
            yield f"{_flag(name)} must not be negative (got {getattr(config, name)})"


def _not_a_choice(config: TrainConfig) -> Iterator[str]:
    for item in fields(config):
        choices = item.metadata["cli"].choices
        if choices and getattr(config, item.name) not in choices:
            yield f"{_flag(item.name)} must be one of {', '.join(choices)} (got {getattr(config, item.name)!r})"


# Options that may change when a run is resumed: where the run lives and runs, how fast, how often it reports, and how
# long it goes on -- never what one iteration computes.
RESUMABLE_OVERRIDES = frozenset(
    {"out", "device", "num_workers", "checkpoint_every", "log_every", "progress", "max_steps", "rounds", "epochs"}
)


def resume_config(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> TrainConfig:
    """The saved run's config with the explicitly requested overrides; refuses changes that would alter the run.

    ``max_steps`` belongs to one invocation, so a resumed run only stops early when asked again.
    """
    config = from_mapping({**saved, "max_steps": None})
    wanted = from_mapping(requested, config)
    changed = sorted(
        item.name
        for item in fields(TrainConfig)
        if item.name not in RESUMABLE_OVERRIDES and getattr(wanted, item.name) != getattr(config, item.name)
    )
    if changed:
        raise ConfigError(
            f"cannot change {', '.join(_flag(name) for name in changed)} when resuming; "
            f"only {', '.join(sorted(_flag(name) for name in RESUMABLE_OVERRIDES))} may change"
        )
    return wanted


def _flag(name: str) -> str:
    return name.replace("_", "-")


def coerce(name: str, value: Any) -> Any:
    """Convert a file or CLI value to the field's type, with an error naming the option."""
    kind = typing.get_type_hints(TrainConfig)[name]
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    convert = _to_tuple if typing.get_origin(kind) is tuple else _CONVERTERS.get(kind, str)
    try:
        return convert(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"option {name!r}: cannot use {value!r} ({error})") from None


def _to_tuple(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError("expected a list")
    return tuple(float(v) for v in value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise TypeError("expected true or false")


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError("expected an integer")
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number")
    return float(value)


_CONVERTERS = {bool: _to_bool, int: _to_int, float: _to_float}


# Old option names still read from config files (and the config.yaml of older runs), each with a warning.
RENAMED_OPTIONS = {"export_variant": "export_padding"}


def from_mapping(values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with ``values`` applied; keys may use '-' or '_'."""
    known = {item.name for item in fields(TrainConfig)}
    updates = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key in RENAMED_OPTIONS:
            warnings.warn(
                f"option {raw_key!r} is deprecated; it is now {RENAMED_OPTIONS[key]!r}", FutureWarning, stacklevel=2
            )
            key = RENAMED_OPTIONS[key]
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown option {raw_key!r}{hint}")
        updates[key] = coerce(key, value)
    return replace(base or TrainConfig(), **updates)


def write_config(config: TrainConfig, path: str | Path) -> Path:
    """Save the effective configuration as YAML, atomically."""
    import yaml

    from cliplit.core.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return Path(path)
