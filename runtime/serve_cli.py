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

from cliplit.core.cli_settings import Flag, SettingsCli
from cliplit.runtime.backends import BACKEND_CHOICES
from cliplit.runtime.memory import parse_memory_size
from cliplit.runtime.model_choice import ModelChoice
from cliplit.runtime.serve_settings import ServeSettings

MODEL = SettingsCli(
    ModelChoice,
    flags={
        "model": Flag("an .onnx or .engine file, or weights to serve (default: the released CLIP-LIT)"),
        "backend": Flag("inference backend", choices=[name for name in BACKEND_CHOICES if name != "triton"]),
        "threads": Flag("CPU threads per instance (default: all)"),
    },
    groups={"model": "model"},
    exclude=frozenset({"precision"}),
)
SERVER = SettingsCli(
    ServeSettings,
    flags={
        "model_name": Flag("name clients ask for"),
        "max_batch": Flag(
            "most frames per request and batch (default: 8, fewer if --max-memory cannot hold 8 of the largest)"
        ),
        "instances": Flag("model instances"),
        "max_side": Flag("largest frame side accepted"),
        "queue_delay_us": Flag("how long a request may wait for others to batch with, in µs"),
        "address": Flag(
            "address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes the unauthenticated "
            "endpoints to the network)"
        ),
        "http_port": Flag("HTTP port"),
        "grpc_port": Flag("gRPC port"),
        "metrics_port": Flag("Prometheus metrics port"),
        "max_memory": Flag(
            "memory for the whole server (tritonserver and its instances included), e.g. 2G; batches, tiles and the "
            "queue are sized to fit (default: half the free memory)",
            type=str,
            parse=parse_memory_size,
        ),
        "max_queue": Flag(
            "requests queued beyond those running; more get 503 (default: what the memory budget holds, up to 64)"
        ),
        "drain_timeout_s": Flag(
            "seconds to finish accepted requests after SIGTERM, then unstarted ones get 503 "
            "(default: twice the measured time of a full queue, plus 10)",
            names=("--drain-timeout",),
            metavar="SECONDS",
        ),
    },
    groups={"model_name": "Triton", "max_memory": "limits"},
    exclude=frozenset({"model", "backend"}),
)
#: the settings this command's flags come from (tests/test_cli_help.py checks each field has its flag)
SETTINGS = (MODEL, SERVER)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for options in SETTINGS:
        options.add_to(parser)


def run(args: argparse.Namespace) -> int:
    from cliplit.runtime.serve import serve

    model = MODEL.from_args(args)
    serve(SERVER.from_args(args, model=model.model, backend=model.backend_options()))
    return 0
