"""What ``cliplit serve`` runs and how Triton exposes it: :class:`ServeSettings`, its defaults stated once (the
command's flags are derived from it)."""

from __future__ import annotations

from dataclasses import dataclass

from cliplit.core.contract import DEFAULT_MODEL_NAME, DEFAULT_QUEUE_DELAY_US
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends import BackendOptions

#: largest frame side served by default: 4096 covers landscape and portrait 4K (3840×2160)
DEFAULT_MAX_SIDE = 4096
#: loopback by default: the endpoints have no authentication, so exposing them is the operator's explicit choice
DEFAULT_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class ServeSettings:
    """What ``cliplit serve`` runs and how Triton exposes it."""

    model: str | None = None
    backend: str | BackendOptions = "auto"
    model_name: str = DEFAULT_MODEL_NAME
    #: most frames per request and per batch; None: 8, or fewer where the budget's I/O share cannot hold 8
    max_batch: int | None = None
    instances: int = 1
    max_side: int = DEFAULT_MAX_SIDE
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    address: str = DEFAULT_ADDRESS
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    #: bytes the whole server (this process, tritonserver and its instances) may hold; None: half the free memory
    max_memory: int | None = None
    #: requests Triton queues beyond those running; more get 503 at once. None: derived from the budget
    max_queue: int | None = None
    #: seconds to finish accepted requests after SIGTERM; None: derived from the queue bound and measured speed
    drain_timeout_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "instances"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CliplitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_queue is not None and self.max_queue < 1:
            raise CliplitError(f"--max-queue must be at least 1, got {self.max_queue}")
        if self.drain_timeout_s is not None and self.drain_timeout_s <= 0:
            raise CliplitError(f"--drain-timeout must be more than 0, got {self.drain_timeout_s:g}")
        if self.queue_delay_us < 0:
            raise CliplitError(f"--queue-delay-us must be at least 0, got {self.queue_delay_us}")
        if self.max_side < 2:
            raise CliplitError(f"--max-side must be at least 2, got {self.max_side}")
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != len(ports) or not all(0 < port < 65536 for port in ports):
            raise CliplitError(f"--http-port, --grpc-port and --metrics-port must be distinct ports, got {ports}")

    @property
    def frame_bytes(self) -> int:
        """The largest frame a request can carry (``max_side``², BGR)."""
        return self.max_side * self.max_side * 3
