"""`tapedeck sandbox`: run the sandbox in the foreground under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from sandbox.app import create_app
from sandbox.config import MAX_FILE_BYTES, SandboxConfig, parse_intervals, parse_stages


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _file_bytes(text: str) -> int:
    value = int(text)
    if not 0 < value <= MAX_FILE_BYTES:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_FILE_BYTES}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be an integer >= 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be a number of seconds >= 0")
    return value


def _intervals(text: str) -> tuple[float, ...]:
    try:
        return parse_intervals(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _stages(text: str) -> frozenset[str]:
    try:
        return parse_stages(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    p = argparse.ArgumentParser(prog="tapedeck sandbox", description="A local stand-in for Kie.ai Suno.")
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--api-key", default=defaults.api_key)
    p.add_argument("--hmac-key", default=None, help="sign callbacks (X-Webhook-Signature)")
    p.add_argument("--speed", type=float, default=defaults.speed, help="simulated seconds per real second")
    p.add_argument("--drop", type=_stages, default=frozenset(), help="text,first,complete,error or all")
    p.add_argument("--duplicate-rate", type=_rate, default=0.0)
    p.add_argument("--reorder", action="store_true", help="hold first back until after complete")
    p.add_argument("--fail-rate", type=_rate, default=0.0)
    p.add_argument("--retention-s", type=float, default=defaults.retention_s)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--file-bytes", type=_file_bytes, default=defaults.file_bytes)
    p.add_argument("--fast-callbacks", action="store_true", help="callbacks before the create response")
    p.add_argument("--credits", type=float, default=defaults.credits)
    p.add_argument(
        "--record-info-null-s",
        type=float,
        default=0.0,
        help='record-info says "recordInfo is null" this long',
    )
    p.add_argument(
        "--create-limit",
        type=_positive_int,
        default=defaults.create_limit,
        help=f"creates accepted per rolling {defaults.create_window_s:g} s (real time)",
    )
    p.add_argument(
        "--record-info-per-s",
        type=_positive_int,
        default=defaults.record_info_per_s,
        help="record-info requests accepted per second per task (real time)",
    )
    p.add_argument(
        "--stall-s",
        type=_seconds,
        default=defaults.stall_s,
        help="real seconds a stalled file transfer hangs before the connection is cut",
    )
    p.add_argument(
        "--callback-retry-s",
        type=_intervals,
        default=defaults.callback_retry_s,
        help="real seconds before callback retry 1, 2, 3 (the last repeats), e.g. 1,5,15",
    )
    p.add_argument(
        "--transfer-log-size",
        type=_positive_int,
        default=defaults.transfer_log_size,
        help="file transfers GET /_sandbox/files/log keeps",
    )
    return p


def config_from(args: argparse.Namespace) -> SandboxConfig:
    return SandboxConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        hmac_key=args.hmac_key,
        speed=args.speed,
        drop=args.drop,
        duplicate_rate=args.duplicate_rate,
        reorder=args.reorder,
        fail_rate=args.fail_rate,
        retention_s=args.retention_s,
        seed=args.seed,
        file_bytes=args.file_bytes,
        fast_callbacks=args.fast_callbacks,
        credits=args.credits,
        record_info_null_s=args.record_info_null_s,
        create_limit=args.create_limit,
        record_info_per_s=args.record_info_per_s,
        stall_s=args.stall_s,
        callback_retry_s=args.callback_retry_s,
        transfer_log_size=args.transfer_log_size,
    )


def main(argv: list[str] | None = None) -> int:
    config = config_from(parser().parse_args(argv))
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info", ws="none")
    return 0
