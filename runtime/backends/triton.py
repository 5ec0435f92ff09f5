"""The Triton client backend: the model runs on a Triton Inference Server, addressed as ``triton://host:port/model``.

``triton://`` speaks HTTP (Triton's port 8000 by default), ``triton+grpc://`` gRPC (8001). The server can be
``cliplit serve`` or a stock Triton serving a repository from ``export-engine --triton-repo``; the backend asks the
server for the model's input name and so learns its I/O variant of the contract (``frame`` → ``uint8``, ``image`` →
``float``), exactly as the ONNX Runtime backend reads it from the model file. The enhancer around it is unchanged, so
``cliplit enhance --model triton://...`` keeps the whole pipeline: frame order, audio, progress.

``submit`` sends a batch from a small thread pool and returns a future, so ``in_flight`` requests overlap (the
pipeline keeps two batches in flight; several clients' requests meet in the server's dynamic batcher). Each pool
thread has its own client: tritonclient's clients are not meant to be shared across threads. Batches larger than the
server's ``max_batch_size`` are split into several requests. Only ``tritonclient`` is needed on the client, not
PyTriton: a camera box does not need the server's binaries.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np

from cliplit.core.contract import IO_SPECS
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.base import Backend, BackendOptions, Unsupported

PROTOCOLS = {"triton": "http", "triton+grpc": "grpc"}


@dataclass(frozen=True)
class TritonOptions(BackendOptions):
    """``timeout``: seconds to connect and for each request; ``in_flight``: requests a client keeps open at once."""

    backend = "triton"
    unsupported: ClassVar[dict[str, Unsupported]] = {
        name: Unsupported(f"the model runs on a Triton server, which chooses its own {what}")
        for name, what in (("threads", "CPU threads"), ("device", "GPU"), ("precision", "precision"))
    }
    timeout: float = 60.0
    in_flight: int = 4

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise CliplitError(f"the Triton timeout must be positive, got {self.timeout}")
        if self.in_flight < 1:
            raise CliplitError(f"in_flight must be at least 1, got {self.in_flight}")


@dataclass(frozen=True)
class ServerModel:
    """Where a model lives: protocol ("http" or "grpc"), host:port and model name."""

    protocol: str
    address: str
    name: str


def parse_model_url(url: str) -> ServerModel:
    """``triton://host:port/model`` (HTTP) or ``triton+grpc://host:port/model`` (gRPC), or a clear error."""
    parts = urlsplit(url)
    name = parts.path.strip("/")
    if parts.scheme not in PROTOCOLS or not parts.hostname or not parts.port or not name or "/" in name:
        raise CliplitError(
            f"{url!r} is not a Triton model URL; expected triton://HOST:PORT/MODEL (HTTP) or "
            "triton+grpc://HOST:PORT/MODEL (gRPC), e.g. triton://127.0.0.1:8000/clip_lit"
        )
    return ServerModel(PROTOCOLS[parts.scheme], parts.netloc, name)


class TritonBackend(Backend):
    """A model on a Triton server; ``run`` and ``submit`` send N×... batches in the model's contract layout."""

    name = "triton"

    def __init__(self, model_path: str, options: TritonOptions | None = None) -> None:
        self.options = options or TritonOptions()
        self.server = parse_model_url(str(model_path))
        self._client_module = _client_module(self.server.protocol)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        metadata, config = self._describe_model()
        inputs = [tensor["name"] for tensor in metadata.get("inputs", [])]
        matches = [io for io, spec in IO_SPECS.items() if inputs == [spec.input_name]]
        if not matches:
            raise CliplitError(
                f"{model_path} has inputs {inputs}: not a cliplit model (expected 'frame' for uint8 or 'image' for "
                "float I/O)"
            )
        super().__init__(matches[0])
        self._output_names = list(IO_SPECS[self.io].output_names)
        self.max_batch = int(config.get("max_batch_size", 0))
        if self.max_batch < 1:
            raise CliplitError(f"{model_path} does not batch (max_batch_size 0); cliplit sends N×... batches")
        self._pool = ThreadPoolExecutor(self.options.in_flight, thread_name_prefix="triton-client")

    def describe(self) -> str:
        return f"{self.name} ({self.server.protocol}://{self.server.address}, model {self.server.name}, io={self.io})"

    def details(self) -> dict[str, Any]:
        return {"server": self.server.address, "protocol": self.server.protocol, "max_batch": self.max_batch}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.wait(self.submit(batch))

    def submit(self, batch: np.ndarray) -> list[Future[dict[str, np.ndarray]]]:
        """Send ``batch`` as requests of at most ``max_batch`` frames; returns at once."""
        chunks = [batch[start : start + self.max_batch] for start in range(0, len(batch), self.max_batch)]
        return [self._pool.submit(self._infer, np.ascontiguousarray(chunk)) for chunk in chunks]

    def wait(self, handle: object) -> dict[str, np.ndarray]:
        if not isinstance(handle, list) or not all(isinstance(future, Future) for future in handle):
            raise TypeError(f"TritonBackend.wait() got {type(handle).__name__}, not one of its handles")
        parts = [future.result() for future in handle]
        return {name: np.concatenate([part[name] for part in parts]) for name in self._output_names}

    def close(self) -> None:
        """Wait for requests in flight, then close every connection: a stopping Triton waits for open HTTP
        connections (up to its exit timeout) before it finishes, so clients must not leave them idle."""
        self._pool.shutdown(wait=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def _client(self) -> Any:
        """This thread's client (created on first use)."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self.server.protocol == "http":
                client = self._client_module.InferenceServerClient(
                    self.server.address, connection_timeout=self.options.timeout, network_timeout=self.options.timeout
                )
            else:
                client = self._client_module.InferenceServerClient(self.server.address)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _describe_model(self) -> tuple[dict[str, Any], dict[str, Any]]:
        client = self._client()
        try:
            if not client.is_model_ready(self.server.name):
                raise CliplitError(f"model {self.server.name!r} is not ready on {self.server.address}")
            if self.server.protocol == "http":
                return client.get_model_metadata(self.server.name), client.get_model_config(self.server.name)
            metadata = client.get_model_metadata(self.server.name, as_json=True)
            return metadata, client.get_model_config(self.server.name, as_json=True)["config"]
        except self._client_module.InferenceServerException as error:
            raise CliplitError(f"Triton server at {self.server.address}: {error.message()}") from None
        except OSError as error:  # refused, unreachable, timed out
            raise CliplitError(f"cannot reach the Triton server at {self.server.address} ({error})") from None

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        module, spec = self._client_module, IO_SPECS[self.io]
        request = module.InferInput(spec.input_name, list(batch.shape), "UINT8" if batch.dtype == np.uint8 else "FP32")
        request.set_data_from_numpy(batch)
        http = self.server.protocol == "http"
        # HTTP would otherwise send outputs as JSON number lists, several times the bytes
        outputs = [
            module.InferRequestedOutput(name, **({"binary_data": True} if http else {})) for name in self._output_names
        ]
        timeout = {} if http else {"client_timeout": self.options.timeout}
        try:
            result = self._client().infer(self.server.name, [request], outputs=outputs, **timeout)
        except module.InferenceServerException as error:
            raise CliplitError(
                f"Triton server at {self.server.address} rejected a {batch.dtype} batch of shape {batch.shape}: "
                f"{server_message(error.message())}"
            ) from None
        except Exception as error:  # sockets closed or reset, timeouts: each client library has its own classes
            raise CliplitError(
                f"lost the Triton server at {self.server.address} ({type(error).__name__}: {error})"
            ) from None
        return {name: result.as_numpy(name) for name in self._output_names}


def server_message(text: str) -> str:
    """The reason in a Triton error: PyTriton sends the bound function's whole traceback, whose point is the line
    of the exception (``cliplit serve`` raises ``BadRequestError``); other messages are kept as they are."""
    for line in reversed(text.splitlines()):
        if "BadRequestError: " in line:
            return line.split("BadRequestError: ", 1)[1].strip()
    return text.strip()


def _client_module(protocol: str) -> ModuleType:
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as error:
        raise CliplitError(
            f"the triton backend needs tritonclient ({error}); install it with pip install 'cliplit[serve]' "
            f"(or only 'tritonclient[{protocol}]' on a client machine)"
        ) from error
    return module
