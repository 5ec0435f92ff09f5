"""Backend selection, the ONNX Runtime and torch backends, and the cached default model."""

from __future__ import annotations

import re
import shutil
import sys
import types

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SMALL_PHOTO, photo

from cliplit.core.contract import META_IO, META_WEIGHTS_SHA256
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.weights import RELEASED
from cliplit.runtime import models as default_model
from cliplit.runtime.backends import open_backend, options_for
from cliplit.runtime.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions, default_providers
from cliplit.runtime.backends.openvino import OpenVinoOptions
from cliplit.runtime.backends.tensorrt import TensorRTOptions
from cliplit.runtime.backends.triton import TritonOptions


def rgb_batch(height: int = 64, width: int = 96) -> np.ndarray:
    bgr = read_image(photo(SMALL_PHOTO))[300 : 300 + height, 200 : 200 + width]
    return np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255


def with_metadata(source, target, **changes: str):
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(changes)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {k: v for k, v in props.items() if v})
    onnx.save(model, str(target))
    return target


def test_onnx_model_runs_on_onnxruntime_with_its_metadata_io(float_onnx, uint8_onnx):
    backend = open_backend(float_onnx, OnnxRuntimeOptions(threads=1))
    assert isinstance(backend, OnnxRuntimeBackend) and backend.io == "float"
    assert backend.providers[-1] == "CPUExecutionProvider"
    assert backend.session.get_session_options().intra_op_num_threads == 1
    outputs = backend.run(rgb_batch())
    assert outputs["enhanced"].shape == (1, 3, 64, 96) and outputs["light_map"].shape == (1, 1, 64, 96)
    assert open_backend(uint8_onnx, "onnxruntime").io == "uint8"


def test_model_without_cliplit_metadata_is_refused(float_onnx, tmp_path):
    bare = with_metadata(float_onnx, tmp_path / "bare.onnx", **{META_IO: ""})
    with pytest.raises(CliplitError, match="not exported by cliplit"):
        OnnxRuntimeBackend(bare)


def test_metadata_that_contradicts_the_graph_is_refused(float_onnx, tmp_path):
    lying = with_metadata(float_onnx, tmp_path / "lying.onnx", **{META_IO: "uint8"})
    with pytest.raises(CliplitError, match="says io=uint8"):
        OnnxRuntimeBackend(lying)


@pytest.mark.parametrize("content", [None, b"", b"\x08\x07garbage"], ids=["missing", "empty", "garbage"])
def test_unloadable_model_is_a_clear_error(tmp_path, content):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CliplitError, match=r"model\.onnx"):
        open_backend(path)


def test_bad_thread_count_is_a_clear_error(float_onnx):
    with pytest.raises(CliplitError, match="--threads"):
        OnnxRuntimeBackend(float_onnx, OnnxRuntimeOptions(threads=0))


def test_sessions_sleep_instead_of_spinning_unless_asked(monkeypatch, float_onnx):
    """Idle ONNX Runtime workers spin by default; the runtime's sessions sleep (decode and encode threads need the
    cores), for the backend's session and the tiled path's alike, and spin_wait=True restores ONNX Runtime's way."""
    from cliplit.runtime.backends import onnxruntime as ort_backend
    from cliplit.runtime.backends.onnxruntime import session_options

    opened = []
    real_open = ort_backend.open_session
    monkeypatch.setattr(ort_backend, "open_session", lambda p, o, pr: opened.append(o) or real_open(p, o, pr))
    OnnxRuntimeBackend(float_onnx, OnnxRuntimeOptions(threads=1)).close()
    keys = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
    assert [opened[0].get_session_config_entry(key) for key in keys] == ["0", "0"]
    assert opened[0].intra_op_num_threads == 1
    spinning = session_options(OnnxRuntimeOptions(spin_wait=True))
    for key in keys:  # ONNX Runtime raises for an entry that was never set: its default (spinning) applies
        with pytest.raises(RuntimeError, match="does not have configuration"):
            spinning.get_session_config_entry(key)


def test_submitted_batches_run_at_once_and_each_gets_its_own_outputs(float_onnx):
    """submit() must not run the batch itself: two runs meet at a barrier (run one after the other, the first would
    wait for the second forever); outputs come back per handle in any order, an error at its own wait()."""
    import threading

    backend = OnnxRuntimeBackend(float_onnx, OnnxRuntimeOptions(threads=1, overlap=2))
    real_run = backend.session.run
    barrier = threading.Barrier(2, timeout=20)

    class MeetingSession:
        def run(self, names, feeds):
            barrier.wait()  # BrokenBarrierError after 20 s if only one run is under way
            if feeds["image"].shape[2] == 3:
                raise RuntimeError("a failing batch")
            return real_run(names, feeds)

    batches = [np.random.default_rng(i).random((1, 3, 24 + 8 * i, 40), dtype=np.float32) for i in range(2)]
    expected = [backend.run(batch) for batch in batches]
    backend.session = MeetingSession()
    handles = [backend.submit(batch) for batch in batches]
    for index in (1, 0):  # out of submission order
        outputs = backend.wait(handles[index])
        for name, value in expected[index].items():
            np.testing.assert_array_equal(outputs[name], value)
    failing = [backend.submit(np.zeros((1, 3, 3, 3), np.float32)), backend.submit(batches[0])]
    assert backend.wait(failing[1])["light_map"].shape == (1, 1, 24, 40)
    with pytest.raises(RuntimeError, match="a failing batch"):
        backend.wait(failing[0])
    with pytest.raises(TypeError, match="not one of its handles"):
        backend.wait(object())
    backend.close()
    backend.close()  # twice is harmless


def test_students_overlap_two_batches_and_the_teacher_runs_one_at_a_time(float_onnx):
    """The teacher's submit() runs the batch before returning (two at once would double its memory); a student's
    returns at once."""
    from cliplit.runtime.backends.base import Completed
    from cliplit.runtime.backends.onnxruntime import Running
    from cliplit.runtime.models import ensure_onnx

    frame = np.random.default_rng(3).random((1, 3, 16, 24), dtype=np.float32)
    with OnnxRuntimeBackend(float_onnx) as teacher:
        assert teacher.overlap == 1 and isinstance(teacher.submit(frame), Completed)
    with OnnxRuntimeBackend(ensure_onnx("clip-lit-rt", "float")) as student:
        handle = student.submit(frame)
        assert student.overlap == 2 and isinstance(handle, Running)
        assert student.wait(handle)["light_map"].shape == (1, 1, 16, 24)
    with pytest.raises(CliplitError, match="overlap must be at least 1"):
        OnnxRuntimeOptions(overlap=0)


def test_providers_prefer_tensorrt_then_cuda_then_cpu(monkeypatch, cliplit_home):
    offered = ["CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: offered)
    providers = default_providers(device=1)
    assert [p if isinstance(p, str) else p[0] for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers[0][1]["device_id"] == "1" and providers[1][1] == {"device_id": "1"}
    assert providers[0][1]["trt_engine_cache_path"].startswith(str(cliplit_home))


@pytest.mark.parametrize(
    ("model", "backend", "message"),
    [
        ("x.engine", "onnxruntime", "only --backend tensorrt"),
        ("x.onnx", "tensorrt", "needs a TensorRT engine"),
        ("x.engine", "openvino", "only --backend tensorrt"),
        ("x.onnx", "openvino-gpu", "unknown backend"),
    ],
)
def test_impossible_model_backend_pairs_are_clear_errors(model, backend, message):
    with pytest.raises(CliplitError, match=message):
        open_backend(model, backend)


@pytest.mark.parametrize(
    ("backend", "values", "message"),
    [
        ("tensorrt", {"precision": "fp32"}, "--precision fp32 does not apply to --backend tensorrt: an engine runs in"),
        ("tensorrt", {"threads": 2}, "--threads 2 does not apply to --backend tensorrt"),
        ("openvino", {"device": 1}, "--device 1 does not apply to --backend openvino: OpenVINO runs on the device"),
        ("openvino", {"device": 0}, "--device 0 does not apply to --backend openvino"),  # given, though GPU 0
        ("onnxruntime", {"precision": "bf16"}, "--precision bf16 does not apply to --backend onnxruntime"),
        ("torch", {"precision": "fp16"}, "--precision fp16 does not apply to --backend torch"),
        ("triton", {"device": 1}, "--device 1 does not apply to --backend triton"),
        ("onnxruntime", {"in_flight": 3}, "the onnxruntime backend has no option 'in_flight'"),
    ],
)
def test_an_option_the_backend_cannot_honour_is_refused_with_the_reason(backend, values, message):
    with pytest.raises(CliplitError, match=re.escape(message)):
        options_for(backend, **values)


def test_options_not_given_or_honoured_anyway_are_not_errors():
    assert options_for("tensorrt", threads=None, device=1, precision=None) == TensorRTOptions(device=1)
    assert options_for("onnxruntime", threads=2, device=0, precision="fp32") == OnnxRuntimeOptions(threads=2)
    assert options_for("openvino", threads=None, device=None, precision="bf16") == OpenVinoOptions(precision="bf16")
    assert options_for("triton", threads=None, device=None, precision=None) == TritonOptions()


def test_engine_loads_the_tensorrt_backend_lazily(monkeypatch, tmp_path):
    calls = []

    class FakeTensorRTBackend:
        def __init__(self, path, options):
            calls.append((path, options))

    fake = types.ModuleType("cliplit.runtime.backends.tensorrt")
    fake.TensorRTBackend, fake.TensorRTOptions = FakeTensorRTBackend, TensorRTOptions
    monkeypatch.setitem(sys.modules, "cliplit.runtime.backends.tensorrt", fake)
    engine = tmp_path / "model.engine"
    assert isinstance(open_backend(engine, TensorRTOptions(device=3)), FakeTensorRTBackend)
    assert calls == [(engine, TensorRTOptions(device=3))]
    assert isinstance(open_backend(engine), FakeTensorRTBackend) and calls[-1] == (engine, TensorRTOptions())


def test_missing_tensorrt_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cliplit.runtime.backends.tensorrt", None)  # import fails
    with pytest.raises(CliplitError, match="cliplit\\[tensorrt\\]"):
        open_backend(tmp_path / "model.engine")


def test_torch_backend_runs_the_weights_an_onnx_was_exported_from(float_onnx):
    from cliplit.runtime.backends.torch import TorchBackend

    torch_backend = open_backend(float_onnx, "torch")
    assert isinstance(torch_backend, TorchBackend) and torch_backend.checkpoint.name == "clip-lit"
    batch = rgb_batch()
    ours = torch_backend.run(batch)
    theirs = open_backend(float_onnx, "onnxruntime").run(batch)
    assert np.abs(ours["light_map"] - theirs["light_map"]).max() < 1e-4
    torch_backend.close()


def test_torch_backend_refuses_an_onnx_of_unknown_weights(float_onnx, tmp_path):
    stranger = with_metadata(float_onnx, tmp_path / "stranger.onnx", **{META_WEIGHTS_SHA256: "0" * 64})
    with pytest.raises(CliplitError, match=r"pass --model path/to/weights\.pth"):
        open_backend(stranger, "torch")


def test_default_model_is_exported_once_into_the_cache(monkeypatch, tmp_path, released_weights):
    """The Quick start exports the released weights given as a path; a later run without --model (offline, the
    weights not in the cache) finds that export by the weights' SHA-256 instead of downloading them."""
    home = tmp_path / "home"
    monkeypatch.setenv("CLIPLIT_HOME", str(home))
    downloaded = tmp_path / "elsewhere" / "enhancement_model.pth"
    downloaded.parent.mkdir()
    shutil.copyfile(released_weights, downloaded)
    backend = open_backend(downloaded)  # weights given by path: exported to ONNX on first use
    sha = RELEASED["clip-lit"].sha256
    cached = home / "models" / f"weights-{sha[:16]}-float.onnx"
    assert backend.model_path == cached and backend.io == "float"
    assert backend.metadata[META_WEIGHTS_SHA256] == sha
    backend.close()

    import cliplit.core.weights as weights
    import cliplit.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: pytest.fail("exported a second time"))
    monkeypatch.setattr(weights, "_download", lambda *a, **k: pytest.fail("tried to download"))
    assert not (home / "weights" / "enhancement_model.pth").exists()
    assert default_model.ensure_onnx() == cached  # no model: the released name, same SHA-256
    assert open_backend().model_path == cached


def test_weights_paths_get_their_own_cached_export(tmp_path, released_weights, init_weights):
    copy = tmp_path / "my_weights.pth"
    shutil.copyfile(released_weights, copy)
    path = default_model.cached_onnx_path(copy, "uint8")
    assert path == default_model.cached_onnx_path("clip-lit", "uint8")
    assert path.name == f"weights-{RELEASED['clip-lit'].sha256[:16]}-uint8-r2.onnx"  # revised graph, new file
    assert default_model.cached_onnx_path(init_weights) != default_model.cached_onnx_path(copy)
