"""Serve the enhancer on NVIDIA Triton Inference Server, through PyTriton.

We do not write a server: PyTriton ships a real ``tritonserver`` whose Python backend forwards each batch to a
function bound in this process, so Triton does what it is built for — HTTP and gRPC endpoints, dynamic batching
across clients, several model instances, health/readiness, Prometheus metrics, graceful shutdown — and the function
runs any cliplit backend through the :class:`~cliplit.runtime.enhancer.Enhancer`, with its pre- and post-processing.

The wire format is the ``uint8`` contract whatever the served model's own I/O: input ``frame`` N×H×W×3 uint8 BGR,
output ``enhanced`` of the same shape. One request holds frames of one size (a tensor has one shape); N ≤
``max_batch``.

Frames of different sizes cannot share a batch, since Triton batches along the first dimension. Triton's dynamic
batcher already knows this: for an input with variable dimensions that does not allow ragged batches it only puts
requests of identical shape into one batch. The bound function still groups the requests it gets by size (cheap,
and correct even if a batch ever mixed sizes), rather than padding frames (which would change the light map near the
borders) or declaring ragged inputs (which would hand it flattened bytes to cut apart). The same rule makes
shape-based validation safe: PyTriton answers a failing function with one error for its whole batch, and a batch of
one shape holds only requests that are all valid or all invalid, so a bad request never fails a good one.

Triton itself rejects a wrong dtype, rank or channel count before the function runs, with its own message; the
function rejects frames below :data:`~cliplit.core.contract.MIN_SIDE` or above the configured maximum side.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from cliplit.core.contract import check_frame_size, io_spec
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends import BackendOptions
from cliplit.runtime.enhancer import Enhancer

DEFAULT_MODEL_NAME = "clip_lit"
#: largest frame side served by default: 4096 covers landscape and portrait 4K (3840×2160)
DEFAULT_MAX_SIDE = 4096
#: how long Triton holds a request to batch it with others: 2 ms is small beside one frame's inference
DEFAULT_QUEUE_DELAY_US = 2000
WIRE = io_spec("uint8")
INPUT_NAME = WIRE.input_name
OUTPUT_NAME = WIRE.output_names[0]
INSTALL_HINT = "pip install 'cliplit[serve]'"
START_ATTEMPTS = 3


@dataclass(frozen=True)
class ServeSettings:
    """What ``cliplit serve`` runs and how Triton exposes it."""

    model: str | None = None
    backend: str | BackendOptions = "auto"
    model_name: str = DEFAULT_MODEL_NAME
    max_batch: int = 8
    instances: int = 1
    max_side: int = DEFAULT_MAX_SIDE
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    address: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    #: seconds Triton waits for in-flight requests when asked to stop
    exit_timeout_s: int = 30

    def __post_init__(self) -> None:
        for name in ("max_batch", "instances", "exit_timeout_s"):
            if getattr(self, name) < 1:
                raise CliplitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.queue_delay_us < 0:
            raise CliplitError(f"--queue-delay-us must be at least 0, got {self.queue_delay_us}")
        if self.max_side < 2:
            raise CliplitError(f"--max-side must be at least 2, got {self.max_side}")
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != len(ports) or not all(0 < port < 65536 for port in ports):
            raise CliplitError(f"--http-port, --grpc-port and --metrics-port must be distinct ports, got {ports}")


class BadRequestError(CliplitError, ValueError):
    """A request the server cannot enhance; its message goes back to the client."""


def check_frames(frames: np.ndarray, max_side: int) -> None:
    """Reject anything but N×H×W×3 uint8 frames with both sides in [MIN_SIDE, max_side], saying what is wrong."""
    if frames.dtype != np.uint8:
        raise BadRequestError(f"'{INPUT_NAME}' must be uint8 BGR frames, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise BadRequestError(f"'{INPUT_NAME}' must be N×H×W×3 (BGR), got shape {tuple(frames.shape)}")
    height, width = frames.shape[1:3]
    try:
        check_frame_size(height, width)
    except CliplitError as error:
        raise BadRequestError(str(error)) from None
    if max(height, width) > max_side:
        raise BadRequestError(
            f"frame of {width}x{height} pixels is too large: this server takes sides up to {max_side} "
            "(cliplit serve --max-side)"
        )


class FrameHandler:
    """The function bound to one Triton model instance: owns one Enhancer (they are not thread-safe)."""

    def __init__(self, enhancer: Enhancer, max_side: int) -> None:
        self.enhancer = enhancer
        self.max_side = max_side

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Enhance every request's frames, batching requests of one size together; responses in request order."""
        frames = [np.asarray(request[INPUT_NAME]) for request in requests]
        for batch in frames:
            check_frames(batch, self.max_side)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, batch in enumerate(frames):
            by_size.setdefault(batch.shape[1:3], []).append(index)
        responses: list[dict[str, np.ndarray]] = [{} for _ in frames]
        for indices in by_size.values():
            enhanced = self.enhancer.enhance_batch([frame for i in indices for frame in frames[i]])
            start = 0
            for i in indices:
                stop = start + len(frames[i])
                responses[i] = {OUTPUT_NAME: np.stack(enhanced[start:stop])}
                start = stop
        return responses


def stub_library_path(environ: Mapping[str, str]) -> str:
    """``LD_LIBRARY_PATH`` for tritonserver with this interpreter's libpython first.

    The Python backend's stub links against ``libpython3.X.so``; without this it can load the system's copy, whose
    patch release need not match this interpreter's standard library (seen here: a 3.11.2 library under a 3.11.7
    stdlib fails with "'_thread.RLock' object has no attribute '_recursion_count'"). PyTriton passes our environment
    on to tritonserver.
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [path for path in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if path]
    if libdir and libdir not in paths:
        paths.insert(0, libdir)
    return os.pathsep.join(paths)


def serve(settings: ServeSettings) -> None:
    """Load ``settings.instances`` enhancers, start Triton and serve until SIGINT or SIGTERM, then stop gracefully:
    Triton stops accepting requests, finishes those in flight (up to ``exit_timeout_s``), and this returns."""
    _check_pytriton()
    _check_ports_free(settings)
    os.environ["LD_LIBRARY_PATH"] = stub_library_path(os.environ)
    with ExitStack() as stack:
        handlers = []
        for _ in range(settings.instances):
            enhancer = stack.enter_context(Enhancer.open(settings.model, settings.backend))
            handlers.append(FrameHandler(enhancer, settings.max_side))
        print(f"enhancer: {handlers[0].enhancer.describe()} × {settings.instances} instance(s)", file=sys.stderr)
        # PyTriton's serve() stops Triton gracefully on KeyboardInterrupt; SIGTERM (docker stop, Kubernetes) gets
        # the same treatment.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        stack.callback(signal.signal, signal.SIGTERM, previous)
        triton = _start(settings, handlers)
        stack.callback(triton.stop)
        exit_codes: list[int] = []
        # PyTriton has no public hook for tritonserver's exit status; its TritonServer offers register_on_exit
        triton._triton_server.register_on_exit(lambda _success, code: exit_codes.append(code))
        host = "127.0.0.1" if settings.address == "0.0.0.0" else settings.address
        print(
            f"serving model '{settings.model_name}' at http://{host}:{settings.http_port} "
            f"(gRPC {host}:{settings.grpc_port}, metrics http://{host}:{settings.metrics_port}/metrics); "
            "Ctrl-C or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        triton.serve()
    if exit_codes and exit_codes[-1] != 0:
        raise CliplitError(
            f"Triton did not stop cleanly (exit code {exit_codes[-1]}): --exit-timeout ({settings.exit_timeout_s} s) "
            "ran out while it waited for open connections, requests in flight or the model to unload (its log above "
            "says which); requests still open then were dropped"
        )
    print("server stopped", file=sys.stderr)


def _check_pytriton() -> None:
    try:
        import pytriton  # noqa: F401
    except ImportError as error:
        raise CliplitError(f"cliplit serve needs PyTriton ({error}); install it with {INSTALL_HINT}") from error
    if int(np.__version__.split(".")[0]) >= 2:
        # PyTriton 0.7 requires numpy<2 and means it: under NumPy 2 its Python backend stub answers every request
        # with an empty output tensor (measured), which clients see as a reshape error, not as the cause.
        raise CliplitError(
            f"cliplit serve needs NumPy < 2 for PyTriton's Python backend (this is NumPy {np.__version__}); "
            f"install with {INSTALL_HINT}, which pins it"
        )


def _check_ports_free(settings: ServeSettings) -> None:
    """Fail at once, naming the port, when one is taken (Triton would fail later, after the models are loaded)."""
    ports = {
        "--http-port": settings.http_port,
        "--grpc-port": settings.grpc_port,
        "--metrics-port": settings.metrics_port,
    }
    for option, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "taken"
            try:
                probe.bind((settings.address, port))
            except OSError as error:
                raise CliplitError(
                    f"{option} {port}: cannot listen on {settings.address}:{port} ({error.strerror})"
                ) from None


def _start(settings: ServeSettings, handlers: list[FrameHandler]) -> Any:
    """A running ``pytriton.triton.Triton`` with the model bound and loaded.

    Loading is retried: PyTriton's second and later instances wait only one second for the first one's handshake
    socket, which a loaded machine misses now and then (seen here at load average 13 on 2 cores), and the whole load
    then fails.
    """
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.server import triton_server
    from pytriton.triton import Triton, TritonConfig

    # PyTriton kills tritonserver SERVER_OUTPUT_TIMEOUT_SECS (30) after asking it to stop, whatever Triton's own exit
    # timeout; give Triton its whole --exit-timeout to finish the requests in flight, plus time to unload.
    triton_server.SERVER_OUTPUT_TIMEOUT_SECS = max(
        triton_server.SERVER_OUTPUT_TIMEOUT_SECS, settings.exit_timeout_s + 15
    )

    config = TritonConfig(
        http_address=settings.address,
        http_port=settings.http_port,
        grpc_address=settings.address,
        grpc_port=settings.grpc_port,
        metrics_address=settings.address,
        metrics_port=settings.metrics_port,
        exit_timeout_secs=settings.exit_timeout_s,
    )
    model_config = ModelConfig(
        max_batch_size=settings.max_batch,
        batcher=DynamicBatcher(max_queue_delay_microseconds=settings.queue_delay_us),
    )
    frames = Tensor(name=INPUT_NAME, dtype=np.uint8, shape=(-1, -1, 3))
    enhanced = Tensor(name=OUTPUT_NAME, dtype=np.uint8, shape=(-1, -1, 3))
    attempt = 1
    while True:
        triton = Triton(config=config)
        triton.bind(settings.model_name, handlers, [frames], [enhanced], config=model_config, strict=True)
        try:
            triton.run()
            return triton
        except Exception as error:  # tritonclient's InferenceServerException, PyTriton's errors, TimeoutError
            triton.stop()
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if attempt == START_ATTEMPTS:
                raise CliplitError(f"Triton did not start after {attempt} attempts: {reason}") from error
            print(f"Triton did not start ({reason}); retrying ({attempt}/{START_ATTEMPTS})", file=sys.stderr)
            attempt += 1
