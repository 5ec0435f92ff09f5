"""The machine's measured arithmetic peak: the best a large matrix product reaches with the libraries at hand.

A percentage of peak only means something against a peak this machine actually reaches, so we measure rather than
quote a datasheet: an n×n by n×n product (2·n³ FLOPs) with each available GEMM, best of a few runs. Several
implementations are tried because they differ by a lot on the same CPU: NumPy's OpenBLAS may use AVX2 kernels where
ONNX Runtime's MLAS and PyTorch's oneDNN/MKL use AVX-512, and a backend "above 100 % of peak" would only show that
the peak came from a weaker GEMM. The reported peak per device and precision is the maximum over implementations and
sizes; every measurement is kept in the results.

Reduced precisions have their own, higher limit: a bf16 backend compared with the FP32 peak would look faster than
the machine. So for each reduced CPU precision a run uses, the same product runs through the engine that runs those
backends (OpenVINO's CPU plugin with its inference precision set, as the backends are compiled), and "% of peak" is
taken against the peak of the backend's own precision. OpenVINO's FP32 product joins the FP32 candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass

import numpy as np

from cliplit.benchmarks.harness import Clock, CudaEventClock, HostClock


@dataclass(frozen=True)
class PeakMeasurement:
    """One GEMM implementation's best rate on an n×n product."""

    implementation: str
    device: str
    dtype: str
    n: int
    best_ms: float | None
    gflops: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: OpenVINO's names for the CPU precisions it can be asked to compute in
OPENVINO_PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def measure_peaks(
    *, cpu_n: int = 4096, gpu_n: int = 8192, repeats: int = 5, openvino: Collection[str] = ()
) -> list[PeakMeasurement]:
    """Measure every GEMM available here; implementations that cannot run are recorded with the reason.

    CPU products run at n = ``cpu_n``, ``cpu_n``/2 and ``cpu_n``/4: which size a GEMM library runs best at depends
    on caches and on how much of each core other processes take, and the peak is the best rate seen. ``openvino``
    names the precisions ("float32", "bfloat16", "float16") to measure through OpenVINO as well: those of the
    OpenVINO backends in the run.
    """
    results = []
    for n in sorted({max(16, cpu_n // 4), max(16, cpu_n // 2), cpu_n}):
        results += [_numpy_cpu(n, repeats), _onnxruntime_cpu(n, repeats), _torch_cpu(n, repeats)]
        results += [_openvino_cpu(n, repeats, dtype) for dtype in OPENVINO_PRECISIONS if dtype in openvino]
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        results += [_torch_cuda(gpu_n, repeats, dtype) for dtype in ("float32", "float16")]
    return results


def best_peak(measurements: list[PeakMeasurement], device: str, dtype: str) -> PeakMeasurement | None:
    """The fastest successful measurement for ``device`` ("cpu"/"cuda") and ``dtype``."""
    candidates = [m for m in measurements if m.device == device and m.dtype == dtype and m.error is None]
    return max(candidates, key=lambda m: m.gflops, default=None)


def _best(run: Callable[[], object], repeats: int, clock: Clock) -> float:
    run()  # warm-up: thread pools, packing buffers, cuBLAS handles
    best = float("inf")
    for _ in range(repeats):
        clock.start()
        run()
        best = min(best, clock.stop())
    return best


def _result(implementation: str, device: str, dtype: str, n: int, best_ms: float) -> PeakMeasurement:
    return PeakMeasurement(implementation, device, dtype, n, best_ms, 2.0 * n**3 / (best_ms / 1000.0) / 1e9)


def _failed(implementation: str, device: str, dtype: str, n: int, error: BaseException) -> PeakMeasurement:
    reason = f"{type(error).__name__}: {error}"
    return PeakMeasurement(implementation, device, dtype, n, None, None, reason)


def _operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)


def _numpy_cpu(n: int, repeats: int) -> PeakMeasurement:
    a, b = _operands(n)
    return _result("numpy", "cpu", "float32", n, _best(lambda: a @ b, repeats, HostClock()))


def _onnxruntime_cpu(n: int, repeats: int) -> PeakMeasurement:
    """A one-node MatMul graph: the GEMM (MLAS) that ONNX Runtime's convolutions are built on."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        def tensor(name: str) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n])

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [tensor("a"), tensor("b")], [tensor("c")]
        )
        # IR version 8 is what opset 17 needs; onnx's default is its own newest IR, which older ONNX Runtimes refuse
        # (the H200 image's 1.30 refused IR 14 written by onnx 1.23)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        a, b = _operands(n)
        best = _best(lambda: session.run(None, {"a": a, "b": b}), repeats, HostClock())
    except Exception as error:
        return _failed("onnxruntime", "cpu", "float32", n, error)
    return _result("onnxruntime", "cpu", "float32", n, best)


def _torch_cpu(n: int, repeats: int) -> PeakMeasurement:
    try:
        import torch

        a, b = (torch.from_numpy(x) for x in _operands(n))
        best = _best(lambda: torch.matmul(a, b), repeats, HostClock())
    except Exception as error:
        return _failed("torch", "cpu", "float32", n, error)
    return _result("torch", "cpu", "float32", n, best)


def _openvino_cpu(n: int, repeats: int, dtype: str) -> PeakMeasurement:
    """A one-MatMul model compiled by OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT`` set to ``dtype``, as
    the OpenVINO backends are: FP32 operands in, the product computed in that precision (oneDNN's AMX/AVX-512
    kernels where the CPU has them). A precision the CPU cannot compute natively is an error, not an FP32 figure."""
    try:
        import openvino as ov
        import openvino.opset13 as ops

        a, b = ops.parameter([n, n], ov.Type.f32, name="a"), ops.parameter([n, n], ov.Type.f32, name="b")
        model = ov.Model([ops.matmul(a, b, False, False)], [a, b], "gemm")
        hint = OPENVINO_PRECISIONS[dtype]
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if actual != hint:
            raise RuntimeError(f"OpenVINO computes in {actual} here, not {hint}")
        request = compiled.create_infer_request()
        inputs = dict(zip(("a", "b"), _operands(n), strict=True))
        best = _best(lambda: request.infer(inputs, share_inputs=True), repeats, HostClock())
    except Exception as error:
        return _failed("openvino", "cpu", dtype, n, error)
    return _result("openvino", "cpu", dtype, n, best)


def _torch_cuda(n: int, repeats: int, dtype: str) -> PeakMeasurement:
    """cuBLAS through torch; FP16 runs on tensor cores, FP32 as plain FP32 (TF32 off) to match FP32 backends."""
    try:
        import torch

        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            a = torch.rand(n, n, device="cuda", dtype=getattr(torch, dtype))
            b = torch.rand(n, n, device="cuda", dtype=getattr(torch, dtype))
            best = _best(lambda: torch.matmul(a, b), repeats, CudaEventClock())
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    except Exception as error:
        return _failed("torch", "cuda", dtype, n, error)
    return _result("torch", "cuda", dtype, n, best)
