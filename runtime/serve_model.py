"""cliplit's own Triton Python-backend model: what runs inside each model instance of `cliplit serve`.

Why a model of our own rather than PyTriton's bound function: PyTriton 0.7 answers any exception of the function
with HTTP 500 carrying its Python traceback, for the whole batch, and its readiness says "ready" before the
function's model is loaded. Triton's Python backend gives each *request* its own response, whose error carries a code
(``INVALID_ARG`` → HTTP 400 / gRPC INVALID_ARGUMENT, ``UNAVAILABLE`` → 503 / UNAVAILABLE), and Triton marks the
model ready only once every instance's ``initialize`` has returned — here, after its Enhancer is loaded and has run
a warm-up frame. The model runs in the instance's stub process (``triton_python_backend_stub``, shipped by
PyTriton), so the enhancer lives where the frames arrive, without PyTriton's extra hop through a second process.

The module imports ``triton_python_backend_utils`` only inside :class:`TritonPythonModel`, so the request handling
(:class:`FrameHandler`) is testable without Triton.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cliplit.core.contract import check_frame_size, io_spec
from cliplit.core.errors import CliplitError
from cliplit.runtime.memory import format_size, resident_memory

WIRE = io_spec("uint8")
INPUT_NAME = WIRE.input_name
OUTPUT_NAME = WIRE.output_names[0]
#: the warm-up frame each instance runs before it reports ready: large enough that its time per pixel is mostly the
#: network's (the drain timeout is derived from it), small enough to take well under a second with the student
WARMUP_SIDE = 256
#: the file, in the server's workspace, where the server tells instances to refuse requests they have not started
REFUSE_FILE = "refuse-unstarted"
#: the file where the server starts a drain: how many more requests the instances may start (JSON ``{"tickets": n}``)
DRAIN_FILE = "drain"


class BadRequestError(CliplitError, ValueError):
    """A request the server cannot enhance (the client's fault); its one-line message goes back as a 400."""


class UnavailableError(CliplitError):
    """A request the server will not start now (it is stopping); a 503, the client may retry elsewhere."""


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


@dataclass(frozen=True)
class InstanceConfig:
    """What one model instance needs, passed from `cliplit serve` through the model's config parameters."""

    model: str | None
    backend: str
    backend_options: dict[str, Any]
    #: bytes this instance's process may hold (its share of --max-memory)
    budget: int
    max_side: int
    workspace: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> InstanceConfig:
        return cls(**json.loads(text))


def open_enhancer(config: InstanceConfig) -> Any:
    """The instance's Enhancer, within its budget (teacher frames above it run tiled, as `cliplit enhance` does)."""
    from cliplit.runtime.backends import options_for
    from cliplit.runtime.enhancer import Enhancer

    options = options_for(config.backend, **config.backend_options)
    return Enhancer.open(config.model, options, max_memory=config.budget)


def warm_up(enhancer: Any) -> float:
    """Run one WARMUP_SIDE² frame (ONNX Runtime plans its kernels on the first call) and return seconds per pixel."""
    frame = np.random.default_rng(0).integers(0, 256, (WARMUP_SIDE, WARMUP_SIDE, 3), dtype=np.uint8)
    enhancer.enhance(frame)  # the first call pays for kernel selection and arena growth
    start = time.perf_counter()
    enhancer.enhance(frame)
    return (time.perf_counter() - start) / (WARMUP_SIDE * WARMUP_SIDE)


class Drain:
    """What the instances share about a drain, in the server's workspace (they are separate processes).

    On SIGTERM, Triton closes its listeners but keeps serving requests that arrive on connections already open
    (keep-alive clients), so "stop accepting" must happen here: `cliplit serve` writes the number of requests Triton
    holds at that moment (with a batch per instance of slack, since one may be between the queue and an instance) as
    tickets, each instance takes a ticket per request it starts, and requests without one get a 503. Each instance
    also marks itself busy while it runs frames, so the server knows when the accepted work is done.
    """

    def __init__(self, workspace: Path, name: str) -> None:
        self.file = workspace / DRAIN_FILE
        self.refuse = workspace / REFUSE_FILE
        self.busy = workspace / f"busy-{name}"

    def admit(self, count: int) -> int:
        """How many of ``count`` requests may start now (all of them unless a drain is on)."""
        if self.refuse.exists():
            return 0
        if not self.file.exists():
            return count
        with self.file.open("r+") as state:
            fcntl.flock(state, fcntl.LOCK_EX)
            tickets = json.loads(state.read() or "{}").get("tickets", 0)
            taken = min(tickets, count)
            state.seek(0)
            state.truncate()
            state.write(json.dumps({"tickets": tickets - taken}))
        return taken


class FrameHandler:
    """Enhances the requests Triton hands one instance, each answered on its own: frames or a one-line error.

    Batches are formed within the instance's memory budget: the requests' frames are grouped by size, and each
    group runs in chunks of as many frames as fit untiled beside what the process already holds; a frame that does
    not fit alone runs by itself, tiled (the teacher) exactly as `cliplit enhance --max-memory` does, or is refused
    with a 400 when even that cannot fit (a student has no split, so it runs whole frames or none).
    """

    def __init__(
        self,
        enhancer: Any,
        max_side: int,
        budget: int,
        admit: Callable[[int], int] = lambda count: count,
        held: Callable[[], int] = resident_memory,
    ) -> None:
        self.enhancer = enhancer
        self.max_side = max_side
        self.budget = budget
        self.admit = admit
        self.held = held
        tiling = enhancer.tiling
        #: peak bytes per pixel of one untiled frame; None where the budget does not apply (TensorRT engines)
        self.bytes_per_pixel: int | None = None if tiling is None else tiling.untiled_bytes_per_pixel
        self.can_tile = tiling is not None and tiling._load is not None

    def __call__(self, requests: Sequence[np.ndarray]) -> list[np.ndarray | CliplitError]:
        """Each request's enhanced frames, or the error that request gets (BadRequestError, UnavailableError, or a
        CliplitError for a server fault); never raises for a bad request, so one never fails another."""
        results: list[np.ndarray | CliplitError | None] = [None] * len(requests)
        admitted = self.admit(len(requests))  # Triton hands requests over in arrival order: the oldest go first
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, frames in enumerate(requests):
            if index >= admitted:
                results[index] = UnavailableError("the server is stopping (draining); retry on another server")
                continue
            try:
                check_frames(frames, self.max_side)
                self.check_budget(*frames.shape[1:3])
            except BadRequestError as error:
                results[index] = error
                continue
            by_size.setdefault(frames.shape[1:3], []).append(index)
        for (height, width), indices in by_size.items():
            frames = [frame for i in indices for frame in requests[i]]
            try:
                enhanced = self.enhance(frames, height, width)
            except BadRequestError as error:
                for i in indices:
                    results[i] = error
                continue
            start = 0
            for i in indices:
                stop = start + len(requests[i])
                results[i] = np.stack(enhanced[start:stop])
                start = stop
        assert all(result is not None for result in results)  # every request was answered above
        return results  # type: ignore[return-value]

    def check_budget(self, height: int, width: int) -> None:
        """A frame no budget-respecting run can take is the client's error: a student frame whose untiled peak
        exceeds the budget (students have no split), or a teacher frame that even the smallest tiles cannot fit."""
        if self.bytes_per_pixel is None or self.can_tile:
            return
        needed = self.held() + self.bytes_per_pixel * height * width
        if needed > self.budget:
            raise BadRequestError(
                f"frame of {width}x{height} pixels is too large for this server's memory budget: it needs about "
                f"{format_size(needed)} per instance, the budget allows {format_size(self.budget)} "
                "(cliplit serve --max-memory, --instances)"
            )

    def chunk(self, height: int, width: int) -> int:
        """How many frames of this size run untiled in one call within the budget (at least 1)."""
        if self.bytes_per_pixel is None:
            return sys.maxsize
        room = self.budget - self.held()
        return max(1, room // (self.bytes_per_pixel * height * width))

    def enhance(self, frames: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
        step = self.chunk(height, width)
        enhanced: list[np.ndarray] = []
        for start in range(0, len(frames), step):
            try:
                enhanced += self.enhancer.enhance_batch(frames[start : start + step])
            except CliplitError as error:  # the tiling's "budget too small for these frames" names the frame
                if "too small for" in str(error) or "more than the memory budget" in str(error):
                    raise BadRequestError(str(error).splitlines()[0]) from None
                raise
        return enhanced


class TritonPythonModel:
    """Triton's entry point (``model.py`` in the repository that `cliplit serve` writes imports this class)."""

    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        config = InstanceConfig.from_json(parameters["cliplit"]["string_value"])
        self.name = args["model_instance_name"]
        self.enhancer = open_enhancer(config)
        seconds_per_pixel = warm_up(self.enhancer)
        workspace = Path(config.workspace)
        self.drain = Drain(workspace, self.name)
        self.handler = FrameHandler(self.enhancer, config.max_side, config.budget, admit=self.drain.admit)
        # read by `cliplit serve` once the server is ready: the drain timeout and the memory check come from it
        report = {"seconds_per_pixel": seconds_per_pixel, "resident": resident_memory()}
        (workspace / f"instance-{self.name}.json").write_text(json.dumps(report))
        print(f"{self.name}: {self.enhancer.describe()}", file=sys.stderr, flush=True)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        frames = [pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy() for request in requests]
        self.drain.busy.touch()
        try:
            results = self.handler(frames)
        except Exception:  # a server fault: the traceback goes to the server's log, the client gets one line
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            results = [CliplitError("internal server error while enhancing (the server's log has the details)")]
            results *= len(requests)
        finally:
            self.drain.busy.unlink(missing_ok=True)
        responses = []
        for result in results:
            if isinstance(result, np.ndarray):
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT_NAME, result)]))
                continue
            code = pb_utils.TritonError.INTERNAL
            if isinstance(result, BadRequestError):
                code = pb_utils.TritonError.INVALID_ARG
            elif isinstance(result, UnavailableError):
                code = pb_utils.TritonError.UNAVAILABLE
            message = str(result).strip().splitlines()[0] if str(result).strip() else type(result).__name__
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)))
        return responses

    def finalize(self) -> None:
        self.enhancer.close()


def model_file_text(paths: Sequence[str]) -> str:
    """The ``model.py`` written into the repository: Triton loads a file, the code stays in cliplit. It puts
    ``paths`` (the server's module path) first, so every instance imports the cliplit, NumPy and backends that
    `cliplit serve` does, whatever the stub's interpreter would find by itself."""
    return (
        "import sys\n\n"
        f"sys.path[:0] = [path for path in {list(paths)!r} if path not in sys.path]\n"
        "from cliplit.runtime.serve_model import TritonPythonModel  # noqa: E402, F401\n"
    )


if __name__ == "__main__":  # pragma: no cover - `cliplit serve`'s pre-flight, in a child process
    # Load the model once before Triton starts (building it from weights if need be, so the instances do not race to
    # export it), warm it up and report the time per pixel and the memory one instance holds, as JSON on stdout.
    preflight = InstanceConfig.from_json(sys.argv[1])
    try:
        with open_enhancer(preflight) as enhancer:
            per_pixel = warm_up(enhancer)
            print(json.dumps({"seconds_per_pixel": per_pixel, "resident": resident_memory()}))
    except CliplitError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    os._exit(0)
