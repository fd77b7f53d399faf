"""`tapedeck`: the command line. Each subcommand is a thin wrapper over a module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from service.cli import client as client_cli
from service.errors import SettingsError
from service.settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "sandbox":
        # The sandbox stands for someone else's server: it parses its own options.
        sandbox_cli = importlib.import_module("sandbox.cli")
        return int(sandbox_cli.main(args[1:]))
    parser = build_parser()
    options = parser.parse_args(args)
    if options.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns everything else
    try:
        result: int = options.run(options)
    except SettingsError as exc:
        print(f"tapedeck: {exc.message}", file=sys.stderr)
        return 2
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapedeck", description="Kie.ai Suno task tracking and archiving.")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the web app (callbacks and API) under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    # Bounds on what slow or many clients can hold: open connections past this get 503 at once,
    # and an idle keep-alive connection is closed after a few seconds (deploy/nginx.conf bounds
    # headers and bodies in front, where slow senders are best turned away).
    serve.add_argument("--limit-concurrency", type=int, default=1000, help="most connections at once")
    serve.add_argument("--timeout-keep-alive", type=int, default=5, help="seconds an idle connection stays")
    # SIGTERM: uvicorn stops accepting at once and lets the requests in flight end; a callback is
    # acked only once recorded, so one cut off at this bound was never acked (Kie sends it again).
    # Above CALLBACK_BODY_TIMEOUT_S (10 s), below a platform's kill (Kubernetes: 30 s); an open
    # event stream (/events/stream) holds the exit this long, then is cut.
    serve.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=20,
        help="on SIGTERM, seconds the requests in flight may take to end before they are cut",
    )
    serve.set_defaults(run=run_serve)

    dev = commands.add_parser("dev", help="run everything locally on an embedded Redis (make dev)")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--data-dir", default=".data")
    dev.add_argument("--sandbox-port", type=int, default=8090)
    dev.add_argument("--sandbox-speed", type=float, default=10.0, help="sandbox time compression")
    dev.add_argument("--storage", choices=("s3", "file"), default="s3",
                     help="files in an embedded SeaweedFS (S3 API) or in DATA_DIR/files")  # fmt: skip
    dev.set_defaults(run=run_dev)

    worker = commands.add_parser("worker", help="run a download worker (RQ, with the scheduler)")
    worker.add_argument("--burst", action="store_true", help="work until the queues are empty, then exit")
    worker.set_defaults(run=run_worker)

    deliver = commands.add_parser("deliver", help="deliver the event log to webhook subscribers")
    deliver.set_defaults(run=run_deliver)

    callbacks = commands.add_parser("callbacks", help="inspect and replay the raw callback log")
    callbacks_commands = callbacks.add_subparsers(dest="action", required=True)
    listing = callbacks_commands.add_parser("list", help="the newest raw-log entries, one line each")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--rejected", action="store_true", help="only the refused requests")
    show = callbacks_commands.add_parser("show", help="one entry in full, as JSON")
    show.add_argument("entry_id")
    again = callbacks_commands.add_parser("replay", help="apply an entry's body again, without auth checks")
    again.add_argument("entry_id")
    callbacks.set_defaults(run=run_callbacks)

    submit = commands.add_parser("submit", help="submit a task through Tapedeck (TAPEDECK_URL)")
    status = commands.add_parser("status", help="show a task")
    client_cli.add_arguments(submit, status)
    submit.set_defaults(run=lambda o: client_cli.submit(Settings.from_env(), o))
    status.set_defaults(run=lambda o: client_cli.status(Settings.from_env(), o))
    listing_tasks = commands.add_parser("tasks", help="list tasks, newest first")
    client_cli.add_list_arguments(listing_tasks)
    listing_tasks.set_defaults(run=lambda o: client_cli.tasks(Settings.from_env(), o))
    top = commands.add_parser("top", help="a live terminal view of the overview (the dashboard's first page)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one view and exit")
    top.set_defaults(run=run_top)

    commands.add_parser("sandbox", help="run the local stand-in for the Kie API (see `tapedeck sandbox -h`)")
    return parser


def run_top(options: argparse.Namespace) -> int:
    from service.cli.top import run

    return run(Settings.from_env(), options)


def run_serve(options: argparse.Namespace) -> int:
    import signal

    import uvicorn

    from service.cli.logs import log_config

    Settings.from_env()  # refuse to start on bad settings before uvicorn forks anything
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again against the
    # handlers it found: the defaults would kill the process (-15) or raise KeyboardInterrupt
    # after a clean stop. Handlers that do nothing make the stop asked for an exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    uvicorn.run(
        "service.web.app:app_from_env",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        loop="uvloop",
        http="httptools",
        access_log=options.access_log,
        limit_concurrency=options.limit_concurrency,
        timeout_keep_alive=options.timeout_keep_alive,
        timeout_graceful_shutdown=options.timeout_graceful_shutdown,
        log_config=log_config(),
        log_level="info",
    )
    return 0


def run_callbacks(options: argparse.Namespace) -> int:
    import asyncio

    from service.cli.raw_log import run

    return asyncio.run(run(Settings.from_env(), options))


def run_worker(options: argparse.Namespace) -> int:
    from workers.worker import run

    return run(Settings.from_env(), burst=options.burst)


def run_deliver(options: argparse.Namespace) -> int:
    from workers.deliveries import run

    return run(Settings.from_env())


def run_dev(options: argparse.Namespace) -> int:
    from pathlib import Path

    from service.cli.dev import run

    return run(
        Path(options.data_dir), options.port, options.sandbox_port, options.sandbox_speed, options.storage
    )


if __name__ == "__main__":
    sys.exit(main())
