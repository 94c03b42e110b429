"""``target-databox-emulator``: run the Databox emulator as a local HTTP server."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import threading
from types import FrameType

from .config import (
    LIST_ORDERS,
    PAGE_SIZE_OVER_MAX,
    EmulatorConfig,
    apply_runtime_knobs,
)
from .emulator import Emulator

ENV_KEY = "DATABOX_EMULATOR_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="target-databox-emulator",
        description="A local stand-in for the Databox Ingestion API v1 (tests, offline runs).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(ENV_KEY),
        help=f"the accepted x-api-key (or env {ENV_KEY})",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=":memory:",
        help="SQLite file that keeps data across restarts "
        "(default: a private temporary database, gone on exit)",
    )
    parser.add_argument(
        "--processing-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds an accepted ingestion stays 'processing'",
    )
    parser.add_argument("--max-records", type=int, default=100, metavar="N")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--rate-per-second", type=int, default=None, metavar="N")
    parser.add_argument("--rate-per-hour", type=int, default=None, metavar="N")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="X",
        help="share of API requests that fail at random (0..1)",
    )
    parser.add_argument("--fault-seed", type=int, default=0, metavar="N")
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=None,
        help="serve HTTPS with this certificate (chain); needs --tls-key",
    )
    parser.add_argument(
        "--tls-key", metavar="PEM", default=None, help="the private key of --tls-cert"
    )
    parser.add_argument(
        "--allow-any-content-type",
        action="store_true",
        help="accept POST bodies without Content-Type: application/json (default: 415)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--overwrite-keeps-missing",
        action="store_true",
        help="an overwrite keeps fields the record leaves out (default: nulled)",
    )
    parser.add_argument(
        "--purge-drops-columns",
        action="store_true",
        help="a purge also forgets inferred column types (default: kept)",
    )
    _add_alternative_flags(parser)
    return parser


def _add_alternative_flags(parser: argparse.ArgumentParser) -> None:
    """Plausible alternatives to the API reference's Part B (each also a runtime knob)."""
    group = parser.add_argument_group("Part B alternatives (ingestion list and detail)")
    group.add_argument("--max-page-size", type=int, default=1000, metavar="N")
    group.add_argument(
        "--page-size-over-max",
        choices=PAGE_SIZE_OVER_MAX,
        default="cap",
        help="a pageSize above the maximum: serve the maximum (cap) or answer 400 (reject)",
    )
    group.add_argument("--success-word", default="success", metavar="WORD")
    group.add_argument("--pending-word", default="processing", metavar="WORD")
    group.add_argument(
        "--rejected-list-word",
        default="partial",
        metavar="WORD",
        help="word for a finished ingestion with rejections (e.g. 'success' hides them)",
    )
    group.add_argument(
        "--omit-ingestion-status",
        action="store_true",
        help="ingestion details without ingestionStatus",
    )
    group.add_argument(
        "--list-omit-status", action="store_true", help="ingestion list items without status"
    )
    group.add_argument(
        "--completion-jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="up to this much extra time before an ingestion is reported finished "
        "(seeded by --fault-seed): ingestions finish out of order",
    )
    group.add_argument("--list-order", choices=LIST_ORDERS, default="newest")


def _alternative_knobs(args: argparse.Namespace) -> dict[str, object]:
    return {
        "max_page_size": args.max_page_size,
        "page_size_over_max": args.page_size_over_max,
        "success_word": args.success_word,
        "pending_word": args.pending_word,
        "rejected_list_word": args.rejected_list_word,
        "omit_ingestion_status": args.omit_ingestion_status,
        "list_omit_status": args.list_omit_status,
        "completion_jitter": args.completion_jitter,
        "list_order": args.list_order,
    }


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print one line with the URL once listening."""
    args = build_parser().parse_args(argv)
    if not args.api_key:
        print(f"error: --api-key is required (or set {ENV_KEY})", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    config = EmulatorConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        db_path=args.db,
        processing_delay=args.processing_delay,
        max_records=args.max_records,
        max_bytes=args.max_bytes,
        rate_per_second=args.rate_per_second,
        rate_per_hour=args.rate_per_hour,
        fault_rate=args.fault_rate,
        fault_seed=args.fault_seed,
        verbose=args.verbose,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        require_json_content_type=not args.allow_any_content_type,
        overwrite_keeps_missing=args.overwrite_keeps_missing,
        purge_drops_columns=args.purge_drops_columns,
    )
    try:
        apply_runtime_knobs(config, _alternative_knobs(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    emulator = Emulator(config)
    try:
        try:
            url = emulator.start()
        except ssl.SSLError as exc:
            print(f"error: cannot use --tls-cert/--tls-key: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        print(f"Databox emulator listening on {url}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        emulator.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
