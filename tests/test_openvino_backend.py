"""The OpenVINO backend: both I/O variants, asynchronous requests, its options and errors, and the auto policy.

The policy tests fake the CPU (its /proc/cpuinfo flags, OpenVINO's reported capabilities, what is installed), never
the engine: every backend here is a real OpenVINO compilation of the real export.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from conftest import SMALL_PHOTO, photo

import cliplit.runtime.backends as backends
import cliplit.runtime.backends.openvino as openvino_backend
from cliplit.core.contract import META_IO, model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.light_map import to_uint8
from cliplit.export.onnx_export import export_onnx
from cliplit.runtime.backends import open_backend, options_for, select_backend
from cliplit.runtime.backends.openvino import (
    NATIVE_BF16_FLAGS,
    OpenVinoBackend,
    OpenVinoOptions,
    choose_precision,
    cpu_flags,
)
from cliplit.runtime.cli import main
from cliplit.runtime.enhancer import Enhancer
from cliplit.train.checkpoint import load_enhancer

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'cliplit[openvino]')")
CAPABILITIES = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def crop(top: int = 300, left: int = 200, height: int = 64, width: int = 96) -> np.ndarray:
    """A 1×H×W×3 BGR batch cut from a real photo."""
    return np.ascontiguousarray(read_image(photo(SMALL_PHOTO))[top : top + height, left : left + width])[None]


def with_io_metadata(source, target, io: str):
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props if p.key != META_IO}
    if io:
        props[META_IO] = io
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def fp32_float(float_onnx) -> OpenVinoBackend:
    return OpenVinoBackend(float_onnx, OpenVinoOptions(precision="fp32"))


def test_both_io_variants_run_and_agree(fp32_float, uint8_onnx):
    frames = crop()
    floats = fp32_float.run(model_input_from_bgr("float", frames))
    assert fp32_float.io == "float" and fp32_float.metadata[META_IO] == "float"
    assert floats["enhanced"].shape == (1, 3, 64, 96) and floats["light_map"].shape == (1, 1, 64, 96)
    uint8 = OpenVinoBackend(uint8_onnx, OpenVinoOptions(precision="fp32"))
    assert uint8.io == "uint8"
    enhanced = uint8.run(model_input_from_bgr("uint8", frames))["enhanced"]
    assert enhanced.dtype == np.uint8 and enhanced.shape == frames.shape
    expected = to_uint8(floats["enhanced"][0].transpose(1, 2, 0)[..., ::-1])
    assert np.abs(enhanced[0].astype(int) - expected).max() <= 1  # the same network; only rounding may differ


def test_a_single_output_export_runs_and_auto_picks_openvino_for_it(fp32_float, released_weights, tmp_path):
    """export-engine --outputs enhanced (vs-mlrt's model) was refused for lacking the light map."""
    from cliplit.runtime.backends import select_backend
    from cliplit.runtime.enhancer import Enhancer

    single = export_onnx(load_enhancer(released_weights), tmp_path / "single.onnx", outputs=("enhanced",)).path
    backend = OpenVinoBackend(single, OpenVinoOptions(precision="fp32"))
    try:
        assert backend.outputs == ("enhanced",)
        got = backend.run(model_input_from_bgr("float", crop()))
        assert set(got) == {"enhanced"}
        expected = fp32_float.run(model_input_from_bgr("float", crop()))["enhanced"]
        np.testing.assert_allclose(got["enhanced"], expected, rtol=0, atol=1e-6)
    finally:
        backend.close()
    assert select_backend(single) == "openvino"
    with Enhancer.open(single) as enhancer:
        assert enhancer.enhance(crop()[0]).shape == (64, 96, 3)


def test_submit_keeps_several_batches_in_flight_and_wait_returns_each_its_own(fp32_float):
    batches = [
        model_input_from_bgr("float", crop(top, left, 48 + 16 * i, 64))
        for i, (top, left) in enumerate([(300, 200), (100, 50), (400, 300)])
    ]
    expected = [fp32_float.run(batch)["enhanced"] for batch in batches]
    handles = [fp32_float.submit(batch) for batch in batches]
    order = [2, 0, 1]  # out of submission order: each handle still gets its own batch's outputs
    results = {index: fp32_float.wait(handles[index]) for index in order}
    for index, want in enumerate(expected):
        assert np.array_equal(results[index]["enhanced"], want), index
    with pytest.raises(CliplitError, match="already collected"):
        fp32_float.wait(handles[0])
    with pytest.raises(TypeError, match="not one of its handles"):
        fp32_float.wait(object())


def test_outputs_survive_the_reuse_of_their_request(fp32_float):
    first = fp32_float.run(model_input_from_bgr("float", crop(300, 200)))
    kept = first["enhanced"].copy()
    fp32_float.run(model_input_from_bgr("float", crop(100, 50)))  # reuses the same request
    assert np.array_equal(first["enhanced"], kept)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.zeros((1, 3, 32, 32), np.float64), r"takes a 4-D float32 batch \(NCHW\), got float64"),
        (np.zeros((1, 3, 32, 32), np.uint8), "got uint8"),  # OpenVINO would convert 0..255 to float silently
        (np.zeros((3, 32, 32), np.float32), "of shape"),
        (np.zeros((1, 4, 32, 32), np.float32), r"OpenVINO rejected a batch of shape \(1, 4, 32, 32\): .*incompatible"),
    ],
)
def test_a_batch_outside_the_contract_is_a_clear_error(fp32_float, batch, message):
    with pytest.raises(CliplitError, match=message):
        fp32_float.submit(batch)
    assert fp32_float.run(model_input_from_bgr("float", crop()))["enhanced"].shape == (1, 3, 64, 96)  # still usable


def test_a_frame_too_small_for_the_models_pooling_is_a_clear_error():
    """OpenVINO's CPU plugin refuses a pooling kernel larger than its input (ONNX Runtime pools what there is): the
    student's 4x4 average pooling on a 2x3 frame fails in the request, and must come back as a clear error."""
    from cliplit.runtime.models import ensure_onnx

    backend = OpenVinoBackend(ensure_onnx("clip-lit-rt", "float"), OpenVinoOptions(precision="fp32"))
    try:
        with pytest.raises(CliplitError, match=r"could not run a batch of shape \(1, 3, 2, 3\).*--backend onnxruntime"):
            backend.run(np.zeros((1, 3, 2, 3), np.float32))
        assert backend.run(np.zeros((1, 3, 8, 8), np.float32))["light_map"].shape == (1, 1, 8, 8)  # still usable
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads": 0}, "--threads must be at least 1"),
        ({"precision": "int4"}, "--precision 'int4': expected one of fp32, bf16, fp16"),
        ({"device_name": ""}, "device name is empty"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(CliplitError, match=message):
        OpenVinoOptions(**options)


def test_unknown_device_is_a_clear_error(float_onnx):
    with pytest.raises(CliplitError, match="OpenVINO has no device 'NOSUCH' here; it has CPU"):
        OpenVinoBackend(float_onnx, OpenVinoOptions(device_name="NOSUCH"))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such ONNX model"), (b"\x08\x07garbage", "OpenVINO cannot read this model")],
    ids=["missing", "garbage"],
)
def test_unloadable_model_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CliplitError, match=rf"model\.onnx: {message}"):
        OpenVinoBackend(path)


def test_model_without_or_with_contradicting_metadata_is_refused(float_onnx, tmp_path):
    with pytest.raises(CliplitError, match="not exported by cliplit"):
        OpenVinoBackend(with_io_metadata(float_onnx, tmp_path / "bare.onnx", ""))
    with pytest.raises(CliplitError, match=r"says io=uint8 but (has inputs|its .cliplit.outputs. metadata does not)"):
        OpenVinoBackend(with_io_metadata(float_onnx, tmp_path / "lying.onnx", "uint8"))


def test_missing_openvino_says_what_to_install(monkeypatch, float_onnx):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails
    with pytest.raises(CliplitError, match=r"pip install 'cliplit\[openvino\]'"):
        OpenVinoBackend(float_onnx)


def test_threads_are_applied(float_onnx):
    backend = OpenVinoBackend(float_onnx, OpenVinoOptions(threads=1, precision="fp32", cache=False))
    assert backend.threads == 1 and "1 threads" in backend.describe()
    assert backend.details()["precision"] == "fp32" and "requested with --precision fp32" in backend.describe()


# --- the precision policy: pure, so every CPU can be described -------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "device", "capabilities", "flags", "precision", "reason"),
    [
        (None, "CPU", ["BF16", "FP32"], {"avx512f", "amx_bf16"}, "bf16", "native bf16 (amx_bf16)"),
        (None, "CPU", ["BF16", "FP32"], {"avx512_bf16"}, "bf16", "56.2–58.2 dB"),
        (None, "CPU", ["BF16", "FP32"], {"avx2", "avx512f"}, "fp32", "no native bf16"),
        (None, "CPU", ["FP32", "INT8"], {"avx512_bf16"}, "fp32", "no native bf16"),
        (None, "CPU", ["BF16", "FP32"], None, "bf16", "OpenVINO reports BF16"),  # no /proc/cpuinfo
        (None, "GPU", ["BF16", "FP16", "FP32"], None, "fp32", "only on CPUs"),
        ("fp32", "CPU", ["BF16", "FP32"], {"amx_bf16"}, "fp32", "requested with --precision fp32"),
        ("bf16", "CPU", ["BF16", "FP32"], {"amx_bf16"}, "bf16", "requested with --precision bf16"),
        ("fp16", "CPU", ["FP16", "FP32"], {"avx512_fp16"}, "fp16", "requested with --precision fp16"),
    ],
)
def test_precision_policy(requested, device, capabilities, flags, precision, reason):
    choice = choose_precision(requested, device, capabilities, flags)
    assert choice.precision == precision and reason in choice.reason


def test_a_students_bf16_choice_cites_the_students_evidence():
    """The teacher's 56.2–58.2 dB against the official outputs says nothing about a student; its own estimate does."""
    choice = choose_precision(None, "CPU", ["BF16", "FP32"], {"amx_bf16"}, student=True)
    assert choice.precision == "bf16" and "59.7–60.3 dB of FP32" in choice.reason and "56.2" not in choice.reason


@pytest.mark.parametrize(("requested", "needs"), [("bf16", "AVX512_BF16 or AMX"), ("fp16", "AVX512_FP16 or AMX-FP16")])
def test_a_precision_the_device_cannot_run_natively_is_refused(requested, needs):
    with pytest.raises(CliplitError, match=rf"--precision {requested}: .* does not run {requested} natively.*{needs}"):
        choose_precision(requested, "CPU", ["FP32", "INT8"], {"avx2"})


def test_auto_runs_fp32_on_a_cpu_without_native_bf16(monkeypatch, float_onnx):
    monkeypatch.setattr(openvino_backend, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "fma"}))
    backend = open_backend(float_onnx)
    assert isinstance(backend, OpenVinoBackend) and backend.details()["precision"] == "fp32"
    assert "no native bf16 on this CPU (needs AVX512_BF16 or AMX)" in backend.describe()


def test_auto_runs_bf16_on_a_cpu_with_native_bf16(monkeypatch, float_onnx):
    monkeypatch.setattr(openvino_backend, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    backend = open_backend(float_onnx)
    # whether OpenVINO itself offers bf16 here is the engine's (real) answer; the CPU flags are faked
    assert backend.details()["precision"] == ("bf16" if "BF16" in CAPABILITIES else "fp32")
    assert "(amx_bf16)" in backend.describe() or "BF16" not in CAPABILITIES


def test_a_student_on_a_cpu_with_native_bf16_is_described_by_its_own_evidence(monkeypatch):
    monkeypatch.setattr(openvino_backend, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    with Enhancer.open("clip-lit-rt", "openvino") as student:
        assert student.fast is not None
        if "BF16" in CAPABILITIES:  # OpenVINO's own answer; on other CPUs it runs FP32 whatever the flags say
            assert "fast-path frames within 59.7–60.3 dB" in student.describe()
        else:
            assert student.backend.details()["precision"] == "fp32"


def test_auto_on_this_machine_matches_its_cpu():
    flags = cpu_flags()
    native = flags is None or bool(set(NATIVE_BF16_FLAGS) & flags)
    expected = "bf16" if native and "BF16" in CAPABILITIES else "fp32"
    assert choose_precision(None, "CPU", CAPABILITIES, flags).precision == expected


# --- which backend auto picks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("openvino", "gpu", "onnx", "weights"),
    [
        (False, False, "onnxruntime", "onnxruntime"),  # the base install: unchanged
        (True, False, "openvino", "openvino"),
        (True, True, "onnxruntime", "onnxruntime"),  # onnxruntime-gpu's CUDA/TensorRT beat any CPU engine
    ],
)
def test_auto_picks_the_fastest_installed_engine(monkeypatch, openvino, gpu, onnx, weights):
    monkeypatch.setattr(backends, "installed", lambda module: openvino if module == "openvino" else True)
    monkeypatch.setattr(backends, "onnxruntime_has_gpu", lambda: gpu)
    assert select_backend("model.onnx") == onnx
    assert select_backend(None) == select_backend("weights.pth") == weights
    assert select_backend("model.engine") == "tensorrt"
    assert select_backend("model.onnx", "onnxruntime") == "onnxruntime"
    assert select_backend("clip-lit-rt") == "onnxruntime"  # students run fastest on ONNX Runtime, wherever


def test_auto_runs_students_on_onnxruntime(monkeypatch, float_onnx, tmp_path):
    """A distilled student is recognised by its export's teacher metadata or its checkpoint's architecture (OpenVINO
    took twice ONNX Runtime's time on it); the teacher, in either form, still goes to OpenVINO."""
    from cliplit.runtime.models import ensure_onnx
    from cliplit.train.checkpoint import load_enhancer, save_enhancer

    monkeypatch.setattr(backends, "installed", lambda module: True)
    monkeypatch.setattr(backends, "onnxruntime_has_gpu", lambda: False)
    student_pth = save_enhancer(load_enhancer("clip-lit-rt").model, tmp_path / "mine.pth")
    assert select_backend(ensure_onnx("clip-lit-rt", "float")) == select_backend(student_pth) == "onnxruntime"
    assert select_backend(float_onnx) == select_backend("clip-lit") == "openvino"
    assert select_backend(tmp_path / "missing.pth") == "openvino"  # not loadable: its own error comes later


def test_options_for_maps_the_cli_flags():
    assert options_for("openvino", threads=2, device=None, precision="fp32") == OpenVinoOptions(
        threads=2, precision="fp32"
    )
    assert options_for("openvino", threads=None, device=None, precision=None) == OpenVinoOptions()
    with pytest.raises(CliplitError, match="--device 1 does not apply to --backend openvino"):
        options_for("openvino", device=1)  # a GPU index OpenVINO cannot honour is refused, not dropped


# --- the command line -------------------------------------------------------------------------------------------


@pytest.fixture
def small_image(tmp_path):
    import cv2

    path = tmp_path / "in.png"
    cv2.imwrite(str(path), crop()[0])
    return path


def enhance(*argv: object) -> int:
    return main(["enhance", *map(str, argv), "--no-progress"])


def test_without_openvino_auto_runs_onnxruntime_as_before(monkeypatch, small_image, float_onnx, tmp_path, capsys):
    monkeypatch.setattr(backends, "installed", lambda module: module != "openvino")
    assert enhance(small_image, "-o", tmp_path / "out", "--model", float_onnx) == 0
    assert "enhancer: onnxruntime (CPU)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--backend", "onnxruntime", "--precision", "bf16"],
            "--precision bf16 does not apply to --backend onnxruntime",
        ),
        (["--backend", "openvino", "--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_precision_or_threads_on_the_command_line(small_image, float_onnx, tmp_path, capsys, argv, message):
    assert enhance(small_image, "-o", tmp_path / "out", "--model", float_onnx, *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_precision_fp32_is_accepted_by_every_cpu_backend(small_image, float_onnx, tmp_path, capsys):
    assert (
        enhance(
            small_image,
            "-o",
            tmp_path / "ort",
            "--model",
            float_onnx,
            "--backend",
            "onnxruntime",
            "--precision",
            "fp32",
        )
        == 0
    )
    assert enhance(small_image, "-o", tmp_path / "ov", "--model", float_onnx, "--precision", "fp32") == 0
    assert "FP32: requested with --precision fp32" in capsys.readouterr().err
