"""The ONNX Runtime backend: any exported cliplit model, on the best execution provider this install has.

Providers are tried in the order TensorRT → CUDA → CPU, keeping those the installed onnxruntime package offers
(``onnxruntime`` has only the CPU one, ``onnxruntime-gpu`` adds CUDA and TensorRT). ONNX Runtime itself falls back to
the next provider if one fails to initialise (for example TensorRT libraries missing), so a GPU package on a machine
without the libraries still runs. The model's I/O variant comes from its ``cliplit.io`` metadata, written by the
exporter, never from guessing at tensor shapes.

For a distilled student, ``submit`` runs each batch on one of two worker threads (ONNX Runtime sessions take
concurrent ``run`` calls and release the GIL), so the pipeline's next frame starts while the last one finishes: the
student's operators leave cores idle between them (small maps at coarse levels, memory-bound passes), which the other
frame fills. Measured on the 2-core CPU, 720p video: 18.6-19.2 fps against 16.5 run one at a time. The teacher runs
one batch at a time: its convolutions already keep every core busy, and two frames at once would double its memory
(about 1.7 kB per pixel), which the runtime's memory budget counts once. ``OnnxRuntimeOptions.overlap`` overrides.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from cliplit.core.contract import IO_VARIANTS, META_IO, META_OUTPUTS, META_TEACHER, io_spec, outputs_from_metadata
from cliplit.core.errors import CliplitError
from cliplit.core.weights import cliplit_home
from cliplit.runtime.backends.base import Backend, BackendOptions, CoefficientsRunner, Completed, Unsupported

#: execution providers in order of preference; only those the installed package offers are used
PREFERRED_PROVIDERS: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model, read with ONNX Runtime (the runtime does not need the onnx package).

    The session is built without graph optimisations, which a metadata read does not need: a third of the time
    (15 against 50 ms for the teacher), paid at start-up each time ``auto`` looks for a student's teacher tag."""
    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return open_session(Path(path), settings, ["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map


def default_providers(device: int = 0) -> list[str | tuple[str, dict[str, str]]]:
    """The preferred providers this onnxruntime build offers, with the GPU ones pinned to ``device``.

    TensorRT gets an engine cache under ``$CLIPLIT_HOME/ort-tensorrt-cache``: building its engine takes minutes, and
    without the cache every run would build it again.
    """
    available = set(ort.get_available_providers())
    providers: list[str | tuple[str, dict[str, str]]] = []
    for name in PREFERRED_PROVIDERS:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = cliplit_home() / "ort-tensorrt-cache"
            options = {"device_id": str(device), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
            providers.append((name, options))
        elif name == "CUDAExecutionProvider":
            providers.append((name, {"device_id": str(device)}))
        else:
            providers.append(name)
    return providers


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    """``threads``: intra-op threads (default: one per core); ``device``: GPU index for the CUDA/TensorRT providers;
    ``providers``: overrides the TensorRT → CUDA → CPU preference; ``spin_wait``: let idle worker threads spin for
    the next operator (ONNX Runtime's default) instead of sleeping; ``overlap``: batches ``submit`` runs at once
    (default: 2 for a distilled student, 1 for the teacher; see the module docstring).

    Spinning is off by default because the runtime never runs inference alone: decoding and encoding threads (and
    the server's other instances) need the cores that spinning workers hold between operators and between frames.
    Measured on the 2-core CPU, 720p video through the real-time student: 20-21 fps without spinning, 18-19 with
    it; for the teacher alone spinning saved 1.5 % (docs/benchmarks.md).
    """

    backend = "onnxruntime"
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "precision": Unsupported("ONNX Runtime runs FP32 (--precision chooses OpenVINO's)", "fp32")
    }
    threads: int | None = None
    device: int = 0
    providers: tuple[str | tuple[str, dict[str, str]], ...] | None = None
    spin_wait: bool = False
    overlap: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise CliplitError(f"--threads must be at least 1, got {self.threads}")
        if self.overlap is not None and self.overlap < 1:
            raise CliplitError(f"overlap must be at least 1 batch, got {self.overlap}")


STUDENT_OVERLAP = 2  # a student's batches run at once by submit(); 3 gained nothing measurable on 2 cores


@dataclass(frozen=True)
class Running:
    """The handle of a submitted batch: its run on a worker thread."""

    future: Future


class OnnxRuntimeBackend(Backend):
    """An exported cliplit model in an ONNX Runtime session."""

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike[str], options: OnnxRuntimeOptions | None = None) -> None:
        options = options or OnnxRuntimeOptions()
        path = Path(model_path)
        providers = list(options.providers) if options.providers else default_providers(options.device)
        self.session = open_session(path, session_options(options), providers)
        metadata = self.session.get_modelmeta().custom_metadata_map
        io = metadata.get(META_IO)
        if io not in IO_VARIANTS:
            raise CliplitError(
                f"{path} has no valid '{META_IO}' metadata ({io!r}): it was not exported by cliplit. Export it with "
                "`export-engine --onnx` so the runtime knows its input layout"
            )
        try:
            recorded = outputs_from_metadata(io, metadata)
        except CliplitError as error:
            raise CliplitError(f"{path} says io={io} but its '{META_OUTPUTS}' metadata does not fit: {error}") from None
        super().__init__(io, recorded)
        self.model_path = path
        self.metadata = dict(metadata)
        spec = io_spec(io, recorded)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [spec.input_name] or not set(spec.output_names) <= set(outputs):
            raise CliplitError(
                f"{path} says io={io} with outputs {list(spec.output_names)} but has inputs {inputs} and outputs "
                f"{outputs}; expected input {spec.input_name!r}. A model edited by hand keeps metadata that no longer "
                "fits: export it with `export-engine --outputs ...` instead"
            )
        self._input_name = spec.input_name
        self._output_names = list(spec.output_names)
        self.options = options
        self.overlap = options.overlap or (STUDENT_OVERLAP if META_TEACHER in metadata else 1)
        self._workers: ThreadPoolExecutor | None = None  # started by the first overlapping submit()

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, best first."""
        return list(self.session.get_providers())

    def describe(self) -> str:
        return f"{self.name} ({'/'.join(p.removesuffix('ExecutionProvider') for p in self.providers)})"

    def details(self) -> dict[str, Any]:
        return {"providers": self.providers}

    def open_coefficients(self) -> CoefficientsRunner | None:
        """A student's coefficients graph in a second session with this one's settings, on the CPU provider only (on
        a GPU the whole model is one launch, and the fast path's OpenCV passes would run on the CPU)."""
        from cliplit.core.graphs import COEFFICIENTS_INPUT, COEFFICIENTS_OUTPUT  # these load the onnx package
        from cliplit.runtime.models import fast_path_coefficients

        if self.providers != ["CPUExecutionProvider"]:
            return None
        path = fast_path_coefficients(self.model_path, self.io, self.metadata)
        if path is None:
            return None
        session = open_session(path, session_options(self.options), ["CPUExecutionProvider"])
        return lambda batch: session.run([COEFFICIENTS_OUTPUT], {COEFFICIENTS_INPUT: batch})[0]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(self._output_names, {self._input_name: batch})
        return dict(zip(self._output_names, outputs, strict=True))

    def submit(self, batch: np.ndarray) -> Running | Completed:
        """Start ``batch`` on a worker thread and return at once (``overlap`` batches run together), or run it now
        when ``overlap`` is 1."""
        if self.overlap == 1:
            return super().submit(batch)
        if self._workers is None:
            self._workers = ThreadPoolExecutor(self.overlap, thread_name_prefix="cliplit-onnxruntime")
        return Running(self._workers.submit(self.run, batch))

    def wait(self, handle: object) -> dict[str, np.ndarray]:
        """The outputs of a submitted batch; an error of its run is raised here."""
        if isinstance(handle, Completed):
            return super().wait(handle)
        if not isinstance(handle, Running):
            raise TypeError(f"{type(self).__name__}.wait() got {type(handle).__name__}, not one of its handles")
        return handle.future.result()

    def close(self) -> None:
        """Let submitted batches finish, then stop the worker threads."""
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None


def session_options(options: OnnxRuntimeOptions) -> ort.SessionOptions:
    """ONNX Runtime's session settings for ``options`` (threads, spinning), shared by every session cliplit opens."""
    settings = ort.SessionOptions()
    if options.threads is not None:
        settings.intra_op_num_threads = options.threads
        settings.inter_op_num_threads = 1
    if not options.spin_wait:
        settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
        settings.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return settings


def open_session(
    path: Path, options: ort.SessionOptions, providers: list[str | tuple[str, dict[str, str]]]
) -> ort.InferenceSession:
    """An inference session of the model at ``path``, or a clear error (missing file, unreadable model)."""
    if not path.is_file():
        raise CliplitError(f"{path}: no such ONNX model")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ONNX Runtime's InvalidProtobuf, InvalidGraph, Fail... derive from Exception only
        raise CliplitError(f"{path}: ONNX Runtime cannot load this model ({error})") from error
