"""The native TensorRT backend against fake TensorRT and CUDA: call sequence, data path, streams, buffers, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tensorrt_fakes import cudaError_t, exported_onnx, install

from cliplit.core.contract import random_model_input
from cliplit.core.cuda import CudaError
from cliplit.core.errors import CliplitError
from cliplit.core.shapes import profile_from_args
from cliplit.core.sidecar import EngineSidecar, write_sidecar
from cliplit.export.tensorrt_build import BuildSettings, build_serialized_engine
from cliplit.runtime.backends.tensorrt import TensorRTBackend, TensorRTOptions

PROFILES = {
    "float": ("1x3x8x8", "1x3x32x32", "2x3x64x96"),
    "uint8": ("1x8x8x3", "1x32x32x3", "2x64x96x3"),
}


def make_engine(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    stack,
    io: str,
    *,
    sidecar: bool = True,
    version_compatible: bool = False,
) -> Path:
    """An engine (and sidecar) built by the real build code on the installed fakes, FP32 so outputs are exact."""
    onnx_path = exported_onnx(tmp_path_factory, io)
    profile = profile_from_args(io, *PROFILES[io])
    settings = BuildSettings(profile, fp16=False, workspace_gib=1.0, version_compatible=version_compatible)
    plan = build_serialized_engine(stack.trt, onnx.load(str(onnx_path)), settings, b"").plan
    engine = tmp_path / f"{io}{'-compatible' if version_compatible else ''}.engine"
    engine.write_bytes(plan)
    if sidecar:
        write_sidecar(engine, make_sidecar(stack.trt.__version__, io, profile, version_compatible), overwrite=True)
    stack.log.clear()
    return engine


def make_sidecar(version: str, io: str, profile, version_compatible: bool) -> EngineSidecar:
    return EngineSidecar(
        io=io,
        input_name="image" if io == "float" else "frame",
        profile=profile.as_dict(),
        precision="fp32",
        fp16_method=None,
        tensorrt_version=version,
        gpu_name="NVIDIA Fake GPU",
        compute_capability="8.9",
        onnx_sha256="0" * 64,
        version_compatible=version_compatible,
        cliplit_version="test",
        workspace_gib=1.0,
    )


def reference(tmp_path_factory: pytest.TempPathFactory, io: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(exported_onnx(tmp_path_factory, io)), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch}), strict=True))


def frames(io: str, batch: int, height: int, width: int, seed: int) -> np.ndarray:
    return random_model_input(io, batch, height, width, np.random.default_rng(seed))


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_outputs_match_onnx_runtime_bit_for_bit(
    io: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, io)
    batch = frames(io, 2, 37, 53, seed=1)
    with TensorRTBackend(engine) as backend:
        assert backend.io == io and backend.name == "tensorrt"
        outputs = backend.run(batch)
    expected = reference(tmp_path_factory, io, batch)
    assert sorted(outputs) == sorted(expected)
    for name, value in expected.items():
        assert outputs[name].dtype == value.dtype and np.array_equal(outputs[name], value), name


def test_call_sequence_of_a_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    backend = TensorRTBackend(engine)
    setup = stack.log.names()
    assert setup == [
        "cudaGetDeviceCount",
        "cudaSetDevice",
        "cudaGetDeviceProperties",
        "Logger",
        "Runtime",
        "Runtime.deserialize_cuda_engine",
        "Runtime.engine_host_code_allowed",
        "ICudaEngine.get_tensor_profile_shape",
        "ICudaEngine.create_execution_context",
        "cudaStreamCreate",
        "ICudaEngine.create_execution_context",
        "cudaStreamCreate",
    ]
    stack.log.clear()
    backend.run(frames("float", 1, 20, 30, seed=2))
    assert stack.log.names() == [
        "cudaSetDevice",  # every entry point makes the backend's GPU current for the calling thread
        "IExecutionContext.set_input_shape",
        *["cudaMalloc", "cudaMallocHost", "IExecutionContext.set_tensor_address"] * 3,  # image, enhanced, light_map
        "cudaMemcpyAsync",
        "IExecutionContext.execute_async_v3",
        "cudaMemcpyAsync",
        "cudaMemcpyAsync",
        "cudaSetDevice",
        "cudaStreamSynchronize",
    ]
    assert stack.log.of("Runtime.engine_host_code_allowed") == []  # a plain engine runs no code from the plan
    assert stack.log.of("IExecutionContext.set_input_shape") == [("image", (1, 3, 20, 30))]
    assert [name for name, _ in stack.log.of("IExecutionContext.set_tensor_address")] == [
        "image",
        "enhanced",
        "light_map",
    ]
    copies = stack.log.of("cudaMemcpyAsync")
    assert [int(kind) for *_, kind, _ in copies] == [1, 2, 2]  # host to device, then device to host twice
    assert [count for _, _, count, _, _ in copies] == [1 * 3 * 20 * 30 * 4, 1 * 3 * 20 * 30 * 4, 1 * 1 * 20 * 30 * 4]
    (stream,) = stack.log.of("IExecutionContext.execute_async_v3")[0]
    assert {copy[-1] for copy in copies} == {stream} and stack.log.of("cudaStreamSynchronize") == [(stream,)]
    backend.close()
    assert not stack.cuda.memory and not stack.cuda.streams  # everything freed, both streams destroyed


def test_two_frames_in_flight_on_separate_streams(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8")
    first, second, third = (frames("uint8", 1, 24, 40, seed=s) for s in (3, 4, 5))
    with TensorRTBackend(engine) as backend:
        handle_a = backend.submit(first)
        handle_b = backend.submit(second)
        with pytest.raises(CliplitError, match="2 frames are already in flight; wait"):
            backend.submit(third)
        streams = [args[0] for args in stack.log.of("IExecutionContext.execute_async_v3")]
        assert len(set(streams)) == 2
        out_b = backend.wait(handle_b)  # out of order on purpose
        out_a = backend.wait(handle_a)
        with pytest.raises(CliplitError, match="already collected"):
            backend.wait(handle_a)
        out_c = backend.run(third)
    for batch, out in ((first, out_a), (second, out_b), (third, out_c)):
        assert np.array_equal(out["enhanced"], reference(tmp_path_factory, "uint8", batch)["enhanced"])


def test_buffers_are_reallocated_only_when_a_frame_grows(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8")
    with TensorRTBackend(engine, TensorRTOptions(in_flight=1)) as backend:
        backend.run(frames("uint8", 1, 40, 60, seed=6))
        assert len(stack.log.of("cudaMalloc")) == 2  # frame and enhanced
        for height, width in ((40, 60), (20, 30), (40, 60)):
            small = frames("uint8", 1, height, width, seed=7)
            out = backend.run(small)
            assert out["enhanced"].shape == small.shape
        assert len(stack.log.of("cudaMalloc")) == 2 and not stack.log.of("cudaFree")
        backend.run(frames("uint8", 2, 64, 96, seed=8))  # larger: both tensors grow
        assert len(stack.log.of("cudaMalloc")) == 4 and len(stack.log.of("cudaFree")) == 2
        assert len(stack.log.of("cudaFreeHost")) == 2


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            (1, 3, 4, 4),
            r"input 1x3x4x4 is outside the engine's optimization profile \(min 1x3x8x8, opt 1x3x32x32, max 2x3x64x96\)",
        ),
        ((3, 3, 16, 16), "input 3x3x16x16 is outside"),
        ((1, 3, 65, 16), "--min-shape/--max-shape"),
    ],
)
def test_frames_outside_the_profile_fail_clearly(
    shape: tuple[int, ...],
    message: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    with TensorRTBackend(engine) as backend:
        stack.log.clear()
        with pytest.raises(CliplitError, match=message):
            backend.submit(np.zeros(shape, np.float32))
        assert not stack.log.of("IExecutionContext.set_input_shape")
        assert backend.run(np.zeros((1, 3, 8, 8), np.float32))["enhanced"].shape == (1, 3, 8, 8)  # still usable


def test_wrong_dtype_or_layout_is_rejected(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8")
    with TensorRTBackend(engine) as backend:
        with pytest.raises(CliplitError, match="takes uint8 batches of shape NHWC; got float32"):
            backend.run(np.zeros((1, 16, 16, 3), np.float32))
        with pytest.raises(CliplitError, match="outside the engine's optimization profile"):
            backend.run(np.zeros((1, 3, 16, 16), np.uint8))


def test_tensorrt_version_mismatch_is_caught_before_deserializing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, "10.9.0.34")
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    stack = install(monkeypatch, "10.10.0.31")
    with pytest.raises(CliplitError, match=r"built with TensorRT 10\.9\.0\.34 and only runs on that version"):
        TensorRTBackend(engine)
    assert "Runtime.deserialize_cuda_engine" not in stack.log.names()


def test_gpu_mismatch_is_caught_before_deserializing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    stack = install(monkeypatch, gpu_name="NVIDIA H100", compute_capability=(9, 0))
    with pytest.raises(
        CliplitError, match=r"compute capability 8\.9\); this GPU is NVIDIA H100 \(compute capability 9\.0\)"
    ):
        TensorRTBackend(engine)
    assert "Runtime.deserialize_cuda_engine" not in stack.log.names()


@pytest.mark.parametrize(
    ("kind", "built", "running", "compatible", "error"),
    [
        ("full", "10.9.0.34", "10.9.0.34", False, None),
        ("full", "10.9.0.34", "10.10.0.31", False, "only runs on that version"),
        ("full", "10.9.0.34", "10.10.0.31", True, None),
        ("full", "10.9.0.34", "11.0.0.5", True, None),  # "engines built with TensorRT 10 work with TensorRT 11"
        ("full", "11.0.0.5", "10.9.0.34", True, "run on the TensorRT they were built with and newer"),
        ("dispatch", "10.9.0.34", "10.9.0.34", False, r"the dispatch runtime \(tensorrt_dispatch\) only runs"),
        ("dispatch", "10.9.0.34", "11.0.0.5", True, None),
        ("lean", "10.9.0.34", "10.9.0.34", False, r"the lean runtime \(tensorrt_lean\) only runs"),
        ("lean", "10.9.0.34", "10.9.0.34", True, None),
        ("lean", "10.9.0.34", "10.10.0.31", True, "only runs engines built by its own version"),
    ],
)
def test_each_runtime_module_runs_what_the_contract_says(
    kind: str,
    built: str,
    running: str,
    compatible: bool,
    error: str | None,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sidecar check and the (strict) fake runtimes agree: what the check lets through really deserializes."""
    stack = install(monkeypatch, built)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float", version_compatible=compatible)
    stack = install(monkeypatch, running, kind=kind)
    if error is not None:
        with pytest.raises(CliplitError, match=error):
            TensorRTBackend(engine)
        assert "Runtime.deserialize_cuda_engine" not in stack.log.names()  # refused before TensorRT saw the bytes
        return
    batch = frames("float", 1, 16, 16, seed=9)
    with TensorRTBackend(engine) as backend:
        out = backend.run(batch)
    assert np.array_equal(out["enhanced"], reference(tmp_path_factory, "float", batch)["enhanced"])
    assert stack.log.of("Runtime.engine_host_code_allowed") == [(compatible,)]


def test_a_version_compatible_engine_without_sidecar_is_not_trusted_with_host_code(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, "10.9.0.34")
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float", sidecar=False, version_compatible=True)
    install(monkeypatch, "11.0.0.5")
    with pytest.raises(CliplitError, match=r"could not deserialize.*a version-compatible one needs it"):
        TensorRTBackend(engine)


def test_engine_without_sidecar_takes_its_io_from_the_input_name(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8", sidecar=False)
    with TensorRTBackend(engine) as backend:
        assert backend.io == "uint8" and backend.sidecar is None
        assert backend.profile.max == (2, 64, 96, 3)


def test_undeserializable_engine_and_missing_file(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch)
    with pytest.raises(CliplitError, match="no such engine file"):
        TensorRTBackend(tmp_path / "missing.engine")
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"\x00not an engine")
    with pytest.raises(CliplitError, match="could not deserialize"):
        TensorRTBackend(garbage)


def test_failing_cuda_calls_raise_named_errors(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    with TensorRTBackend(engine) as backend:
        stack.cuda.fail["cudaMallocHost"] = cudaError_t.cudaErrorMemoryAllocation
        with pytest.raises(CudaError, match="cudaMallocHost failed: cudaErrorMemoryAllocation"):
            backend.run(frames("float", 1, 16, 16, seed=11))
        assert len(stack.log.of("cudaFree")) == 1  # the device half of the failed buffer was released
        del stack.cuda.fail["cudaMallocHost"]
        stack.cuda.fail["cudaStreamSynchronize"] = cudaError_t.cudaErrorInvalidValue
        handle = backend.submit(frames("float", 1, 16, 16, seed=12))
        with pytest.raises(CudaError, match="cudaStreamSynchronize failed"):
            backend.wait(handle)
        del stack.cuda.fail["cudaStreamSynchronize"]
        # the failed frame's slot is free again: both slots take a frame, and the results are right
        batches = [frames("float", 1, 16, 16, seed=seed) for seed in (13, 14)]
        handles = [backend.submit(batch) for batch in batches]
        for batch, handle in zip(batches, handles, strict=True):
            expected = reference(tmp_path_factory, "float", batch)["enhanced"]
            assert np.array_equal(backend.wait(handle)["enhanced"], expected)
    stack = install(monkeypatch, fail={"cudaStreamCreate": cudaError_t.cudaErrorMemoryAllocation})
    with pytest.raises(CudaError, match="cudaStreamCreate failed"):
        TensorRTBackend(engine)


def test_sidecar_contract_mismatch_is_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    profile = profile_from_args("uint8", *PROFILES["uint8"])
    wrong = make_sidecar(stack.trt.__version__, "uint8", profile, False)
    with pytest.raises(CliplitError, match="the uint8 contract needs 'frame'"):
        TensorRTBackend(engine, TensorRTOptions(sidecar=wrong))


def test_close_frees_everything_even_when_a_release_fails(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "float")
    backend = TensorRTBackend(engine)
    backend.submit(frames("float", 1, 16, 16, seed=15))
    backend.submit(frames("float", 1, 16, 16, seed=16))
    stack.cuda.fail["cudaStreamSynchronize"] = cudaError_t.cudaErrorInvalidValue
    with pytest.raises(CudaError, match="cudaStreamSynchronize failed"):
        backend.close()
    assert len(stack.log.of("cudaStreamSynchronize")) == 2  # it went on to the second slot
    assert not stack.cuda.memory and not stack.cuda.streams  # every buffer and stream released regardless
    backend.close()  # closing again is a no-op


def test_results_exist_only_after_the_stream_is_synchronized(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake CUDA runs enqueued work only on synchronization, so a wait() that skipped it reads garbage."""
    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8")
    batch = frames("uint8", 1, 24, 32, seed=17)
    with TensorRTBackend(engine, TensorRTOptions(in_flight=1)) as backend:
        handle = backend.submit(batch)
        (slot,) = backend._slots
        pending = stack.cuda.streams[slot.stream].pending
        assert len(pending) == 3  # upload, inference, download: all still queued
        host = slot.buffers["enhanced"].host
        assert stack.cuda.memory[host][2][: batch.nbytes].tolist() == [0xCD] * batch.nbytes  # nothing arrived yet
        expected = reference(tmp_path_factory, "uint8", batch)["enhanced"]
        assert np.array_equal(backend.wait(handle)["enhanced"], expected)
        monkeypatch.setattr(backend.cuda, "stream_synchronize", lambda stream: None)  # a wait() without the sync
        other = frames("uint8", 1, 24, 32, seed=18)
        stale = backend.wait(backend.submit(other))["enhanced"]
        assert np.array_equal(stale, expected)  # the previous frame's result, not this one's
        assert not np.array_equal(stale, reference(tmp_path_factory, "uint8", other)["enhanced"])


def test_device_is_set_on_every_thread_that_uses_the_backend(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline calls submit/wait from its inference thread; a fresh thread starts on GPU 0 in CUDA."""
    import threading

    stack = install(monkeypatch, device_count=2)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8")
    batch = frames("uint8", 1, 24, 32, seed=19)
    expected = reference(tmp_path_factory, "uint8", batch)["enhanced"]
    results: list[object] = []

    def infer(backend: TensorRTBackend) -> None:
        try:
            results.append(backend.run(batch)["enhanced"])
        except CliplitError as error:
            results.append(error)

    with TensorRTBackend(engine, TensorRTOptions(device=1)) as backend:
        worker = threading.Thread(target=infer, args=(backend,))
        worker.start()
        worker.join()
        assert np.array_equal(results[0], expected)
        assert set(stack.log.of("cudaSetDevice")) == {(1,)}
        assert {stream.device for stream in stack.cuda.streams.values()} == {1}
        # the control: without the per-thread call, the worker thread would enqueue on GPU 0's view and fail
        monkeypatch.setattr(backend.cuda, "set_device", lambda index: None)
        worker = threading.Thread(target=infer, args=(backend,))
        worker.start()
        worker.join()
        assert isinstance(results[1], CliplitError)


def test_the_enhancer_never_submits_more_frames_than_the_backend_has_slots(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of three frame sizes is three submissions; with two slots the first is collected early, in order."""
    from cliplit.runtime.enhancer import Enhancer

    stack = install(monkeypatch)
    engine = make_engine(tmp_path, tmp_path_factory, stack, "uint8")
    sizes = [(20, 30), (20, 30), (24, 40), (16, 16), (24, 40)]
    rng = np.random.default_rng(20)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    with Enhancer(TensorRTBackend(engine, TensorRTOptions(in_flight=2))) as enhancer:
        assert enhancer.backend.max_in_flight == 2
        first = enhancer.submit(images)  # four groups: 20x30 (two frames), 24x40, 16x16, 24x40
        second = enhancer.submit(images[:1])
        results = enhancer.collect(first) + enhancer.collect(second)
    for image, result in zip([*images, images[0]], results, strict=True):
        expected = reference(tmp_path_factory, "uint8", image[None])["enhanced"][0]
        assert np.array_equal(result, expected)
