"""`cliplit serve` for real: PyTriton's tritonserver on 127.0.0.1 (CPU), answering HTTP and gRPC clients.

The server runs in its own cached environment with PyTriton and NumPy 1 (tests/serve_env.py; PyTriton pins NumPy < 2,
the suite runs on NumPy 2), importing this checkout's cliplit; the clients run here, under NumPy 2, as a user's would.
Building that environment needs the package index once and fails with pip's message when it cannot; only a platform
without PyTriton wheels skips.

One server (2 instances, batches of up to 8) serves the whole module; the drain test (the shipped student under 8
clients) and the memory test (the teacher under --max-memory 2G, four 720p frames) start their own. Frames are
small (≤ 96 px) except there, every request loop is bounded in count and time, and all of it is on 127.0.0.1.
Outputs must equal local enhancement exactly: the server runs the same ONNX model through the same Enhancer on the
same ONNX Runtime release, and ONNX Runtime's CPU kernels compute each image of a batch the same way whatever the
batch holds.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import serve_env
import tritonclient.http as httpclient
from conftest import SMALL_PHOTO
from runtime_helpers import decode_all, moving_crops, probe, write_clip
from serve_env import ServeEnv, ServeEnvError, build_environment, ensure_environment, unsupported_platform

from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.triton import TritonOptions
from cliplit.runtime.cli import main
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.memory import process_tree_memory

START_TIMEOUT_S = 180  # a loaded 2-core machine needs ~10-40 s (and PyTriton may retry a load)
REQUEST_TIMEOUT_S = 60
MAX_SIDE = 64
SIZES = ((32, 48), (24, 40), (48, 32))


@dataclass
class Server:
    process: subprocess.Popen
    http: int
    grpc: int
    metrics: int
    log: Path

    @property
    def url(self) -> str:
        return f"triton://127.0.0.1:{self.http}/clip_lit"

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def start_server(env: ServeEnv, model: Path | str, log: Path, *options: str, address: bool = True) -> Server:
    """`cliplit serve` in a subprocess of the serving environment on free 127.0.0.1 ports, once it answers readiness;
    polled every 50 ms from the start, failing if the server ever says ready before its model does."""
    http, grpc, metrics = free_ports(3)
    command = env.cliplit("serve", "--model", str(model), "--backend", "onnxruntime")
    command += ["--address", "127.0.0.1"] if address else []  # without: the default, which must be loopback
    command += ["--http-port", str(http)]
    command += ["--grpc-port", str(grpc), "--metrics-port", str(metrics), *options]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env.environ(), cwd=log.parent)
    server = Server(process, http, grpc, metrics, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"cliplit serve exited with {process.returncode}:\n{server.log_tail()}")
        ready = http_status(f"http://127.0.0.1:{http}/v2/health/ready")
        model_ready = http_status(f"http://127.0.0.1:{http}/v2/models/clip_lit/ready")
        if ready == 200 and model_ready != 200:
            process.kill()
            pytest.fail(f"the server said ready before its model could serve (model ready: {model_ready})")
        if ready == 200:
            return server
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"cliplit serve was not ready after {START_TIMEOUT_S} s:\n{server.log_tail()}")


def stop_server(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def frames_of(count: int, seed: int, sizes=SIZES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(count)]


@pytest.fixture(scope="module")
def server_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ServeEnv:
    reason = unsupported_platform()
    if reason is not None:
        pytest.skip(reason)
    try:
        env = ensure_environment(tmp_path_factory.mktemp("serve-source"))
    except ServeEnvError as error:
        pytest.fail(str(error), pytrace=False)
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if env.created_s is not None and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # the build time belongs in the log, not in captured output
            reporter.write_line(f"built the serving environment {env.python.parents[1]} in {env.created_s:.0f} s")
    return env


@pytest.fixture(scope="module")
def server(server_env: ServeEnv, float_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    options = ["--instances", "2", "--threads", "1", "--max-batch", "8", "--max-side", str(MAX_SIDE)]
    server = start_server(server_env, float_onnx, log, *options)
    yield server
    stop_server(server)  # its exit status is the SIGTERM test's subject, with requests in flight


@pytest.fixture(scope="module")
def local(float_onnx: Path) -> Iterator[Enhancer]:
    with Enhancer.open(float_onnx, "onnxruntime") as enhancer:  # the server runs ONNX Runtime too
        yield enhancer


@pytest.mark.parametrize("scheme", ["triton", "triton+grpc"])
def test_outputs_equal_local_enhancement(server, local, scheme):
    port = server.http if scheme == "triton" else server.grpc
    frames = frames_of(7, seed=1)
    with Enhancer.open(f"{scheme}://127.0.0.1:{port}/clip_lit", TritonOptions(timeout=REQUEST_TIMEOUT_S)) as remote:
        assert remote.io == "uint8"
        got = remote.enhance_batch(frames)
        # 12 frames of one size: more than the server's max_batch of 8, so the client splits them
        big = frames_of(12, seed=2, sizes=((16, 24),))
        got_big = remote.enhance_batch(big)
    want = local.enhance_batch(frames) + local.enhance_batch(big)
    for frame, out, expected in zip(frames + big, got + got_big, want, strict=True):
        assert out.shape == frame.shape
        assert np.array_equal(out, expected)


def test_concurrent_clients_get_their_own_frames_in_order(server, local):
    clients, per_client = 8, 16
    inputs = [frames_of(per_client, seed=100 + c, sizes=SIZES[c % 3 :] + SIZES[: c % 3]) for c in range(clients)]
    results: list[list[np.ndarray] | BaseException | None] = [None] * clients

    def run_client(index: int) -> None:
        try:
            with Enhancer.open(server.url, TritonOptions(timeout=REQUEST_TIMEOUT_S, in_flight=4)) as remote:
                # four frames at a time, as a pipeline keeps batches in flight
                pending = [remote.submit([frame]) for frame in inputs[index][:4]]
                out: list[np.ndarray] = []
                for frame in inputs[index][4:]:
                    out += remote.collect(pending.pop(0))
                    pending.append(remote.submit([frame]))
                for group in pending:
                    out += remote.collect(group)
                results[index] = out
        except BaseException as error:  # reported below, with the client's index
            results[index] = error

    threads = [threading.Thread(target=run_client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "clients still waiting after 120 s"
    for index, result in enumerate(results):
        assert isinstance(result, list), f"client {index}: {result!r}"
        want = local.enhance_batch(inputs[index])
        assert len(result) == per_client
        for position, (out, expected) in enumerate(zip(result, want, strict=True)):
            assert np.array_equal(out, expected), f"client {index}, frame {position}"


def raw_infer(server: Server, batch: np.ndarray, datatype: str) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}", network_timeout=REQUEST_TIMEOUT_S)
    try:  # closed, or the stopping server waits for the idle connection
        request = httpclient.InferInput("frame", list(batch.shape), datatype)
        request.set_data_from_numpy(batch)
        outputs = [httpclient.InferRequestedOutput("enhanced", binary_data=True)]
        return client.infer("clip_lit", [request], outputs=outputs).as_numpy("enhanced")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("batch", "datatype", "message"),
    [
        (np.zeros((1, 32, 48, 3), np.float32), "FP32", "data-type is 'FP32', but model 'clip_lit' expects 'UINT8'"),
        (np.zeros((2, 32, 48), np.uint8), "UINT8", "unexpected shape for input 'frame'"),
        (np.zeros((32, 48, 3), np.uint8), "UINT8", "inference request batch-size must be <= 8"),  # Triton's words
        (np.zeros((1, 32, 48, 4), np.uint8), "UINT8", "unexpected shape for input 'frame'"),
        (np.zeros((1, 1, 48, 3), np.uint8), "UINT8", "frame of 48x1 pixels is too small: CLIP-LIT needs at least 2x2"),
        (np.zeros((1, 1, 1, 3), np.uint8), "UINT8", "frame of 1x1 pixels is too small"),
        (np.zeros((1, 0, 0, 3), np.uint8), "UINT8", "frame of 0x0 pixels is too small"),
        (np.zeros((1, 32, MAX_SIDE + 1, 3), np.uint8), "UINT8", f"takes sides up to {MAX_SIDE}"),
        (np.zeros((9, 32, 48, 3), np.uint8), "UINT8", "inference request batch-size must be <= 8"),
    ],
    ids=["dtype", "rank", "rank-3-frame", "channels", "too-small", "1x1", "0x0", "too-large", "batch"],
)
def test_bad_request_is_a_400_one_liner_and_the_server_keeps_serving(server, local, batch, datatype, message):
    with pytest.raises(httpclient.InferenceServerException) as caught:
        raw_infer(server, batch, datatype)
    assert caught.value.status() == "400"
    assert message in caught.value.message()
    assert "\n" not in caught.value.message().strip() and "Traceback" not in caught.value.message()
    good = frames_of(2, seed=3, sizes=((32, 48),))
    assert np.array_equal(raw_infer(server, np.stack(good), "UINT8"), np.stack(local.enhance_batch(good)))


def test_bad_request_over_grpc_is_invalid_argument(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    try:
        request = grpcclient.InferInput("frame", [1, 1, 1, 3], "UINT8")
        request.set_data_from_numpy(np.zeros((1, 1, 1, 3), np.uint8))
        with pytest.raises(grpcclient.InferenceServerException) as caught:
            client.infer("clip_lit", [request], client_timeout=REQUEST_TIMEOUT_S)
    finally:
        client.close()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message().startswith("frame of 1x1 pixels is too small")


def test_bad_requests_never_fail_good_ones_sent_at_the_same_time(server, local):
    """Triton batches only requests of one shape, so a too-large frame cannot share a batch with a good one."""
    good = frames_of(1, seed=5, sizes=((32, 48),))[0]
    bad = np.zeros((32, MAX_SIDE + 1, 3), np.uint8)
    want = local.enhance(good)
    outcomes: list[str] = []

    def send(frame: np.ndarray) -> None:
        for _ in range(6):
            try:
                out = raw_infer(server, frame[None], "UINT8")[0]
                outcomes.append("good" if np.array_equal(out, want) else "wrong")
            except httpclient.InferenceServerException as error:
                outcomes.append("rejected" if "too large" in error.message() else error.message())

    threads = [threading.Thread(target=send, args=(frame,), daemon=True) for frame in [good, bad] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT_S)
    assert sorted(outcomes) == ["good"] * 24 + ["rejected"] * 24


def test_cliplit_client_reports_the_servers_reason(server):
    with Enhancer.open(server.url) as remote, pytest.raises(CliplitError) as caught:
        remote.enhance(np.zeros((32, MAX_SIDE + 8, 3), np.uint8))
    assert str(caught.value).endswith(
        f"frame of {MAX_SIDE + 8}x32 pixels is too large: this server takes sides up to {MAX_SIDE} "
        "(cliplit serve --max-side)"
    )


def success_count(server: Server) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r'^nv_inference_request_success\{model="clip_lit",version="1"\} (\d+)', text, re.MULTILINE)
    assert found, "no request counter for clip_lit in Triton's metrics"
    return int(found.group(1))


def test_health_config_and_metrics(server):
    assert http_status(f"http://127.0.0.1:{server.http}/v2/health/live") == 200
    assert http_status(f"http://127.0.0.1:{server.http}/v2/health/ready") == 200
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}")
    try:
        config = client.get_model_config("clip_lit")
    finally:
        client.close()
    assert config["max_batch_size"] == 8
    assert "dynamic_batching" in config
    assert [group["count"] for group in config["instance_group"]] == [2]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("frame", "TYPE_UINT8", [-1, -1, 3])]
    before = success_count(server)
    with Enhancer.open(server.url) as remote:
        for frame in frames_of(3, seed=4):
            remote.enhance(frame)
    # Triton counts a request once its response is on its way, so the client can read the metrics a moment before
    # the last count lands (seen on a loaded machine): wait for it, briefly
    deadline = time.monotonic() + 5
    while success_count(server) - before < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert success_count(server) - before == 3


def test_cliplit_enhance_sends_a_video_to_the_server(server, local, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", moving_crops([SMALL_PHOTO], size=(48, 32), frames_per_photo=6))
    out = tmp_path / "out.mkv"  # lossless, so the decoded frames are exactly the enhanced ones
    argv = ["enhance", str(clip), "-o", str(out), "--model", server.url, "--codec", "ffv1", "--no-progress"]
    assert main([*argv, "--batch", "3"]) == 0
    decoded = decode_all(clip)
    frames = decode_all(out)
    assert len(frames) == len(decoded) == 6
    for index, (frame, want) in enumerate(zip(frames, local.enhance_batch(decoded), strict=True)):
        assert np.array_equal(frame, want), f"frame {index}"
    assert "Audio:" in probe(out)


def closed_loop_clients(
    server: Server, count: int, frame: np.ndarray, until: threading.Event, limit: int
) -> tuple[list[threading.Thread], list[tuple[bool, str]]]:
    """``count`` clients, each on its own keep-alive HTTP connection, sending ``frame`` one request at a time until
    ``until`` is set and then one last time (at most ``limit`` requests each). Outcomes: (sent after ``until``,
    "ok" / the HTTP status and message / the exception's name)."""
    outcomes: list[tuple[bool, str]] = []

    def run() -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}", network_timeout=REQUEST_TIMEOUT_S)
        request = httpclient.InferInput("frame", [1, *frame.shape], "UINT8")
        request.set_data_from_numpy(frame[None])
        try:
            for _ in range(limit):
                after = until.is_set()
                try:
                    client.infer("clip_lit", [request])
                    outcomes.append((after, "ok"))
                except httpclient.InferenceServerException as error:
                    outcomes.append((after, f"{error.status()} {error.message()}"))
                except Exception as error:  # a dropped connection: what a drain must never do to accepted work
                    outcomes.append((after, type(error).__name__))
                if after:
                    break
        finally:
            client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_sigterm_under_load_drains_every_accepted_request_and_exits_0(server_env, tmp_path, monkeypatch):
    """8 clients keep the shipped student busy; on SIGTERM readiness goes at once, every request sent before it is
    answered (none cut off), later ones on open connections get a clean 503, and the command exits 0."""
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    server = start_server(server_env, "clip-lit-rt", tmp_path / "server.log", "--threads", "1", "--max-side", "256")
    try:
        signalled = threading.Event()
        frame = frames_of(1, seed=11, sizes=((144, 256),))[0]
        threads, outcomes = closed_loop_clients(server, 8, frame, signalled, limit=400)
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while sum(outcome == (False, "ok") for outcome in outcomes) < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        signalled.set()
        time.sleep(0.5)
        assert http_status(f"http://127.0.0.1:{server.http}/v2/health/ready") != 200
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in threads)
        assert server.process.wait(timeout=REQUEST_TIMEOUT_S) == 0, server.log_tail()
    finally:
        stop_server(server)
    before = [outcome for after, outcome in outcomes if not after]
    after = [outcome for after, outcome in outcomes if after]
    assert before.count("ok") >= 16
    # a full queue answers 503 at once (clients retry); nothing else, and nothing cut off, before or after SIGTERM
    allowed = {"ok", "503 [request id: <id_unknown>] Exceeds maximum queue size"}
    assert set(before) <= allowed, sorted(set(before))
    refused = "503 the server is stopping (draining); retry on another server"
    assert set(after) <= allowed | {refused}, sorted(set(after))
    assert len(after) == 8
    log = server.log.read_text(errors="replace")
    assert "draining: no new requests" in log and "server stopped after a drain of" in log


def test_the_teacher_within_max_memory_answers_4_clients_of_720p(server_env, float_onnx, local, tmp_path):
    """--max-memory 2G: four clients' 720p frames are all answered (tiled, as `cliplit enhance` would) and the
    server's whole process tree stays under 2.6 GB; started without --address, it listens on loopback only."""
    log = tmp_path / "server.log"
    server = start_server(server_env, float_onnx, log, "--max-memory", "2G", "--max-side", "1280", address=False)
    try:
        peak = [process_tree_memory(server.process.pid)]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(process_tree_memory(server.process.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        frames = frames_of(4, seed=12, sizes=((720, 1280),))
        answers: list[np.ndarray | BaseException | None] = [None] * 4

        def send(index: int) -> None:
            try:
                answers[index] = raw_infer(server, frames[index][None], "UINT8")[0]
            except BaseException as error:
                answers[index] = error

        clients = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(4)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=300)
        done.set()
        sampler.join(timeout=5)
    finally:
        assert stop_server(server) == 0
    assert all(isinstance(answer, np.ndarray) for answer in answers), answers
    assert max(peak) < 2.6e9, f"the server's process tree peaked at {max(peak) / 1e9:.2f} GB"
    text = log.read_text(errors="replace")
    assert "memory budget 2.0 GiB" in text and "running them in tiles" in text
    assert "no authentication" not in text  # the default address is loopback
    want = local.enhance(frames[0])  # the tiled result is the untiled one, within rounding
    assert np.abs(answers[0].astype(int) - want.astype(int)).max() <= 1


def test_the_shipped_student_is_served_by_name_without_torch(server_env, tmp_path, monkeypatch):
    """The serving environment has no torch; an empty cache: the student's model is built from its weights there."""
    no_torch = subprocess.run([str(server_env.python), "-c", "import torch"], capture_output=True, check=False)
    assert no_torch.returncode != 0
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    server = start_server(server_env, "clip-lit-rt", tmp_path / "server.log")
    try:
        frames = frames_of(2, seed=9)
        with Enhancer.open(server.url) as remote, Enhancer.open("clip-lit-rt", "onnxruntime") as here:
            for frame in frames:
                assert np.array_equal(remote.enhance(frame), here.enhance(frame))
    finally:
        stop_server(server)
    assert list((tmp_path / "home" / "models").glob("weights-*.onnx"))


def test_a_port_in_use_is_named_before_anything_loads(server_env, tmp_path):
    """`cliplit serve` exits 2 naming the taken port, before it loads a model (here: one that does not exist)."""
    http, metrics = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = server_env.cliplit("serve", "--model", "no-such-model.onnx", "--address", "127.0.0.1")
        command += ["--http-port", str(http), "--grpc-port", str(port), "--metrics-port", str(metrics)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=server_env.environ(), cwd=tmp_path, check=False
        )
    assert done.returncode == 2, done.stderr
    want = f"error: --grpc-port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)"
    assert done.stderr.strip().splitlines()[-1] == want


@pytest.mark.slow  # creating the venv (ensurepip) takes 5-15 s on the shared 2-core machine
def test_an_environment_pip_cannot_install_fails_naming_the_command(monkeypatch, tmp_path):
    """No package index (here: pip told to use none): a clear error with the command, no half-built environment."""
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    target = tmp_path / "cache" / "serve-test"
    with pytest.raises(ServeEnvError) as caught:
        build_environment(target, ["nvidia-pytriton==0.7.0"])
    message = str(caught.value)
    assert "pip install --quiet --disable-pip-version-check nvidia-pytriton==0.7.0` exited 1" in message
    assert "No matching distribution found for nvidia-pytriton==0.7.0" in message
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize(
    ("system", "machine", "libc", "reason"),
    [
        ("linux", "x86_64", ("glibc", "2.36"), None),
        ("linux", "aarch64", ("glibc", "2.35"), None),
        ("darwin", "arm64", ("", ""), "wheels for Linux x86_64 and aarch64 only, not darwin arm64"),
        ("linux", "x86_64", ("glibc", "2.31"), "need glibc >= 2.35 (manylinux_2_35), this is glibc 2.31"),
        ("linux", "x86_64", ("", ""), "this is no glibc"),  # musl
    ],
)
def test_only_a_platform_without_pytriton_wheels_skips(monkeypatch, system, machine, libc, reason):
    monkeypatch.setattr(serve_env.sys, "platform", system)
    monkeypatch.setattr(serve_env.platform, "machine", lambda: machine)
    monkeypatch.setattr(serve_env.platform, "libc_ver", lambda: libc)
    found = unsupported_platform()
    assert found == reason if reason is None else reason in found
