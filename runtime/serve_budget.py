"""How `cliplit serve` splits one memory budget (--max-memory) between tritonserver, the requests' frames and each
model instance, and how long a drain may take: the sizes are fixed before the server starts, so the budget holds
under any load."""

from __future__ import annotations

from dataclasses import dataclass

from cliplit.core.contract import DEFAULT_MAX_BATCH
from cliplit.core.errors import CliplitError
from cliplit.runtime.memory import available_memory, format_size
from cliplit.runtime.serve_settings import ServeSettings

#: tritonserver's own share: 38 MiB resident with the Python backend loaded and idle (measured on the 2-core CPU
#: machine, PyTriton 0.7's build), with room for its HTTP/gRPC buffers and bookkeeping to grow under load (the copies
#: of the frames themselves are counted in the frames' share)
TRITON_RESERVE = 256 << 20
#: copies of a running request's frames: the received HTTP body, the input in the instance's shared memory, the output
#: there and the response Triton sends back; a queued request holds one (its body)
RUNNING_COPIES = 4
#: share of the budget for the requests' frames (running and queued) when --max-batch or --max-queue is not given
IO_SHARE = 0.25
#: the default --max-batch leaves room for this many queued requests per instance (a queue shorter than the clients
#: turns load into 503s); then the queue grows into what is left of the share, up to MAX_DEFAULT_QUEUE
MIN_DEFAULT_QUEUE = 4
MAX_DEFAULT_QUEUE = 64
#: the drain timeout: twice the estimated time to run a full queue (the estimate is from an uncontended warm-up
#: frame; tiled frames do ~10 % more work), plus this
DRAIN_MARGIN_S = 10.0


@dataclass(frozen=True)
class Budget:
    """How `cliplit serve` splits --max-memory: Triton's share, the queue's, and each instance's."""

    total: int
    parent: int
    triton: int
    #: bytes the requests' frames may take (queued and running), for requests of up to ``max_batch`` frames
    io: int
    max_batch: int
    max_queue: int
    per_instance: int

    def describe(self, instances: int) -> str:
        return (
            f"memory budget {format_size(self.total)}: {format_size(self.per_instance)} per instance × {instances}, "
            f"{format_size(self.io)} for the frames of up to {self.max_queue} queued and {instances} running "
            f"request(s) of up to {self.max_batch} frame(s), {format_size(self.triton + self.parent)} for tritonserver "
            "and this process"
        )


def io_bytes(settings: ServeSettings, max_batch: int, max_queue: int) -> int:
    """The most memory the requests' frames take: RUNNING_COPIES of each instance's batch, one of each queued one."""
    return (settings.instances * RUNNING_COPIES + max_queue) * max_batch * settings.frame_bytes


def plan_budget(settings: ServeSettings, instance_base: int, parent: int) -> Budget:
    """Split the server's budget, or say which option to change when the model cannot run within it.

    ``instance_base``: what one loaded, warmed-up instance holds (measured by the pre-flight); ``parent``: what this
    process holds. Unless given, --max-batch (at most 8, leaving room for MIN_DEFAULT_QUEUE queued requests per
    instance) and then --max-queue (at most 64, at least 1) are the largest whose frames fit IO_SHARE of the budget,
    at their largest (``max_side``²): the budget holds under any load, and a server for 720p cameras gets longer
    queues and batches by saying --max-side 1280.
    """
    if settings.max_memory is not None:
        total = settings.max_memory
    else:
        available = available_memory()
        total = parent + (available // 2 if available is not None else 4 << 30)
    share = int(IO_SHARE * total)
    max_batch = settings.max_batch
    if max_batch is None:
        queue = MIN_DEFAULT_QUEUE * settings.instances
        fitting = [size for size in range(DEFAULT_MAX_BATCH, 0, -1) if io_bytes(settings, size, queue) <= share]
        max_batch = fitting[0] if fitting else 1
    max_queue = settings.max_queue
    if max_queue is None:
        max_queue = 1
        while max_queue < MAX_DEFAULT_QUEUE and io_bytes(settings, max_batch, max_queue + 1) <= share:
            max_queue += 1
    io = io_bytes(settings, max_batch, max_queue)
    per_instance = (total - parent - TRITON_RESERVE - io) // settings.instances
    if per_instance < instance_base * 5 // 4:
        wanted = parent + TRITON_RESERVE + io + settings.instances * instance_base * 5 // 4
        raise CliplitError(
            f"--max-memory {format_size(total)} is too small for this server: one instance holds "
            f"{format_size(instance_base)} loaded, and {settings.instances} instance(s) with a queue of {max_queue} "
            f"request(s) of up to {max_batch} frame(s) of up to {settings.max_side}x{settings.max_side} need at least "
            f"{format_size(wanted)}; raise --max-memory, or lower --max-side, --max-batch, --max-queue or --instances"
        )
    return Budget(total, parent, TRITON_RESERVE, io, max_batch, max_queue, per_instance)


def drain_timeout(settings: ServeSettings, budget: Budget, seconds_per_pixel: float) -> float:
    """Seconds to finish every accepted request after SIGTERM: twice the estimated time to run a full queue and the
    running requests, each at its largest (the frames share the cores, so instances do not divide it)."""
    if settings.drain_timeout_s is not None:
        return settings.drain_timeout_s
    frames = (budget.max_queue + settings.instances) * budget.max_batch
    return DRAIN_MARGIN_S + 2 * frames * settings.max_side * settings.max_side * seconds_per_pixel
