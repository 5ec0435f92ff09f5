#!/usr/bin/env bash
# Run the GPU benchmark suite on an NVIDIA machine in one command, from the repository root:
#
#     bash benchmarks/gpu_suite.sh            # results in benchmarks/results/<gpu-name>/
#
# It makes a virtual environment (.venv-gpu, or $CLIPLIT_GPU_VENV) with the GPU stack (torch with CUDA,
# onnxruntime-gpu instead of onnxruntime, TensorRT and cuda-python for the driver's CUDA major version, plus
# TensorRT's dispatch and lean runtimes of the same version), builds an FP16 TensorRT engine of the released
# weights, runs `cliplit bench` on every backend at 480p/720p/1080p/4K with batch 1 and 4, the --scale modes and
# the end-to-end 1080p video, then runs the GPU-only tests (real TensorRT builds, version-compatible engines in
# every runtime module, --device 1 on two GPUs, cuda-python against real CUDA). Environment knobs:
#   CLIPLIT_GPU_VENV=DIR   venv location;  SKIP_INSTALL=1   use the active/existing environment as is
#   CUDA_MAJOR=12|13       which TensorRT/cuda-python build to install (default: the driver's, from nvidia-smi;
#                          CUDA 13 needs driver r580 or newer)
#   PIP_FIND_LINKS=DIR     a wheelhouse for machines without internet (pip reads it directly)
#   WEIGHTS=PATH           weights to benchmark (default: ../shared/clip-lit/enhancement_model.pth if present,
#                          else the released name clip-lit, downloaded and verified on first use)
#   PHOTOS=DIR             held-out photos the end-to-end video pans over (default: ../shared/photos)
#   BENCH_ARGS="..."       extra arguments for cliplit bench (e.g. "--repeats 20" for a quicker run)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "error: no NVIDIA GPU visible (nvidia-smi failed); run the CPU benchmark with cliplit bench instead" >&2
    exit 2
fi
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
device=$(echo "$gpu_name" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
out="benchmarks/results/$device"
echo "GPU: $gpu_name -> $out"

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
    venv="${CLIPLIT_GPU_VENV:-.venv-gpu}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
    python -m pip install --quiet --upgrade pip
    cuda_major="${CUDA_MAJOR:-$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n 1)}"
    if [ "${cuda_major:-0}" -ge 13 ]; then cu=cu13; else cu=cu12; fi
    echo "TensorRT and cuda-python for CUDA ${cu#cu} (driver supports CUDA ${cuda_major:-unknown})"
    python -m pip install --quiet -e ".[export,bench,tensorrt-$cu]" pytest
    trt_version=$(python -c "import tensorrt; print(tensorrt.__version__)")
    # the runtime-only modules, same version: tests/test_tensorrt_gpu.py runs version-compatible engines in each
    python -m pip install --quiet "tensorrt-dispatch-$cu==$trt_version" "tensorrt-lean-$cu==$trt_version" ||
        echo "warning: tensorrt-dispatch/-lean $trt_version not installed; their GPU tests will be skipped" >&2
    # onnxruntime and onnxruntime-gpu install the same module: keep only the GPU build
    python -m pip uninstall --quiet -y onnxruntime || true
    python -m pip install --quiet onnxruntime-gpu
fi
python - <<'EOF'
import onnxruntime, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
assert torch.cuda.is_available(), "torch cannot see the GPU: install a CUDA build of torch"
EOF

weights="${WEIGHTS:-}"
if [ -z "$weights" ]; then
    if [ -f ../shared/clip-lit/enhancement_model.pth ]; then weights=../shared/clip-lit/enhancement_model.pth
    else weights=clip-lit; fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cliplit-gpu-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
engine_args=()
if export-engine --weights "$weights" --onnx "$work/clip-lit.onnx" --engine "$work/clip-lit-fp16.engine" --fp16 \
    --min-shape 1x3x64x64 --opt-shape 1x3x1080x1920 --max-shape 4x3x2160x3840 --overwrite; then
    engine_args=(--engine "$work/clip-lit-fp16.engine")
else
    echo "warning: the TensorRT engine could not be built; the tensorrt backend will be reported as skipped" >&2
fi

# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
cliplit bench --weights "$weights" "${engine_args[@]}" \
    --sizes 480p,720p,1080p,2160p --batch 1,4 --warmup 10 --repeats 50 --budget 60 \
    --scale 0.5,0.25 --video --video-photos "${PHOTOS:-../shared/photos}" --video-size 1080p --video-frames 300 \
    --out "$out" --overwrite ${BENCH_ARGS:-}

python -m pytest -q -rs -m gpu tests/test_bench_gpu.py tests/test_bench_variants.py tests/test_tensorrt_gpu.py \
    tests/test_cuda_gpu.py
echo "done: $out/results.md"
