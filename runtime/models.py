"""The models the runtime runs, built from weights without torch and cached: whole, or split for tiled inference.

``cliplit enhance`` without ``--model``, and ``--model`` given weights (a released name, ``clip-lit-rt``, a ``.pth``)
instead of an ONNX file, runs the ONNX model of those weights, built from the shipped graph templates with ONNX and
NumPy only (:mod:`cliplit.core.graphs`: the same graph export-engine writes) and stored under
``$CLIPLIT_HOME/models``, named by the weights' SHA-256: different weights never share a file, the same weights
under any name share one. A released name's digest is known without its file, so a cached model runs offline.

Tiled inference needs the teacher split in two graphs; they are built the same way, from the weights or from any
cliplit ONNX export of the teacher (its initializers carry the weights), and cached by the weights' SHA-256, so an
``.onnx`` file alone tiles with no torch and no download. The student's fast path (:mod:`cliplit.runtime.student_fast`)
needs its 1/4-resolution half, the coefficients graph, built and cached the same way from any float export of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import onnx

from cliplit.core.atomic import atomic_output
from cliplit.core.checkpoint import STUDENT, TEACHER, read_checkpoint
from cliplit.core.contract import GRAPH_REVISIONS, IO_VARIANTS, META_MODEL_NAME, META_TEACHER, META_WEIGHTS_SHA256
from cliplit.core.errors import CliplitError
from cliplit.core.graphs import GraphError, build_coefficients, build_model, build_split, weights_from_model
from cliplit.core.weights import BUNDLED, RELEASED, cliplit_home, resolve_weights, sha256_of


def models_dir() -> Path:
    return cliplit_home() / "models"


def weights_sha256(weights: str | os.PathLike[str]) -> str:
    """The SHA-256 of weights given as a released name (from the registry, no download) or a .pth path."""
    key = str(weights)
    if key in RELEASED:
        return RELEASED[key].sha256
    if key in BUNDLED:
        return BUNDLED[key].sha256
    return sha256_of(resolve_weights(key))


def cached_onnx_path(weights: str | os.PathLike[str] = "clip-lit", io: str = "float") -> Path:
    """Where the ONNX model of ``weights`` (a released name or a .pth path) in I/O variant ``io`` is cached.

    The key is the weights' SHA-256 alone, never their name. A variant whose graph has been revised
    (``GRAPH_REVISIONS``) carries its revision in the name, so a model cached by an older cliplit is made again rather
    than reused."""
    if io not in IO_VARIANTS:
        raise CliplitError(f"unknown I/O variant {io!r}; expected one of {', '.join(IO_VARIANTS)}")
    revision = GRAPH_REVISIONS[io]
    suffix = "" if revision == 1 else f"-r{revision}"
    return models_dir() / f"weights-{weights_sha256(weights)[:16]}-{io}{suffix}.onnx"


def ensure_onnx(weights: str | os.PathLike[str] = "clip-lit", io: str = "float") -> Path:
    """The cached ONNX model of ``weights``, built first (without torch) if it is not there yet."""
    target = cached_onnx_path(weights, io)
    if target.is_file():
        return target
    data = read_checkpoint(weights)
    proto = build_model(data, io)
    _save(proto, target)
    print(f"built the ONNX model of {weights} at {target} (first use only)", file=sys.stderr)
    return target


def cached_split_paths(weights_sha256: str) -> tuple[Path, Path]:
    """Where the head and tail graphs for tiled inference of the weights with this SHA-256 are cached, beside the
    full models. Named by the digest alone, so a model file found anywhere (which records it) finds them."""
    stem = f"tiled-{weights_sha256[:16]}"
    return models_dir() / f"{stem}-head.onnx", models_dir() / f"{stem}-tail.onnx"


def ensure_split(model: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The cached split graphs of the teacher in ``model`` (weights or a cliplit ``.onnx`` export), built first if
    they are not there yet."""
    if Path(model).suffix.lower() == ".onnx":
        proto = onnx.load(str(model))
        meta = {prop.key: prop.value for prop in proto.metadata_props}
        digest, name = meta.get(META_WEIGHTS_SHA256, ""), meta.get(META_MODEL_NAME, Path(model).stem)
        head, tail = cached_split_paths(digest)
        if digest and head.is_file() and tail.is_file():
            return head, tail
        try:
            spec, state = weights_from_model(proto)
        except GraphError as error:
            raise CliplitError(f"cannot split {model} for tiled inference: {error}") from error
        architecture, padding = spec.architecture, spec.padding
    else:
        digest = weights_sha256(model)
        head, tail = cached_split_paths(digest)
        if head.is_file() and tail.is_file():
            return head, tail
        data = read_checkpoint(model)
        architecture, padding, state, name = data.architecture, data.padding, data.state, data.name
    if architecture != TEACHER:
        raise CliplitError(f"{model} is a student, which runs whole frames; only the teacher splits for tiling")
    if not digest:
        raise CliplitError(
            f"{model} records no weights SHA-256 (cliplit.weights_sha256), so its split cannot be cached"
        )
    head_proto, tail_proto = build_split(state, padding, model_name=name, weights_sha256=digest)
    _save(head_proto, head)
    _save(tail_proto, tail)
    return head, tail


#: the revision of the coefficients graph in its cached file's name: a later template makes the file again
COEFFICIENTS_REVISION = 1


def ensure_coefficients(model: str | os.PathLike[str]) -> Path:
    """The cached coefficients graph of the student in ``model`` (a cliplit float ONNX export, such as the one
    :func:`ensure_onnx` builds from weights), built first from the export's own weights if it is not there yet.
    Named by the weights' SHA-256 from the export's metadata; an export without one, or a graph other than the shipped
    student's, is a :class:`GraphError` (the caller runs the whole model instead)."""
    proto = onnx.load(str(model), load_external_data=False)
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    digest, name = meta.get(META_WEIGHTS_SHA256, ""), meta.get(META_MODEL_NAME, Path(model).stem)
    if not digest:
        raise GraphError(f"{model} records no weights SHA-256 (cliplit.weights_sha256)")
    target = models_dir() / f"coefficients-{digest[:16]}-r{COEFFICIENTS_REVISION}.onnx"
    if target.is_file():
        return target
    spec, state = weights_from_model(proto)
    if spec.architecture != STUDENT:
        raise GraphError(f"{model} is not a student; only a student has a coefficients graph")
    _save(build_coefficients(state, model_name=name, weights_sha256=digest), target)
    return target


def fast_path_coefficients(model: Path, io: str, metadata: Mapping[str, str]) -> Path | None:
    """The coefficients graph of a loaded model where the student's fast path applies to it — a distilled student's
    float export (its metadata names the teacher) whose graph cliplit's templates make (four encoder levels, any
    widths) — else None (the whole model runs: the teacher, a uint8 export, a student of another depth or exported
    by another tool). The backends' ``open_coefficients`` ask this, so every engine applies the same rule."""
    if io != "float" or META_TEACHER not in metadata:
        return None
    try:
        return ensure_coefficients(model)
    except GraphError:
        return None


def _save(proto: onnx.ModelProto, target: Path) -> None:
    """Write a model atomically (never a partial file under its name; a concurrent writer's whole file is as good)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        onnx.save(proto, str(tmp))
