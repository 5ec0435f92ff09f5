"""The default model: the released CLIP-LIT weights as an ONNX file in the cache, exported on first use.

``cliplit enhance`` without ``--model`` (and ``--model`` given weights instead of an ONNX file) runs an ONNX export of
those weights stored under ``$CLIPLIT_HOME/models``, named by the weights' SHA-256 so different weights never share a
file and the same weights, whatever their file name, share one. Exporting needs PyTorch (the ``export`` extra); the
lean runtime install has none, so there a missing file is an error that says how to get it, while a cached file is
used without torch (and, for released names, without even the weights file).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cliplit.core.contract import GRAPH_REVISIONS, IO_VARIANTS
from cliplit.core.errors import CliplitError
from cliplit.core.weights import RELEASED, cliplit_home, resolve_weights, sha256_of


def models_dir() -> Path:
    return cliplit_home() / "models"


def cached_onnx_path(weights: str | os.PathLike[str] = "clip-lit", io: str = "float") -> Path:
    """Where the ONNX export of ``weights`` (a released name or a .pth path) in I/O variant ``io`` is cached.

    The key is the weights' SHA-256 alone, never their name: the released file passed as a path, a copy under another
    name and the released name all share one export (a released name's SHA-256 is known without the file, so a
    cached export runs offline). A variant whose graph has been revised (``GRAPH_REVISIONS``) carries its revision
    in the name, so an export cached by an older cliplit is made again rather than reused."""
    if io not in IO_VARIANTS:
        raise CliplitError(f"unknown I/O variant {io!r}; expected one of {', '.join(IO_VARIANTS)}")
    key = str(weights)
    digest = RELEASED[key].sha256 if key in RELEASED else sha256_of(resolve_weights(key))
    revision = GRAPH_REVISIONS[io]
    return models_dir() / f"weights-{digest[:16]}-{io}{'' if revision == 1 else f'-r{revision}'}.onnx"


def ensure_onnx(weights: str | os.PathLike[str] = "clip-lit", io: str = "float") -> Path:
    """Return the cached ONNX export of ``weights``, exporting (and verifying) it first if it is not there yet."""
    target = cached_onnx_path(weights, io)
    if target.is_file():
        return target
    try:
        from cliplit.export.onnx_export import export_onnx
        from cliplit.train.checkpoint import load_enhancer
    except ImportError as error:
        raise CliplitError(
            f"no ONNX model for {weights} at {target}, and exporting one needs PyTorch ({error}). Either install "
            f"the export extra (pip install 'cliplit[export]') and run again, or run `export-engine --weights "
            f"{weights} --io {io} --onnx {target}` where PyTorch is installed and copy the file here, or pass "
            "--model path/to/model.onnx"
        ) from error
    print(f"exporting {weights} to {target} (first use only)", file=sys.stderr)
    export_onnx(load_enhancer(weights), target, io=io, overwrite=True)
    return target


def cached_split_paths(weights_sha256: str) -> tuple[Path, Path]:
    """Where the head and tail graphs for tiled inference (:mod:`cliplit.runtime.tiling`) of the weights with this
    SHA-256 are cached, beside the full models. Named by the digest alone, so an ONNX file found anywhere (which
    records only its weights' SHA-256) finds them."""
    stem = f"tiled-{weights_sha256[:16]}"
    return models_dir() / f"{stem}-head.onnx", models_dir() / f"{stem}-tail.onnx"


def weights_sha256(weights: str | os.PathLike[str]) -> str:
    """The SHA-256 of weights given as a released name (from the registry, no download) or a .pth path."""
    key = str(weights)
    return RELEASED[key].sha256 if key in RELEASED else sha256_of(resolve_weights(key))


def ensure_split_onnx(weights: str | os.PathLike[str] | None, digest: str) -> tuple[Path, Path]:
    """The cached split graphs of the weights with SHA-256 ``digest``, exported (and verified) from ``weights`` first
    if they are not there yet; ``weights`` None means only the cache can serve them."""
    head, tail = cached_split_paths(digest)
    if head.is_file() and tail.is_file():
        return head, tail
    if weights is None:
        raise CliplitError(
            f"tiled inference needs the split model of the weights with SHA-256 {digest[:16]}..., which is not in "
            f"{models_dir()}; pass the weights themselves (--model path/to/weights.pth) so it can be exported"
        )
    try:
        from cliplit.export.tiled_export import export_split_onnx
        from cliplit.train.checkpoint import load_enhancer
    except ImportError as error:
        raise CliplitError(
            f"tiled inference of {weights} needs its split model ({head.name}, {tail.name} in {models_dir()}), and "
            f"exporting it needs PyTorch ({error}). Install the export extra (pip install 'cliplit[export]') and run "
            "again, or copy both files from a machine where a tiled run exported them"
        ) from error
    print(
        f"exporting the split model of {weights} for tiled inference to {models_dir()} (first use only)",
        file=sys.stderr,
    )
    export_split_onnx(load_enhancer(weights), head, tail, overwrite=True)
    return head, tail
