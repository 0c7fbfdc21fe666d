#!/usr/bin/env python3
"""Hostile RTMP clients for corecast's RTMP ingest (standard library only).

Each mode opens TCP connections to the RTMP port and misbehaves; the server
must close every one of them by itself within its handshake timeout:

  garbage    connect and send 4 KiB of random bytes (byte 0 is never 3, the
             RTMP version, so the bytes are garbage from the first one on);
  truncated  send C0 and half of C1, then wait: a handshake that never ends;
  idle       open --count TCP connections (200 by default) from --source
             (127.0.0.3 by default: the flood comes from another address
             than the encoder the driver starts meanwhile) and send nothing.
             Prints "open N/N idle connections" once they are all up, then
             "closed K/N after T s" as the server closes them.

Several modes may be given; they run one after the other. Each check prints
PASS or FAIL; the last line is "N passed, M failed", and the exit status is 0
only when nothing failed.

Usage:
  python3 scripts/e2e/rtmp_hostile.py --port 19350 garbage truncated
  python3 scripts/e2e/rtmp_hostile.py --port 19350 idle --count 200
"""

import argparse
import os
import random
import selectors
import socket
import sys
import time

# How long the server gives a connection from accept to `publish` before it
# closes it: RtmpConfig::handshake_timeout in transports/rtmp/src/endpoint.rs
# (keep the two equal, or pass --handshake-timeout).
HANDSHAKE_TIMEOUT_S = 10.0
# Scheduling slack on top of the timeout (a loaded 2-core runner).
SLACK_S = 3.0
RTMP_VERSION = 3
C1_SIZE = 1536
GARBAGE_SIZE = 4096
CONNECT_TIMEOUT_S = 5.0


class Report:
    """Counts checks and prints one PASS/FAIL line per check."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        suffix = f": {detail}" if detail else ""
        print(f"{'PASS' if ok else 'FAIL'} {name}{suffix}", flush=True)
        return ok


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def connect(host: str, port: int, source: str = "") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(CONNECT_TIMEOUT_S)
    s.connect((host, port))
    return s


def wait_closed(s: socket.socket, start: float, deadline: float) -> tuple[float | None, int]:
    """Reads (and drops) whatever the server sends until it closes the
    connection (EOF or reset). Returns (seconds from `start` to the close,
    or None at `deadline`; bytes received)."""
    received = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, received
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return None, received
        except OSError:  # reset: closed with our bytes unread
            return time.monotonic() - start, received
        if not data:
            return time.monotonic() - start, received
        received += len(data)


def closed_in_time(report: Report, name: str, took: float | None, received: int, limit: float) -> None:
    report.check(
        name,
        took is not None,
        f"closed by the server after {took:.2f} s ({received} bytes received)"
        if took is not None
        else f"still open after {limit:g} s ({received} bytes received)",
    )


def garbage(args, report: Report) -> None:
    rng = random.Random(args.seed)
    data = bytearray(rng.getrandbits(8) for _ in range(GARBAGE_SIZE))
    if data[0] == RTMP_VERSION:
        data[0] = 0xFF
    limit = args.handshake_timeout + SLACK_S
    try:
        s = connect(args.host, args.port)
    except OSError as exc:
        report.check("garbage: connect", False, repr(exc))
        return
    start = time.monotonic()
    try:
        s.sendall(data)
    except OSError:
        pass  # the server closed already: wait_closed sees it too
    took, received = wait_closed(s, start, start + limit)
    s.close()
    closed_in_time(report, f"garbage: {GARBAGE_SIZE} random bytes, the server closes within {limit:g} s",
                   took, received, limit)


def truncated(args, report: Report) -> None:
    rng = random.Random(args.seed + 1)
    # C0, then the first half of C1 (time, zero, and random bytes).
    data = bytes([RTMP_VERSION]) + bytes(rng.getrandbits(8) for _ in range(C1_SIZE // 2))
    limit = args.handshake_timeout + SLACK_S
    try:
        s = connect(args.host, args.port)
    except OSError as exc:
        report.check("truncated handshake: connect", False, repr(exc))
        return
    start = time.monotonic()
    try:
        s.sendall(data)
    except OSError:
        pass
    took, received = wait_closed(s, start, start + limit)
    s.close()
    closed_in_time(report, f"truncated handshake (C0 + {C1_SIZE // 2} bytes of C1): "
                           f"the server closes within {limit:g} s", took, received, limit)


def idle(args, report: Report) -> None:
    socks: list[socket.socket] = []
    problems: dict[str, int] = {}
    for _ in range(args.count):
        try:
            socks.append(connect(args.host, args.port, args.source))
        except OSError as exc:
            key = type(exc).__name__
            problems[key] = problems.get(key, 0) + 1
    opened = len(socks)
    start = time.monotonic()
    print(f"open {opened}/{args.count} idle connections from {args.source or 'any address'}", flush=True)
    report.check(f"idle: {args.count} TCP connections open", opened == args.count,
                 f"{opened} connected" + (f", failed: {problems}" if problems else ""))
    if not socks:
        return
    limit = args.handshake_timeout + SLACK_S
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed_at: list[float] = []
    last_print = 0.0
    deadline = start + limit
    while len(closed_at) < opened:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(timeout=min(left, 0.25)):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # nothing is expected, but only a close counts
            sel.unregister(s)
            s.close()
            closed_at.append(time.monotonic() - start)
        now = time.monotonic()
        if closed_at and now - last_print >= 1.0:
            last_print = now
            print(f"closed {len(closed_at)}/{opened} after {now - start:.1f} s", flush=True)
    print(f"closed {len(closed_at)}/{opened} after {time.monotonic() - start:.1f} s", flush=True)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
    report.check(
        f"idle: the server closes all {opened} idle connections within {limit:g} s",
        len(closed_at) == opened,
        f"closed {len(closed_at)}/{opened}"
        + (f", between {min(closed_at):.2f} and {max(closed_at):.2f} s" if closed_at else ""),
    )


MODES = {"garbage": garbage, "truncated": truncated, "idle": idle}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="hostile RTMP clients (see the module's doc)")
    p.add_argument("modes", nargs="+", choices=sorted(MODES), metavar="MODE",
                   help="garbage, truncated or idle")
    p.add_argument("--host", default="127.0.0.1", help="the server's RTMP address (127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="the server's RTMP port")
    p.add_argument("--handshake-timeout", type=float, default=HANDSHAKE_TIMEOUT_S,
                   help=f"the server's handshake timeout in seconds (default {HANDSHAKE_TIMEOUT_S:g}); "
                        f"each connection must be closed within it + {SLACK_S:g} s")
    p.add_argument("--count", type=int, default=200, help="idle: connections to open (200)")
    p.add_argument("--source", default="127.0.0.3",
                   help="idle: local address to connect from (127.0.0.3; '' for any)")
    p.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"),
                   help="random seed of the garbage (printed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report()
    log(f"rtmp_hostile {' '.join(args.modes)} -> {args.host}:{args.port} "
        f"(handshake timeout {args.handshake_timeout:g} s, seed {args.seed})")
    for mode in args.modes:
        MODES[mode](args, report)
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    return 0 if report.failed == 0 and report.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
