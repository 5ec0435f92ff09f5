"""`cliplit serve`'s pieces that need no server: request checks, size grouping, batches within the memory budget,
the budget's split, the drain's tickets, the exposure note, the stub's library path, and the triton:// model kind.
These run everywhere; tests/test_serve.py runs the real server where PyTriton installs."""

from __future__ import annotations

import numpy as np
import pytest

from cliplit.core.contract import MIN_SIDE
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends import model_kind, open_backend, select_backend
from cliplit.runtime.backends.triton import ServerModel, TritonOptions, parse_model_url, server_message
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.serve import exposure_note, repository_config, stub_library_path
from cliplit.runtime.serve_budget import TRITON_RESERVE, drain_timeout, plan_budget
from cliplit.runtime.serve_model import (
    BadRequestError,
    Drain,
    FrameHandler,
    InstanceConfig,
    UnavailableError,
    check_frames,
)
from cliplit.runtime.serve_settings import ServeSettings

GIB = 1 << 30


def frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.zeros((1, 8, 8, 3), np.float32), "must be uint8 BGR frames, got float32"),
        (np.zeros((8, 8, 3), np.uint8), "must be N×H×W×3 (BGR), got shape (8, 8, 3)"),
        (np.zeros((1, 8, 8, 4), np.uint8), "must be N×H×W×3 (BGR), got shape (1, 8, 8, 4)"),
        (np.zeros((1, MIN_SIDE - 1, 8, 3), np.uint8), f"frame of 8x{MIN_SIDE - 1} pixels is too small"),
        (np.zeros((1, 8, 65, 3), np.uint8), "frame of 65x8 pixels is too large: this server takes sides up to 64"),
    ],
)
def test_bad_frames_say_what_is_wrong(batch, message):
    with pytest.raises(BadRequestError) as caught:
        check_frames(batch, max_side=64)
    assert message in str(caught.value)


def test_handler_batches_by_size_and_answers_in_request_order(float_onnx):
    requests = [frames(2, 32, 48, 0), frames(1, 20, 30, 1), frames(3, 32, 48, 2), frames(1, MIN_SIDE, MIN_SIDE, 3)]
    with Enhancer.open(float_onnx) as local, Enhancer.open(float_onnx, max_memory=8 * GIB) as served:
        calls: list[int] = []
        submit = served.backend.submit
        served.backend.submit = lambda batch: calls.append(len(batch)) or submit(batch)
        responses = FrameHandler(served, max_side=64, budget=8 * GIB)(requests)
        assert sorted(calls) == [1, 1, 5]  # the two 32×48 requests ran as one batch of 5
        for request, response in zip(requests, responses, strict=True):
            assert np.array_equal(response, np.stack(local.enhance_batch(list(request))))


def test_a_bad_request_fails_alone(float_onnx):
    """Each request gets its own answer: a bad one beside good ones of its size or another fails only itself."""
    with Enhancer.open(float_onnx) as enhancer:
        handler = FrameHandler(enhancer, max_side=64, budget=8 * GIB)
        good = frames(1, 8, 8, 0)
        responses = handler([good, frames(1, 8, 100, 0), np.zeros((1, 1, 8, 3), np.uint8), good])
        assert isinstance(responses[1], BadRequestError) and "too large" in str(responses[1])
        assert isinstance(responses[2], BadRequestError) and "too small" in str(responses[2])
        assert np.array_equal(responses[0], np.stack(enhancer.enhance_batch(list(good))))
        assert np.array_equal(responses[3], responses[0])


def test_batches_are_cut_to_what_the_budget_holds(float_onnx):
    """With room for two untiled frames beside what the process holds, five frames run as 2 + 2 + 1."""
    with Enhancer.open(float_onnx, max_memory=8 * GIB) as enhancer:
        calls: list[int] = []
        submit = enhancer.backend.submit
        enhancer.backend.submit = lambda batch: calls.append(len(batch)) or submit(batch)
        per_frame = enhancer.tiling.untiled_bytes_per_pixel * 32 * 48
        handler = FrameHandler(enhancer, max_side=64, budget=10**9 + 2 * per_frame + 1, held=lambda: 10**9)
        handler([frames(3, 32, 48, 0), frames(2, 32, 48, 1)])
        assert calls == [2, 2, 1]


class FakeStudent:
    """An enhancer whose model has no split (a student): the budget decides whether a frame can run at all."""

    class tiling:  # stands in for the Tiling instance
        untiled_bytes_per_pixel = 70
        _load = None

    def enhance_batch(self, batch):
        return list(batch)


def test_a_student_frame_above_the_budget_is_a_client_error():
    handler = FrameHandler(FakeStudent(), max_side=4096, budget=GIB, held=lambda: 200 << 20)
    fits, too_big = frames(1, 720, 1280, 0), np.zeros((1, 4000, 4000, 3), np.uint8)
    fitted, refused = handler([fits, too_big])
    assert np.array_equal(fitted, fits)
    assert isinstance(refused, BadRequestError)
    assert str(refused).startswith("frame of 4000x4000 pixels is too large for this server's memory budget")


def test_drain_tickets_admit_the_accepted_and_refuse_the_rest(tmp_path):
    drain = Drain(tmp_path, "clip_lit_0_0")
    handler = FrameHandler(FakeStudent(), max_side=64, budget=GIB, admit=drain.admit, held=lambda: 0)
    assert drain.admit(5) == 5  # no drain: everything starts
    (tmp_path / "drain").write_text('{"tickets": 3}')
    answers = handler([frames(1, 8, 8, i) for i in range(2)])
    assert all(isinstance(answer, np.ndarray) for answer in answers)
    answers = handler([frames(1, 8, 8, i) for i in range(3)])  # one ticket left: the oldest request gets it
    assert isinstance(answers[0], np.ndarray)
    assert all(isinstance(answer, UnavailableError) for answer in answers[1:])
    (tmp_path / "drain").write_text('{"tickets": 9}')
    (tmp_path / "refuse-unstarted").touch()  # the drain timeout ran out
    assert drain.admit(2) == 0


@pytest.mark.parametrize(
    ("settings", "max_batch", "max_queue"),
    [
        (ServeSettings(max_memory=2 * GIB, max_side=1280), 8, 9),
        (ServeSettings(max_memory=2 * GIB), 1, 6),  # 4096-pixel frames: one per request fits the frames' share
        (ServeSettings(max_memory=2 * GIB, max_batch=2, max_queue=3, max_side=1280), 2, 3),
    ],
)
def test_the_budget_holds_the_model_the_queue_and_triton(settings, max_batch, max_queue):
    budget = plan_budget(settings, instance_base=300 << 20, parent=100 << 20)
    assert (budget.max_batch, budget.max_queue) == (max_batch, max_queue)
    frame = settings.max_side**2 * 3
    assert budget.io == (4 * settings.instances + max_queue) * max_batch * frame
    assert budget.per_instance * settings.instances + budget.io + TRITON_RESERVE + (100 << 20) <= settings.max_memory
    assert budget.per_instance >= 300 << 20


def test_a_budget_too_small_says_what_to_change():
    with pytest.raises(CliplitError) as caught:
        plan_budget(ServeSettings(max_memory=GIB, instances=4), instance_base=300 << 20, parent=100 << 20)
    assert "--max-memory 1.0 GiB is too small for this server" in str(caught.value)
    assert "raise --max-memory, or lower --max-side, --max-batch, --max-queue or --instances" in str(caught.value)


def test_drain_timeout_covers_a_full_queue():
    settings = ServeSettings(max_memory=2 * GIB, max_side=1280)
    budget = plan_budget(settings, instance_base=300 << 20, parent=100 << 20)
    # (9 queued + 1 running) requests × 8 frames × 1280² pixels at 1 µs per pixel, twice, plus 10 s
    assert drain_timeout(settings, budget, 1e-6) == pytest.approx(10 + 2 * 80 * 1280 * 1280 * 1e-6)
    assert drain_timeout(ServeSettings(drain_timeout_s=5), budget, 1.0) == 5


def test_config_is_triton_text_with_the_instance_settings():
    settings = ServeSettings(max_memory=2 * GIB, max_side=1280, instances=2)
    budget = plan_budget(settings, instance_base=300 << 20, parent=100 << 20)
    instance = InstanceConfig('a "quoted" path\\x', "onnxruntime", {"threads": 1}, budget.per_instance, 1280, "/w")
    text = repository_config(settings, budget, instance)
    assert 'backend: "python"' in text and f"max_batch_size: {budget.max_batch}\n" in text
    assert f"max_queue_size: {budget.max_queue}" in text and "count: 2 kind: KIND_CPU" in text
    pytest.importorskip("tritonclient.grpc", reason="parsing Triton's schema needs tritonclient[grpc]")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert InstanceConfig.from_json(parsed.parameters["cliplit"].string_value) == instance


def test_only_a_non_loopback_address_gets_the_exposure_note():
    for local in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_note(local) is None
    note = exposure_note("0.0.0.0")
    assert note is not None and "no authentication" in note and "\n" not in note
    assert ServeSettings().address == "127.0.0.1"


def test_stub_gets_this_interpreters_libpython_first():
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR")
    assert stub_library_path({}) == libdir
    assert stub_library_path({"LD_LIBRARY_PATH": "/opt/a:/opt/b"}) == f"{libdir}:/opt/a:/opt/b"
    assert stub_library_path({"LD_LIBRARY_PATH": f"/opt/a:{libdir}"}) == f"/opt/a:{libdir}"  # already there


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"instances": 0}, "--instances must be at least 1"),
        ({"max_batch": 0}, "--max-batch must be at least 1"),
        ({"http_port": 8001}, "must be distinct ports"),
        ({"max_side": 1}, "--max-side must be at least 2"),
        ({"max_queue": 0}, "--max-queue must be at least 1"),
        ({"drain_timeout_s": 0}, "--drain-timeout must be more than 0"),
    ],
)
def test_bad_serve_settings(options, message):
    with pytest.raises(CliplitError, match=message):
        ServeSettings(**options)


def test_triton_urls_select_the_triton_backend():
    assert parse_model_url("triton://127.0.0.1:8000/clip_lit") == ServerModel("http", "127.0.0.1:8000", "clip_lit")
    assert parse_model_url("triton+grpc://gpu-box:8001/m") == ServerModel("grpc", "gpu-box:8001", "m")
    assert model_kind("triton://h:8000/clip_lit") == "server"
    assert select_backend("triton://h:8000/clip_lit") == "triton"
    assert select_backend("triton://h:8000/clip_lit", "triton") == "triton"
    with pytest.raises(CliplitError, match="only --backend triton"):
        select_backend("triton://h:8000/clip_lit", "onnxruntime")
    with pytest.raises(CliplitError, match="only --backend triton"):
        select_backend("model.onnx", "triton")
    for bad in ("triton://h/clip_lit", "triton://h:8000/", "http://h:8000/clip_lit", "triton://h:8000/a/b"):
        with pytest.raises(CliplitError, match="not a Triton model URL"):
            parse_model_url(bad)


def test_unreachable_server_is_a_clear_error():
    pytest.importorskip(
        "tritonclient.http", reason="the triton backend needs tritonclient (pip install 'cliplit[serve]')"
    )
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CliplitError, match=f"cannot reach the Triton server at 127.0.0.1:{port}"):
        open_backend(f"triton://127.0.0.1:{port}/clip_lit", TritonOptions(timeout=5))


def test_server_message_keeps_the_reason():
    traceback = (
        'Traceback ...\n  File "x"\ncliplit.runtime.serve.BadRequestError: frame of 1x1 pixels is too small\n\nAt:\n'
    )
    assert server_message(traceback) == "frame of 1x1 pixels is too small"
    assert server_message(" expects 'UINT8' ") == "expects 'UINT8'"
