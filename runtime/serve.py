"""Serve the enhancer on NVIDIA Triton Inference Server: the ``tritonserver`` PyTriton ships, running cliplit's own
Python-backend model (:mod:`cliplit.runtime.serve_model`).

We do not write a server: Triton does HTTP and gRPC, dynamic batching across clients, several model instances,
health, metrics and a graceful stop. `cliplit serve` writes a model repository into a private workspace, starts
``tritonserver`` on it, and owns what an operator relies on around it:

- **readiness**: Triton loads the repository before it opens its endpoints, and marks the model ready only once
  every instance has loaded its Enhancer and run a warm-up frame, so no probe can see "ready" early;
- **client errors**: each request is answered on its own, bad ones with a one-line 400 (INVALID_ARGUMENT in gRPC),
  server faults with a one-line 500 whose traceback is logged here, never sent;
- **one memory budget** (``--max-memory``) for the whole process tree, split into Triton's share, the bounded queue's
  and each instance's, within which instances form batches and tile large teacher frames;
- **a graceful drain** on SIGTERM/SIGINT: Triton stops listening at once, the accepted requests finish within a drain
  timeout derived from the queue bound and the measured speed, and the command exits 0.

The wire format is the ``uint8`` contract whatever the served model's own I/O: input ``frame`` N×H×W×3 uint8 BGR,
output ``enhanced`` of the same shape, one frame size per request, N ≤ ``max_batch``.

This module runs the server process; what it is given is :class:`~cliplit.runtime.serve_settings.ServeSettings`, how
the memory is shared out is :mod:`cliplit.runtime.serve_budget`, and each instance's model is
:mod:`cliplit.runtime.serve_model`.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.runtime.backends import BackendOptions
from cliplit.runtime.memory import resident_memory
from cliplit.runtime.serve_budget import Budget, drain_timeout, plan_budget
from cliplit.runtime.serve_model import (
    DRAIN_FILE,
    INPUT_NAME,
    OUTPUT_NAME,
    REFUSE_FILE,
    BadRequestError,
    InstanceConfig,
    check_frames,
    model_file_text,
)
from cliplit.runtime.serve_settings import ServeSettings

__all__ = ["BadRequestError", "ServeSettings", "check_frames", "serve"]

INSTALL_HINT = "pip install 'cliplit[serve]'"
#: once the accepted work is done, how long Triton gets to close client connections before it is stopped for good
IDLE_CONNECTION_GRACE_S = 3.0
POLL_S = 0.1
#: Linux prctl option: a signal for the child when its parent dies (tritonserver must not outlive `cliplit serve`)
_PR_SET_PDEATHSIG = 1


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it resolves to whatever it resolves to
        return False


def exposure_note(address: str) -> str | None:
    """The start-up note for an address other machines can reach, or None for loopback."""
    if is_loopback(address):
        return None
    return (
        f"note: listening on {address}: the HTTP, gRPC and metrics endpoints have no authentication, so anyone who "
        "can reach this address can use the server (docs/serving.md: put it behind an authenticating proxy)"
    )


def repository_config(settings: ServeSettings, budget: Budget, instance: InstanceConfig) -> str:
    """The model's ``config.pbtxt``: cliplit's Python model, dynamic batching with a bounded queue, K instances."""
    parameters = json.dumps(instance.to_json(), ensure_ascii=False)  # a quoted, escaped protobuf text string
    return f"""name: "{settings.model_name}"
backend: "python"
max_batch_size: {budget.max_batch}
input [{{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [-1, -1, 3] }}]
output [{{ name: "{OUTPUT_NAME}" data_type: TYPE_UINT8 dims: [-1, -1, 3] }}]
dynamic_batching {{
  max_queue_delay_microseconds: {settings.queue_delay_us}
  default_queue_policy {{ max_queue_size: {budget.max_queue} }}
}}
instance_group [{{ count: {settings.instances} kind: KIND_CPU }}]
parameters {{ key: "cliplit" value: {{ string_value: {parameters} }} }}
"""


def backend_fields(model: str | None, backend: str | BackendOptions) -> tuple[str, dict[str, Any]]:
    """The backend's registered name and option fields, to rebuild its options in each instance's process."""
    from dataclasses import fields

    from cliplit.runtime.backends import select_backend

    if isinstance(backend, BackendOptions):
        return backend.backend, {field.name: getattr(backend, field.name) for field in fields(backend)}
    return select_backend(model, backend), {}


def stub_library_path(environ: Mapping[str, str]) -> str:
    """``LD_LIBRARY_PATH`` for tritonserver with this interpreter's libpython first.

    The Python backend's stub links against ``libpython3.X.so``; without this it can load the system's copy, whose
    patch release need not match this interpreter's standard library (seen here: a 3.11.2 library under a 3.11.7
    stdlib fails with "'_thread.RLock' object has no attribute '_recursion_count'"). tritonserver passes its
    environment on to the stubs.
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [path for path in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if path]
    if libdir and libdir not in paths:
        paths.insert(0, libdir)
    return os.pathsep.join(paths)


def serve(settings: ServeSettings) -> None:
    """Serve until SIGINT or SIGTERM, then drain: Triton stops accepting at once, every accepted request is answered
    (or, past the drain timeout, refused with a 503 if it has not started), and this returns."""
    tritonserver = _find_tritonserver()
    _check_ports_free(settings)
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    workspace = Path(tempfile.mkdtemp(prefix="cliplit-serve-"))
    try:
        _serve(settings, tritonserver, workspace, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(workspace, ignore_errors=True)
        for region in Path("/dev/shm").glob(f"{_shm_prefix(workspace)}*"):  # left behind only if Triton was killed
            region.unlink(missing_ok=True)


def _serve(settings: ServeSettings, tritonserver: Path, workspace: Path, stopping: threading.Event) -> None:
    backend, options = backend_fields(settings.model, settings.backend)
    instance = InstanceConfig(settings.model, backend, options, 0, settings.max_side, str(workspace))
    measured = _preflight(instance, settings.max_memory)
    budget = plan_budget(settings, measured["resident"], resident_memory())
    instance = InstanceConfig(settings.model, backend, options, budget.per_instance, settings.max_side, str(workspace))
    timeout = drain_timeout(settings, budget, measured["seconds_per_pixel"])
    repository = workspace / "models"
    (repository / settings.model_name / "1").mkdir(parents=True)
    (repository / settings.model_name / "config.pbtxt").write_text(repository_config(settings, budget, instance))
    module_path = [os.path.abspath(path) for path in sys.path if path]
    (repository / settings.model_name / "1" / "model.py").write_text(model_file_text(module_path))
    print(budget.describe(settings.instances), file=sys.stderr)
    note = exposure_note(settings.address)
    if note:
        print(note, file=sys.stderr)
    command = [
        str(tritonserver),
        f"--model-repository={repository}",
        f"--backend-directory={_backends(tritonserver, workspace)}",
        f"--http-address={settings.address}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={settings.address}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.address}",
        f"--metrics-port={settings.metrics_port}",
        # Triton must never give up on accepted work by itself: the drain below decides, then stops it
        f"--exit-timeout-secs={math.ceil(timeout) + 3600}",
        "--log-info=false",
        "--allow-gpu-metrics=false",  # instances use the GPU themselves (TensorRT, CUDA); Triton needs none
        "--pinned-memory-pool-byte-size=0",
        f"--backend-config=python,shm-region-prefix-name={_shm_prefix(workspace)}",
        "--backend-config=python,shm-default-byte-size=4194304",
        "--backend-config=python,shm-growth-byte-size=16777216",
    ]
    process = subprocess.Popen(command, env=_server_environment(), preexec_fn=_die_with_parent, start_new_session=True)
    try:
        host = "127.0.0.1" if settings.address in ("0.0.0.0", "::") else settings.address
        if not _wait_ready(process, f"http://{_url_host(host)}:{settings.http_port}", stopping):
            _drain(process, workspace, timeout, settings, host, budget.max_batch)
            return
        reports = [json.loads(path.read_text()) for path in workspace.glob("instance-*.json")]
        if reports:  # measured with every instance loaded, as they will run
            timeout = drain_timeout(settings, budget, max(report["seconds_per_pixel"] for report in reports))
        print(
            f"serving model '{settings.model_name}' at http://{_url_host(host)}:{settings.http_port} "
            f"(gRPC {_url_host(host)}:{settings.grpc_port}, metrics http://{_url_host(host)}:{settings.metrics_port}"
            f"/metrics); Ctrl-C or SIGTERM drains and stops (drain timeout {timeout:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        while not stopping.wait(POLL_S):
            if process.poll() is not None:
                raise CliplitError(f"tritonserver exited with code {process.returncode} (its log above says why)")
        _drain(process, workspace, timeout, settings, host, budget.max_batch)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _drain(
    process: subprocess.Popen, workspace: Path, timeout: float, settings: ServeSettings, host: str, max_batch: int
) -> None:
    """Stop gracefully. The instances get as many tickets as Triton holds requests now (plus a batch each: one may
    be between the queue and an instance), so requests arriving later on open connections get 503 (see
    :class:`~cliplit.runtime.serve_model.Drain`); Triton closes its listeners at once (new connections are refused,
    so probes fail) and answers what it accepted. Past ``timeout`` the instances refuse what they have not started
    (503). Once no instance runs frames and no accepted request waits, Triton gets IDLE_CONNECTION_GRACE_S to close
    the clients' idle connections (it waits for them otherwise), then it is stopped: no accepted request is open."""
    metrics = f"http://{_url_host(host)}:{settings.metrics_port}/metrics"
    held = _requests_in_server(metrics, settings.model_name)
    tickets = (held if held is not None else 0) + settings.instances * max_batch
    (workspace / DRAIN_FILE).write_text(json.dumps({"tickets": tickets}))
    process.send_signal(signal.SIGTERM)
    print(
        f"draining: no new requests; finishing the {held if held is not None else 'unknown number of'} queued and "
        f"those running (drain timeout {timeout:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    refused = False
    idle_since: float | None = None
    while process.poll() is None:
        now = time.monotonic()
        if not refused and now - start > timeout:
            (workspace / REFUSE_FILE).touch()
            refused = True
            print("drain timeout ran out: refusing the requests not yet started (503)", file=sys.stderr, flush=True)
        left = json.loads((workspace / DRAIN_FILE).read_text() or "{}").get("tickets", 0)
        waiting = 0 if left == 0 or refused else _requests_in_server(metrics, settings.model_name)
        running = any(workspace.glob("busy-*"))
        if waiting == 0 and not running:
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since > IDLE_CONNECTION_GRACE_S:
                print("every accepted request is answered; closing idle client connections", file=sys.stderr)
                process.kill()
                process.wait()
                break
        else:
            idle_since = None
        time.sleep(POLL_S)
    elapsed = time.monotonic() - start
    if process.returncode not in (0, -signal.SIGKILL):
        raise CliplitError(
            f"tritonserver exited with code {process.returncode} while draining, after {elapsed:.1f} s (its log above "
            "says why)"
        )
    print(f"server stopped after a drain of {elapsed:.1f} s", file=sys.stderr, flush=True)


def _requests_in_server(metrics_url: str, model_name: str) -> int | None:
    """Requests Triton holds for the model (queued or running, from its pending-request gauge); None when the
    metrics cannot be read (Triton is stopping its endpoints)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    prefix = f'nv_inference_pending_request_count{{model="{model_name}",version="1"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return None


def _wait_ready(process: subprocess.Popen, url: str, stopping: threading.Event) -> bool:
    """Wait until Triton answers ready (it opens its endpoints once every instance has loaded); False if asked to
    stop first. A Triton that exits while loading is an error naming its exit code (its log says why)."""
    while not stopping.wait(0.2):
        if process.poll() is not None:
            raise CliplitError(f"tritonserver exited with code {process.returncode} while loading the model")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
    return False


def _preflight(instance: InstanceConfig, max_memory: int | None) -> dict[str, float]:
    """Load the model once in a child process before Triton starts: errors (no such model, a model that cannot
    build) surface as one line, a model given as weights is built once rather than by every instance at the same
    time, and the time per pixel and the memory of one loaded instance are measured."""
    probe = InstanceConfig(
        instance.model, instance.backend, instance.backend_options, max_memory or (8 << 30), instance.max_side, ""
    )
    done = subprocess.run(
        [sys.executable, "-m", "cliplit.runtime.serve_model", probe.to_json()],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
        raise CliplitError(f"cannot load the model to serve: {reason}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _find_tritonserver() -> Path:
    """PyTriton's tritonserver, after checking that PyTriton and NumPy 1 are installed."""
    try:
        import pytriton
    except ImportError as error:
        raise CliplitError(f"cliplit serve needs PyTriton ({error}); install it with {INSTALL_HINT}") from error
    if int(np.__version__.split(".")[0]) >= 2:
        # PyTriton 0.7 requires numpy<2 and means it: under NumPy 2 its Python backend stub answers every request
        # with an empty output tensor (measured), which clients see as a reshape error, not as the cause.
        raise CliplitError(
            f"cliplit serve needs NumPy < 2 for Triton's Python backend (this is NumPy {np.__version__}); "
            f"install with {INSTALL_HINT}, which pins it"
        )
    return Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"


def _backends(tritonserver: Path, workspace: Path) -> Path:
    """A backend directory for tritonserver: PyTriton's Python backend with the stub built for this interpreter
    (PyTriton ships one per Python version beside it)."""
    shipped = tritonserver.parents[1]
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = shipped / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise CliplitError(f"PyTriton has no Python backend stub for Python {version} ({stub} is missing)")
    python = workspace / "backends" / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(shipped / "backends" / "python" / name)
    shutil.copy(stub, python / "triton_python_backend_stub")  # the backend runs the stub found beside it
    return python.parent


def _server_environment() -> dict[str, str]:
    """tritonserver's environment: this interpreter's libpython and PyTriton's libraries on the library path, and
    this process's module path, so each instance's stub imports the same cliplit, NumPy and backends as we do."""
    from pytriton.utils.distribution import get_libs_path

    environ = dict(os.environ)
    environ["LD_LIBRARY_PATH"] = os.pathsep.join([stub_library_path(environ), str(get_libs_path())]).strip(os.pathsep)
    environ["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    return environ


def _die_with_parent() -> None:
    """In the child before exec: tritonserver gets SIGKILL if `cliplit serve` dies without draining it."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _shm_prefix(workspace: Path) -> str:
    return f"cliplit-{workspace.name}-"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_ports_free(settings: ServeSettings) -> None:
    """Fail at once, naming the port, when one is taken (Triton would fail later, after the models are loaded)."""
    ports = {
        "--http-port": settings.http_port,
        "--grpc-port": settings.grpc_port,
        "--metrics-port": settings.metrics_port,
    }
    for option, port in ports.items():
        family = socket.AF_INET6 if ":" in settings.address else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "taken"
            try:
                probe.bind((settings.address, port))
            except OSError as error:
                raise CliplitError(
                    f"{option} {port}: cannot listen on {settings.address}:{port} ({error.strerror})"
                ) from None
