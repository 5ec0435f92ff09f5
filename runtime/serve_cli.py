"""Serve the enhancer on Triton Inference Server (through PyTriton): uint8 BGR frames in, enhanced frames out.

Clients send ``frame`` (N×H×W×3 uint8 BGR, frames of one size per request) over HTTP or gRPC and get ``enhanced``
back; Triton batches concurrent requests of one size, runs --instances copies of the model within one --max-memory
budget, and exposes health (/v2/health/ready: true once every instance can serve) and Prometheus metrics (/metrics on
--metrics-port). It listens on 127.0.0.1 unless --address says otherwise. SIGINT or SIGTERM drains it: no new
requests, the accepted ones answered, exit 0. `cliplit enhance --model triton://HOST:PORT/MODEL` is a client. See
docs/serving.md.
"""

from __future__ import annotations

import argparse

from cliplit.runtime.backends import BACKEND_CHOICES
from cliplit.runtime.serve import DEFAULT_ADDRESS, DEFAULT_MAX_SIDE, DEFAULT_MODEL_NAME, DEFAULT_QUEUE_DELAY_US


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", default=None, help="an .onnx or .engine file, or weights to serve (default: the released CLIP-LIT)"
    )
    model.add_argument(
        "--backend", choices=[name for name in BACKEND_CHOICES if name != "triton"], default="auto", help="(auto)"
    )
    model.add_argument("--threads", type=int, default=None, help="CPU threads per instance (default: all)")
    model.add_argument("--device", type=int, default=0, help="GPU index for TensorRT and CUDA (default: 0)")

    triton = parser.add_argument_group("Triton")
    triton.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="name clients ask for (%(default)s)")
    triton.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="most frames per request and batch (default: 8, fewer if --max-memory cannot hold 8 of the largest)",
    )
    triton.add_argument("--instances", type=int, default=1, help="model instances (default: %(default)s)")
    triton.add_argument(
        "--queue-delay-us",
        type=int,
        default=DEFAULT_QUEUE_DELAY_US,
        help="how long a request may wait for others to batch with (default: %(default)s µs)",
    )
    triton.add_argument(
        "--max-side", type=int, default=DEFAULT_MAX_SIDE, help="largest frame side accepted (default: %(default)s)"
    )
    triton.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes the unauthenticated "
        "endpoints to the network)",
    )
    triton.add_argument("--http-port", type=int, default=8000, help="(default: %(default)s)")
    triton.add_argument("--grpc-port", type=int, default=8001, help="(default: %(default)s)")
    triton.add_argument("--metrics-port", type=int, default=8002, help="(default: %(default)s)")
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-memory",
        default=None,
        help="memory for the whole server (tritonserver and its instances included), e.g. 2G; batches, tiles and the "
        "queue are sized to fit (default: half the free memory)",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        default=None,
        help="requests queued beyond those running; more get 503 (default: what the memory budget holds, up to 64)",
    )
    limits.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds to finish accepted requests after SIGTERM, then unstarted ones get 503 "
        "(default: twice the measured time of a full queue, plus 10)",
    )


def run(args: argparse.Namespace) -> int:
    from cliplit.runtime.backends import options_for, select_backend
    from cliplit.runtime.memory import parse_memory_size
    from cliplit.runtime.serve import ServeSettings, serve

    backend = options_for(select_backend(args.model, args.backend), threads=args.threads, device=args.device)
    settings = ServeSettings(
        model=args.model,
        backend=backend,
        model_name=args.model_name,
        max_batch=args.max_batch,
        instances=args.instances,
        max_side=args.max_side,
        queue_delay_us=args.queue_delay_us,
        address=args.address,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_memory=None if args.max_memory is None else parse_memory_size(args.max_memory),
        max_queue=args.max_queue,
        drain_timeout_s=args.drain_timeout,
    )
    serve(settings)
    return 0
