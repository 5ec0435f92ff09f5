"""`cliplit serve`'s pieces that need no server: request checks, size grouping, the stub's library path, and the
triton:// model kind. These run everywhere; tests/test_serve.py runs the real server where PyTriton installs."""

from __future__ import annotations

import numpy as np
import pytest

from cliplit.core.contract import MIN_SIDE
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends import model_kind, open_backend, select_backend
from cliplit.runtime.backends.triton import ServerModel, TritonOptions, parse_model_url, server_message
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.serve import BadRequestError, FrameHandler, ServeSettings, check_frames, stub_library_path


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
    requests = [
        {"frame": frames(2, 32, 48, 0)},
        {"frame": frames(1, 20, 30, 1)},
        {"frame": frames(3, 32, 48, 2)},
        {"frame": frames(1, MIN_SIDE, MIN_SIDE, 3)},
    ]
    with Enhancer.open(float_onnx) as local, Enhancer.open(float_onnx) as served:
        calls: list[int] = []
        submit = served.backend.submit
        served.backend.submit = lambda batch: calls.append(len(batch)) or submit(batch)
        responses = FrameHandler(served, max_side=64)(requests)
        assert sorted(calls) == [1, 1, 5]  # the two 32×48 requests ran as one batch of 5
        for request, response in zip(requests, responses, strict=True):
            assert list(response) == ["enhanced"]
            want = np.stack(local.enhance_batch(list(request["frame"])))
            assert np.array_equal(response["enhanced"], want)


def test_handler_rejects_a_batch_with_a_bad_request(float_onnx):
    with Enhancer.open(float_onnx) as enhancer:
        handler = FrameHandler(enhancer, max_side=64)
        with pytest.raises(BadRequestError, match="too large"):
            handler([{"frame": frames(1, 8, 8, 0)}, {"frame": frames(1, 8, 100, 0)}])


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
