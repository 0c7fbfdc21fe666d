#!/usr/bin/env python3
"""The browser side of corecast's SIP end-to-end tests: one aiortc SDK peer
in a room, talking with phones that call into it.

The peer (room_aiortc.py's RoomPeer, written from docs/sdk-protocol.md)
joins --room publishing a sine of --tone Hz (and the test video), touches
--ready-file once joined, then subscribes to every track of every peer
whose metadata says it is a SIP call (`{"sip": {"remote": ..., "direction": ...}}`). For each
of --calls such peers it must:
  - receive their audio (Opus from the server) with energy: RMS of the
    decoded audio at least --min-rms;
  - with --expect-hz, hear that tone (dominant frequency within 5 Hz);
  - with --until-left, see the peer leave the room (`peer_left`) before
    --timeout, as the call ends.
Each check prints PASS or FAIL; the last line is "N passed, M failed" and
the exit status is 0 only when nothing failed.

Usage:
  python3 scripts/e2e/sip_room.py --server http://127.0.0.1:18095 --room R \
      [--tone 880] [--calls 1] [--min-rms 300] [--expect-hz 440] \
      [--until-left] [--ready-file F] [--timeout 60]
"""

import argparse
import array
import asyncio
import math
import pathlib
import sys
import time

import aiohttp

sys.dont_write_bytecode = True

from room_aiortc import RoomPeer, tone_of  # noqa: E402
from whip_whep_aiortc import (  # noqa: E402
    HTTP_TIMEOUT_S,
    TONE_TOLERANCE_HZ,
    Report,
    Session,
    Viewer,
)

# Energy is measured over windows of this many seconds; the loudest counts
# (a phone's recording may start quietly).
WINDOW_S = 0.5


class LoudnessViewer(Viewer):
    """A Viewer that also keeps the RMS of every WINDOW_S of its audio."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.window: list[int] = []
        self.loudness: list[float] = []

    def count(self, kind: str, frame) -> None:
        super().count(kind, frame)
        if kind != "audio" or frame.format.name != "s16":
            return
        channels = len(frame.layout.channels)
        pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])
        self.window.extend(pcm[::channels])
        if len(self.window) >= frame.sample_rate * WINDOW_S:
            w, self.window = self.window, []
            self.loudness.append(math.sqrt(sum(x * x for x in w) / len(w)))

    def loudest(self) -> float:
        return max(self.loudness, default=0.0)


def is_call(peer_record: dict) -> bool:
    meta = peer_record.get("metadata")
    return isinstance(meta, dict) and isinstance(meta.get("sip"), dict)


class CallWatcher(RoomPeer):
    """A RoomPeer that subscribes only to SIP calls' tracks."""

    def __init__(self, index: int, args) -> None:
        super().__init__(index, args)
        self.calls: list[str] = []

    def viewer(self, other: str) -> Viewer:
        if other not in self.heard:
            self.heard[other] = LoudnessViewer(Session(f"{self.name} <- {other}", self.pc))
        return self.heard[other]

    def on_peer(self, p: dict) -> None:
        if is_call(p) and p.get("peer") not in self.calls:
            self.calls.append(p.get("peer"))
        if is_call(p):
            super().on_peer(p)


async def run(args) -> Report:
    report = Report()
    # RoomPeer publishes tone_of(index): find the index of --tone.
    index = next((i for i in range(16) if tone_of(i) == args.tone), None)
    if index is None:
        report.check("--tone is one RoomPeer publishes", False, f"{args.tone} Hz")
        return report
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        peer = CallWatcher(index, args)
        peer.name = "browser"
        peer.build_offer_parts(slots_per_kind=max(2, args.calls))
        deadline = time.monotonic() + args.timeout
        try:
            if not await peer.connect(http, report):
                return report
            await asyncio.wait_for(peer.opened.wait(), args.timeout)
            if not await peer.join(report):
                return report
            if args.ready_file:
                pathlib.Path(args.ready_file).touch()
            # Every call heard with energy (and its tone).
            while time.monotonic() < deadline:
                heard = [c for c in peer.calls if peer.viewer(c).tone_hz() is not None]
                if len(heard) >= args.calls:
                    break
                await asyncio.sleep(0.2)
            report.check(
                f"{args.calls} call(s) joined the room and were heard",
                len(peer.calls) >= args.calls
                and all(peer.viewer(c).tone_hz() is not None for c in peer.calls[: args.calls]),
                f"calls {peer.calls}, audio frames "
                f"{[peer.viewer(c).audio_frames for c in peer.calls]}",
            )
            for c in peer.calls[: args.calls]:
                v = peer.viewer(c)
                # The rest of the call, up to 8 s, counts for its loudness.
                until = min(deadline, time.monotonic() + 8)
                while time.monotonic() < until and c not in peer.left:
                    await asyncio.sleep(0.2)
                level = v.loudest()
                report.check(
                    f"{c}: audio with energy", level >= args.min_rms,
                    f"loudest {WINDOW_S:g} s at RMS {level:.0f} (want >= {args.min_rms:g}), "
                    f"{v.audio_frames} frames",
                )
                if args.expect_hz:
                    hz = v.tone_hz()
                    report.check(
                        f"{c}: hears the phone's {args.expect_hz:g} Hz",
                        hz is not None and abs(hz - args.expect_hz) <= TONE_TOLERANCE_HZ,
                        f"{hz} Hz",
                    )
            if args.until_left:
                while time.monotonic() < deadline and not all(
                        c in peer.left for c in peer.calls[: args.calls]):
                    await asyncio.sleep(0.2)
                for c in peer.calls[: args.calls]:
                    report.check(
                        f"{c}: leaves the room when the call ends",
                        c in peer.left,
                        f"reason {peer.left.get(c, (0, None))[1]}",
                    )
        except asyncio.TimeoutError:
            report.check("the data channel opens", False, f"not within {args.timeout} s")
        finally:
            await peer.close()
    return report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--token", default=None)
    p.add_argument("--tone", type=int, default=880)
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--min-rms", type=float, default=300.0)
    p.add_argument("--expect-hz", type=float, default=0.0)
    p.add_argument("--until-left", action="store_true")
    p.add_argument("--ready-file", default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("-v", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    print(f"{report.passed} passed, {report.failed} failed")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
