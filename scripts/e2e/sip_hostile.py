#!/usr/bin/env python3
"""Hostile SIP input for corecast's SIP port (scripts/e2e/run-sip, scenario f).

Over UDP from 127.0.0.1, it sends:
  1. garbage: binary bytes, a bare method name, a 9000-byte datagram (over
     the 8 KiB limit), a request whose headers do not parse;
  2. a BYE for a dialog that does not exist: must be answered 481;
  3. --flood INVITEs (distinct Call-IDs, a G.711 offer each) that are never
     ACKed: each must get a final response, and an OPTIONS sent right after
     must still be answered 200 within a second.
The server then retransmits its 200s and ends those calls itself (timer L:
run-sip checks that they are gone). Prints PASS or FAIL per check and
"N passed, M failed"; exit status 0 only when nothing failed.

Usage: python3 scripts/e2e/sip_hostile.py --server 127.0.0.1:15070 [--flood 30]
"""

import argparse
import random
import socket
import sys
import time


def request(method: str, server: str, me: str, call_id: str, body: str = "",
            to_tag: str = "") -> bytes:
    host = server
    branch = f"z9hG4bK{random.getrandbits(48):x}"
    to = f"<sip:flood@{host}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:flood@{host} SIP/2.0",
        f"Via: SIP/2.0/UDP {me};branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:hostile@{me}>;tag=h{random.getrandbits(32):x}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:hostile@{me}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def statuses(sock: socket.socket, seconds: float) -> list[tuple[int, str]]:
    """(status, CSeq method) of the responses received within `seconds`."""
    end = time.monotonic() + seconds
    got = []
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            break
        text = data.decode("latin-1")
        if not text.startswith("SIP/2.0 "):
            continue
        cseq = next((line.split(None, 2)[2] for line in text.split("\r\n")
                     if line.lower().startswith("cseq:")), "")
        got.append((int(text[8:11]), cseq.strip()))
    return got


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="HOST:PORT of the SIP port")
    p.add_argument("--flood", type=int, default=30)
    args = p.parse_args()
    host, port = args.server.rsplit(":", 1)
    server = (host, int(port))
    passed = failed = 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    me = f"127.0.0.1:{sock.getsockname()[1]}"

    for junk in (b"\x00\x01\x02\xff", b"INVITE", b"A" * 9000,
                 b"OPTIONS sip:x SIP/2.0\r\nVia: ???\r\nCSeq: x\r\n\r\n"):
        sock.sendto(junk, server)
    check("garbage gets no answer", statuses(sock, 0.5) == [])

    sock.sendto(request("BYE", args.server, me, "no-such-call", to_tag="nope"), server)
    got = statuses(sock, 2)
    check("BYE for no dialog -> 481", (481, "BYE") in got, f"{got}")

    sdp = ("v=0\r\no=h 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0\r\n")
    for i in range(args.flood):
        sock.sendto(request("INVITE", args.server, me, f"flood-{i}-{random.getrandbits(32):x}",
                            sdp), server)
    sock.sendto(request("OPTIONS", args.server, me, "after-flood"), server)
    t0 = time.monotonic()
    got = statuses(sock, 3)
    options = [s for s, m in got if m == "OPTIONS"]
    finals = [s for s, m in got if m == "INVITE" and s >= 200]
    check(f"{args.flood} INVITEs without ACK each get a final response",
          len(finals) >= args.flood, f"{len(finals)} finals: {sorted(set(finals))}")
    check("OPTIONS during the flood -> 200", options[:1] == [200],
          f"{options} after {time.monotonic() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
