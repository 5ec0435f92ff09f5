"""The head and tail graphs of a split model in ONNX Runtime sessions (why not a ``Backend``: see the package)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cliplit.core.contract import META_WEIGHTS_SHA256
from cliplit.core.errors import CliplitError
from cliplit.core.split_contract import (
    FEATURES,
    HEAD_INPUT,
    LIGHT_MAP,
    META_HALO,
    META_SPLIT_PART,
    ORIGIN,
    TAIL_INPUTS,
    pooled_name,
)
from cliplit.runtime.backends.onnxruntime import OnnxRuntimeOptions, default_providers, open_session, session_options


class SplitModel:
    """The head and tail graphs of one model in ONNX Runtime sessions (see the module docstring for why not a
    ``Backend``)."""

    def __init__(
        self,
        head_path: str | os.PathLike[str],
        tail_path: str | os.PathLike[str],
        options: OnnxRuntimeOptions | None = None,
    ) -> None:
        options = options or OnnxRuntimeOptions()
        settings = session_options(options)
        # ONNX Runtime's memory patterns are planned and kept per input shape: with the few tile shapes of a frame
        # they doubled the peak (measured) and saved no time.
        settings.enable_mem_pattern = False
        providers = list(options.providers) if options.providers else _split_providers(options.device)
        # The head's arena is given back after each call so it never sits beside the tail's (which is kept: giving
        # it back cost 7 % more time in page faults, for the head nothing measurable).
        self._head_run = ort.RunOptions()
        self._head_run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.head = open_session(Path(head_path), settings, providers)
        self.tail = open_session(Path(tail_path), settings, providers)
        head_meta = self.head.get_modelmeta().custom_metadata_map
        tail_meta = self.tail.get_modelmeta().custom_metadata_map
        for path, meta, part in ((head_path, head_meta, "head"), (tail_path, tail_meta, "tail")):
            if meta.get(META_SPLIT_PART) != part or not meta.get(META_HALO, "").isdigit():
                raise CliplitError(f"{path} is not the {part} of a cliplit split model")
        if head_meta.get(META_WEIGHTS_SHA256) != tail_meta.get(META_WEIGHTS_SHA256):
            raise CliplitError(f"{head_path} and {tail_path} were exported from different weights")
        inputs = tuple(i.name for i in self.tail.get_inputs())
        if inputs != TAIL_INPUTS:
            raise CliplitError(f"{tail_path} has inputs {inputs}, expected {TAIL_INPUTS}")
        self.weights_sha256 = head_meta.get(META_WEIGHTS_SHA256, "")
        self.head_halo = int(head_meta[META_HALO])
        self.tail_halo = int(tail_meta[META_HALO])

    @property
    def providers(self) -> list[str]:
        return list(self.head.get_providers())

    def features(self, image: np.ndarray) -> np.ndarray:
        """The head: N×3×h×w float RGB → N×C×h×w features."""
        return self.head.run([FEATURES], {HEAD_INPUT: image}, self._head_run)[0]

    def light_map(self, features: np.ndarray, pooled: dict[int, np.ndarray], origin: np.ndarray) -> np.ndarray:
        """The tail: a window's features, the frame's pooled means and the window's origin → N×1×h×w light map."""
        feed = {FEATURES: np.ascontiguousarray(features), ORIGIN: origin}
        feed |= {pooled_name(bins): means for bins, means in pooled.items()}
        return self.tail.run([LIGHT_MAP], feed)[0]


def _split_providers(device: int) -> list[str | tuple[str, dict[str, str]]]:
    return [p for p in default_providers(device) if (p if isinstance(p, str) else p[0]) != "TensorrtExecutionProvider"]
