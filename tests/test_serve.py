"""`cliplit serve` for real: PyTriton's tritonserver on 127.0.0.1 (CPU), answering HTTP and gRPC clients.

The server runs in its own cached environment with PyTriton and NumPy 1 (tests/serve_env.py; PyTriton pins NumPy < 2,
the suite runs on NumPy 2), importing this checkout's cliplit; the clients run here, under NumPy 2, as a user's would.
Building that environment needs the package index once and fails with pip's message when it cannot; only a platform
without PyTriton wheels skips.

One server (2 instances, batches of up to 8) serves the whole module; the shutdown test starts its own, since it
stops it. Frames are small (≤ 48 px) so the released model runs in milliseconds, and every request loop is bounded
in count and time. Outputs must equal local enhancement exactly: the server runs the same ONNX model through the
same Enhancer on the same ONNX Runtime release, and ONNX Runtime's CPU kernels compute each image of a batch the same
way whatever the batch holds.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
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


def start_server(env: ServeEnv, model: Path | str, log: Path, *options: str) -> Server:
    """`cliplit serve` in a subprocess of the serving environment on free 127.0.0.1 ports, once its model answers
    readiness."""
    http, grpc, metrics = free_ports(3)
    command = env.cliplit("serve", "--model", str(model), "--backend", "onnxruntime", "--address", "127.0.0.1")
    command += ["--http-port", str(http)]
    command += ["--grpc-port", str(grpc), "--metrics-port", str(metrics), *options]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env.environ(), cwd=log.parent)
    server = Server(process, http, grpc, metrics, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"cliplit serve exited with {process.returncode}:\n{server.log_tail()}")
        if http_status(f"http://127.0.0.1:{http}/v2/models/clip_lit/ready") == 200:
            return server
        time.sleep(0.5)
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
    # a short exit timeout: this stop only cleans up, and a two-instance unload has hung once (docs/serving.md)
    server = start_server(server_env, float_onnx, log, *options, "--exit-timeout", "10")
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
        (np.zeros((1, 32, 48, 4), np.uint8), "UINT8", "unexpected shape for input 'frame'"),
        (np.zeros((1, 1, 48, 3), np.uint8), "UINT8", "frame of 48x1 pixels is too small"),
        (np.zeros((1, 32, MAX_SIDE + 1, 3), np.uint8), "UINT8", f"takes sides up to {MAX_SIDE}"),
    ],
    ids=["dtype", "rank", "channels", "too-small", "too-large"],
)
def test_bad_request_is_a_clear_error_and_the_server_keeps_serving(server, local, batch, datatype, message):
    with pytest.raises(httpclient.InferenceServerException) as caught:
        raw_infer(server, batch, datatype)
    assert message in caught.value.message()
    good = frames_of(2, seed=3, sizes=((32, 48),))
    assert np.array_equal(raw_infer(server, np.stack(good), "UINT8"), np.stack(local.enhance_batch(good)))


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


def test_sigterm_finishes_requests_in_flight_and_exits_0(server_env, float_onnx, local, tmp_path):
    options = ["--instances", "1", "--threads", "1", "--max-batch", "4"]
    server = start_server(server_env, float_onnx, tmp_path / "server.log", *options)
    try:
        # eight requests of four 64×96 frames, all sent at once: one instance runs them one after another, so when
        # the first answer arrives the others are queued or running in the server. The client holds its HTTP
        # connections open until it has all answers, as real clients do (Triton drains them before stopping).
        batches = [frames_of(4, seed=10 + i, sizes=((64, 96),)) for i in range(8)]
        with Enhancer.open(server.url, TritonOptions(timeout=REQUEST_TIMEOUT_S, in_flight=8)) as remote:
            pending = [remote.submit(batch) for batch in batches]
            handles = [future for group in pending for part in group for future in part.handle]
            deadline = time.monotonic() + REQUEST_TIMEOUT_S
            while not any(future.done() for future in handles) and time.monotonic() < deadline:
                time.sleep(0.01)
            in_flight = sum(not future.done() for future in handles)
            server.process.send_signal(signal.SIGTERM)
            results = [remote.collect(group) for group in pending]
        assert in_flight >= 4, "the server answered too fast for the test to stop it mid-work"
        for batch, result in zip(batches, results, strict=True):
            assert all(np.array_equal(a, b) for a, b in zip(result, local.enhance_batch(batch), strict=True))
        assert server.process.wait(timeout=60) == 0, server.log_tail()
        log = server.log.read_text(errors="replace")
        assert "server stopped" in log
        assert "Exit timeout expired" not in log  # Triton stopped cleanly, not by giving up on open work
    finally:
        stop_server(server)


def test_the_shipped_student_is_served_by_name_without_torch(server_env, tmp_path, monkeypatch):
    """The serving environment has no torch; an empty cache: the student's model is built from its weights there."""
    no_torch = subprocess.run([str(server_env.python), "-c", "import torch"], capture_output=True, check=False)
    assert no_torch.returncode != 0
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    server = start_server(server_env, "clip-lit-rt", tmp_path / "server.log", "--exit-timeout", "10")
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
