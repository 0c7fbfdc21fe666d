#!/usr/bin/env python3
"""End-to-end WHIP/WHEP test of a corecast server with aiortc peers.

Full run (the default):
  1. an aiortc WHIP publisher sends lavfi test video (--size, 320x240 by
     default, at 30 fps) and a 440 Hz sine (Opus) to POST {server}/whip/{stream};
  2. --viewers aiortc WHEP viewers POST recvonly offers to {server}/whep/{stream}
     and decode what they receive;
  3. every viewer must decode --frames video frames of --size and 10 audio
     frames within --timeout seconds, and hear the 440 Hz tone (dominant
     frequency of a second of its decoded audio within 5 Hz);
  4. every session is ended with DELETE {Location} (200 expected), and
     GET {server}/metrics must show the sum of corecast_endpoints over all
     shards back at 0 within 10 seconds.

--start-seq N makes the publisher's streams start at sequence number N (65300:
they wrap after a few seconds) and --join-after S lets the viewers join S
seconds after the publisher, after checking that both streams wrapped: the
late joiner of a long-running stream.

Roles for tests that mix in other peers (e.g. a browser):
  --publish-only  only the publisher; it publishes until SIGINT/SIGTERM or
                  --timeout seconds, then DELETEs its session.
  --view-only     only the viewers (steps 2, 3 and their DELETEs); the
                  publisher is someone else, so the tone is checked only
                  with --tone HZ, and --size is the size it sends.

--progress prints one line a second while the viewers wait for their frames:
  progress t=SECONDS video=N1,N2,... audio=M1,M2,... min_video=MIN
(frames decoded so far by each viewer, in viewer order), for drivers that
check when frames arrive, e.g. across a publisher's restart.

--report-first-frame prints, for each viewer, how long after its WHEP POST
it decoded its first video frame and its first audio frame (join time):
  first-frame viewer N: video=MS ms audio=MS ms

Each check prints PASS or FAIL; the last line is "N passed, M failed", and the
exit status is 0 only when nothing failed.

Usage:
  python3 scripts/e2e/whip_whep_aiortc.py --server http://127.0.0.1:8080 \
      --stream NAME [--viewers 3] [--frames 60] [--timeout 60] [--token T]
      [--size 320x240] [--progress]
"""

import argparse
import array
import asyncio
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import aiortc.rtcrtpsender
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

VIDEO_SOURCE = "testsrc2=size=320x240:rate=30"  # the publisher's picture at VIDEO_SIZE
TONE_HZ = 440
TONE_TOLERANCE_HZ = 5
AUDIO_SOURCE = f"sine=f={TONE_HZ}:sample_rate=48000"
# Decoded audio a viewer measures the tone on (after skipping the first
# frames, where the decoder starts).
TONE_SKIP_FRAMES = 10
TONE_SECONDS = 1.0
VIDEO_SIZE = (320, 240)  # the default of --size
MIN_AUDIO_FRAMES = 10
METRICS_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 15.0
ENDPOINTS_LINE = re.compile(r"^corecast_endpoints(\{[^}]*\})?\s+(\S+)")
DEAD_STATES = ("failed", "closed")
sdp_log = logging.getLogger("whip_whep_e2e")  # offers and answers, shown with -v


# ---------------------------------------------------------------- reporting


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

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"

    @property
    def success(self) -> bool:
        return self.failed == 0 and self.passed > 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- WebRTC side


def restrict_host_addresses(ip: str) -> None:
    """Make aioice gather host candidates on `ip` only (loopback tests)."""
    aioice.ice.get_host_addresses = lambda *args, **kwargs: [ip]


def new_peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def prefer_video_codec(transceiver, codec: str) -> None:
    """Offer only `codec` (plus RTX) for a video transceiver."""
    if codec == "any":
        return
    wanted = {f"video/{codec}".lower(), "video/rtx"}
    codecs = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() in wanted
    ]
    transceiver.setCodecPreferences(codecs)


async def create_full_offer(pc: RTCPeerConnection) -> str:
    """Create an offer and wait until ICE gathering is complete (no trickle)."""
    await pc.setLocalDescription(await pc.createOffer())
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.05)
    return pc.localDescription.sdp


def connection_states(pc: RTCPeerConnection) -> str:
    return f"connection={pc.connectionState} ice={pc.iceConnectionState}"


# ---------------------------------------------------------------- HTTP side


@dataclass
class Session:
    """One WHIP or WHEP resource on the server."""

    label: str
    pc: RTCPeerConnection
    location: Optional[str] = None
    # time.monotonic() when its offer was POSTed.
    posted_at: Optional[float] = None


def auth_headers(token: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def post_offer(
    http: aiohttp.ClientSession, url: str, sdp: str, token: Optional[str]
) -> tuple[Optional[str], Optional[str], str]:
    """POST an SDP offer. Returns (location, answer, problem); problem is ""
    when the server answered 201 with a Location and an SDP body."""
    headers = {"Content-Type": "application/sdp", **auth_headers(token)}
    try:
        async with http.post(url, data=sdp.encode(), headers=headers) as resp:
            body = await resp.text()
            if resp.status != 201:
                return None, None, f"HTTP {resp.status}: {body.strip()[:300]}"
            location = resp.headers.get("Location")
            if not location:
                return None, None, "201 without a Location header"
            if not body.lstrip().startswith("v=0"):
                return None, None, f"201 body is not SDP: {body[:120]!r}"
            # Relative references resolve against the URL that answered
            # (which is not the one we posted to after a 307 from a gateway).
            return urljoin(str(resp.url), location), body, ""
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return None, None, f"request failed: {exc!r}"


async def negotiate(
    http: aiohttp.ClientSession,
    report: Report,
    session: Session,
    url: str,
    token: Optional[str],
) -> bool:
    """Send the session's full offer, apply the answer, record the Location."""
    offer = await create_full_offer(session.pc)
    sdp_log.info("%s offer:\n%s", session.label, offer)
    session.posted_at = time.monotonic()
    location, answer, problem = await post_offer(http, url, offer, token)
    if answer:
        sdp_log.info("%s answer:\n%s", session.label, answer)
    ok = report.check(
        f"{session.label} POST {url} -> 201",
        not problem,
        problem or f"Location {location}",
    )
    if not ok:
        return False
    session.location = location
    try:
        await session.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer, type="answer")
        )
    except Exception as exc:  # aiortc raises several types for bad SDP
        log(f"{session.label}: setRemoteDescription failed: {exc!r}")
        log(f"{session.label}: answer was:\n{answer}")
        return False
    return True


async def delete_session(
    http: aiohttp.ClientSession, report: Report, session: Session, token: Optional[str]
) -> None:
    name = f"{session.label} DELETE"
    if not session.location:
        report.check(name, False, "no session (its POST failed)")
        return
    try:
        async with http.delete(session.location, headers=auth_headers(token)) as resp:
            body = await resp.text()
            report.check(
                f"{name} {session.location} -> 200",
                resp.status == 200,
                "" if resp.status == 200 else f"HTTP {resp.status}: {body.strip()[:200]}",
            )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        report.check(name, False, f"request failed: {exc!r}")


# ---------------------------------------------------------------- publisher


@dataclass
class Publisher:
    session: Session
    players: list = field(default_factory=list)

    def stop_media(self) -> None:
        for player in self.players:
            for track in (player.audio, player.video):
                if track is not None:
                    track.stop()


def video_source(size: tuple[int, int]) -> str:
    """The lavfi test picture of `size` (VIDEO_SOURCE at VIDEO_SIZE)."""
    if size == VIDEO_SIZE:
        return VIDEO_SOURCE
    return f"testsrc2=size={size[0]}x{size[1]}:rate=30"


def open_publisher(video_codec: str, size: tuple[int, int] = VIDEO_SIZE) -> Publisher:
    pc = new_peer_connection()
    video = MediaPlayer(video_source(size), format="lavfi")
    audio = MediaPlayer(AUDIO_SOURCE, format="lavfi")
    pc.addTransceiver(audio.audio, direction="sendonly")
    prefer_video_codec(pc.addTransceiver(video.video, direction="sendonly"), video_codec)
    return Publisher(Session("publisher", pc), [video, audio])


# ---------------------------------------------------------------- viewers


@dataclass
class Viewer:
    session: Session
    video_frames: int = 0
    audio_frames: int = 0
    other_sizes: dict = field(default_factory=dict)
    # First channel of the decoded audio, for the tone check.
    samples: array.array = field(default_factory=lambda: array.array("h"))
    sample_rate: int = 48000
    tracks: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    # The only frame size counted (others are listed in other_sizes).
    size: tuple = VIDEO_SIZE
    # time.monotonic() of the first decoded frame of each kind.
    first_video: Optional[float] = None
    first_audio: Optional[float] = None

    def done(self, want_frames: int) -> bool:
        return self.video_frames >= want_frames and self.audio_frames >= MIN_AUDIO_FRAMES

    def progress(self, want_frames: int) -> str:
        sizes = f", other sizes {self.other_sizes}" if self.other_sizes else ""
        return (
            f"{self.video_frames}/{want_frames} video frames of "
            f"{self.size[0]}x{self.size[1]}{sizes}, "
            f"{self.audio_frames}/{MIN_AUDIO_FRAMES} audio frames, "
            f"tracks {self.tracks}, {connection_states(self.session.pc)}"
        )

    def count(self, kind: str, frame) -> None:
        if kind == "audio" and self.first_audio is None:
            self.first_audio = time.monotonic()
        if kind == "video" and self.first_video is None:
            self.first_video = time.monotonic()
        if kind == "audio":
            self.audio_frames += 1
            if self.audio_frames > TONE_SKIP_FRAMES:
                self.listen(frame)
        elif (frame.width, frame.height) == tuple(self.size):
            self.video_frames += 1
        else:
            size = f"{frame.width}x{frame.height}"
            self.other_sizes[size] = self.other_sizes.get(size, 0) + 1

    def first_frames(self) -> str:
        """--report-first-frame: ms from the WHEP POST to the first frames."""
        def ms(t: Optional[float]) -> str:
            if t is None or self.session.posted_at is None:
                return "none"
            return f"{(t - self.session.posted_at) * 1000:.0f}"
        return f"video={ms(self.first_video)} ms audio={ms(self.first_audio)} ms"

    def listen(self, frame) -> None:
        """Keep TONE_SECONDS of the first channel of s16 audio."""
        if frame.format.name != "s16" or len(self.samples) >= self.sample_rate * TONE_SECONDS:
            return
        channels = len(frame.layout.channels)
        pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])
        self.samples.extend(pcm[::channels])
        self.sample_rate = frame.sample_rate

    def tone_hz(self) -> Optional[float]:
        """The dominant frequency of the kept audio, from its zero crossings
        (the source is a pure sine), or None without a second of audio."""
        if len(self.samples) < self.sample_rate * TONE_SECONDS:
            return None
        signs = [x >= 0 for x in self.samples]
        crossings = sum(1 for a, b in zip(signs, signs[1:]) if a != b)
        return crossings / 2 / (len(self.samples) / self.sample_rate)


async def consume(viewer: Viewer, track) -> None:
    """Pull decoded frames from a remote track until it ends."""
    try:
        while True:
            viewer.count(track.kind, await track.recv())
    except MediaStreamError:
        pass


def open_viewer(index: int, video_codec: str, size: tuple[int, int] = VIDEO_SIZE) -> Viewer:
    pc = new_peer_connection()
    viewer = Viewer(Session(f"viewer {index}", pc), size=size)
    prefer_video_codec(pc.addTransceiver("video", direction="recvonly"), video_codec)
    pc.addTransceiver("audio", direction="recvonly")

    @pc.on("track")
    def on_track(track) -> None:
        viewer.tracks.append(track.kind)
        viewer.consumers.append(asyncio.ensure_future(consume(viewer, track)))

    return viewer


async def wait_for_frames(
    viewers: list[Viewer], want_frames: int, timeout: float, report: Report,
    tone: Optional[float] = None,
) -> None:
    """Wait until every viewer has its frames; with `tone`, also check that
    each one hears that frequency."""
    start = time.monotonic()
    deadline = start + timeout
    last_log = 0.0
    while time.monotonic() < deadline:
        pending = [v for v in viewers if not v.done(want_frames)]
        if not pending:
            break
        if all(v.session.pc.connectionState in DEAD_STATES for v in pending):
            log("every viewer still waiting has a failed or closed connection")
            break
        if time.monotonic() - last_log >= 5:
            last_log = time.monotonic()
            for v in viewers:
                log(f"{v.session.label}: {v.progress(want_frames)}")
        await asyncio.sleep(0.2)
    for v in viewers:
        ok = v.done(want_frames)
        detail = v.progress(want_frames)
        if not ok:
            waited = time.monotonic() - start
            detail = f"not enough media after {waited:.1f} s (--timeout {timeout:g}): {detail}"
        report.check(f"{v.session.label} frames", ok, detail)
        if tone is None:
            continue
        hz = v.tone_hz()
        report.check(
            f"{v.session.label} hears {tone:g} Hz",
            hz is not None and abs(hz - tone) <= TONE_TOLERANCE_HZ,
            "no second of audio" if hz is None else f"dominant frequency {hz:.1f} Hz",
        )


async def print_progress(viewers: list[Viewer], every: float = 1.0) -> None:
    """--progress: one line a second with every viewer's frame counts."""
    start = time.monotonic()
    while True:
        await asyncio.sleep(every)
        video = [v.video_frames for v in viewers]
        audio = [v.audio_frames for v in viewers]
        print(
            f"progress t={time.monotonic() - start:.1f} "
            f"video={','.join(map(str, video))} audio={','.join(map(str, audio))} "
            f"min_video={min(video)}",
            flush=True,
        )


# ---------------------------------------------------------------- metrics


def endpoint_gauge(text: str) -> tuple[Optional[float], list[str]]:
    """Sum corecast_endpoints over its series; None when there is no series."""
    lines = [line for line in text.splitlines() if ENDPOINTS_LINE.match(line)]
    if not lines:
        return None, []
    return sum(float(ENDPOINTS_LINE.match(line).group(2)) for line in lines), lines


async def wait_endpoints_zero(http: aiohttp.ClientSession, server: str, report: Report) -> None:
    url = f"{server}/metrics"
    deadline = time.monotonic() + METRICS_TIMEOUT_S
    total, problem, printed = None, "", None
    while True:
        try:
            async with http.get(url) as resp:
                text = await resp.text()
                if resp.status != 200:
                    problem = f"GET {url} -> HTTP {resp.status}"
                else:
                    total, lines = endpoint_gauge(text)
                    problem = "" if lines else "no corecast_endpoints series in /metrics"
                    if lines != printed:
                        printed = lines
                        for line in lines:
                            print(f"  metrics: {line}", flush=True)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            problem = f"GET {url} failed: {exc!r}"
        if not problem and total == 0:
            break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.25)
    ok = not problem and total == 0
    detail = problem or f"sum of corecast_endpoints = {total:g}"
    if not ok and not problem:
        detail += f" after {METRICS_TIMEOUT_S:g} s"
    report.check("endpoints back to 0", ok, detail)


# ---------------------------------------------------------------- roles


async def start_publisher(http, args, report: Report) -> Publisher:
    publisher = open_publisher(args.video_codec, args.size)
    url = f"{args.server}/whip/{args.stream}"
    if await negotiate(http, report, publisher.session, url, args.token):
        log(f"publishing on {publisher.session.location}")
    return publisher


async def start_viewers(http, args, report: Report) -> list[Viewer]:
    viewers = [open_viewer(i + 1, args.video_codec, args.size) for i in range(args.viewers)]
    url = f"{args.server}/whep/{args.stream}"
    await asyncio.gather(
        *(negotiate(http, report, v.session, url, args.token) for v in viewers)
    )
    return viewers


async def end_sessions(http, args, report: Report, sessions: list[Session]) -> None:
    for s in sessions:
        await delete_session(http, report, s, args.token)
    await asyncio.gather(*(s.pc.close() for s in sessions), return_exceptions=True)


def stop_viewers(viewers: list[Viewer]) -> None:
    for v in viewers:
        for task in v.consumers:
            task.cancel()


async def wait_for_signal_or(timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout)
        log("signal received, stopping")
    except asyncio.TimeoutError:
        log(f"published for {timeout:g} s, stopping")


async def run_publish_only(http, args, report: Report) -> None:
    publisher = await start_publisher(http, args, report)
    try:
        if publisher.session.location:
            await wait_for_signal_or(args.timeout)
    finally:
        await end_sessions(http, args, report, [publisher.session])
        publisher.stop_media()


async def run_view_only(http, args, report: Report) -> None:
    viewers = await start_viewers(http, args, report)
    progress = asyncio.ensure_future(print_progress(viewers)) if args.progress else None
    try:
        await wait_for_frames(viewers, args.frames, args.timeout, report, args.tone)
        if args.report_first_frame:
            for v in viewers:
                print(f"first-frame {v.session.label}: {v.first_frames()}", flush=True)
    finally:
        if progress:
            progress.cancel()
        await end_sessions(http, args, report, [v.session for v in viewers])
        stop_viewers(viewers)


async def run_full(http, args, report: Report) -> None:
    publisher = await start_publisher(http, args, report)
    if not publisher.session.location:
        log("no publisher session: skipping the viewers")
        await publisher.session.pc.close()
        publisher.stop_media()
        return
    viewers: list[Viewer] = []
    progress = None
    try:
        if args.join_after > 0:
            log(f"viewers join in {args.join_after:g} s")
            await asyncio.sleep(args.join_after)
            await check_wrapped(publisher, args, report)
        viewers = await start_viewers(http, args, report)
        if args.progress:
            progress = asyncio.ensure_future(print_progress(viewers))
        # The publisher is ours: it sends the sine.
        await wait_for_frames(viewers, args.frames, args.timeout, report, TONE_HZ)
        if args.report_first_frame:
            for v in viewers:
                print(f"first-frame {v.session.label}: {v.first_frames()}", flush=True)
        if not all(v.done(args.frames) for v in viewers):
            log(f"publisher: {connection_states(publisher.session.pc)}")
    finally:
        if progress:
            progress.cancel()
        sessions = [publisher.session] + [v.session for v in viewers]
        await end_sessions(http, args, report, sessions)
        stop_viewers(viewers)
        publisher.stop_media()
    await wait_endpoints_zero(http, args.server, report)


async def check_wrapped(publisher: Publisher, args, report: Report) -> None:
    """With --start-seq, whether every publisher stream wrapped its 16-bit
    sequence numbers before the viewers joined."""
    if args.start_seq is None:
        return
    need = 65536 - args.start_seq
    sent = {}
    for sender in publisher.session.pc.getSenders():
        stats = await sender.getStats()
        for s in stats.values():
            if getattr(s, "type", "") == "outbound-rtp":
                sent[s.kind] = s.packetsSent
    ok = len(sent) == 2 and all(n > need for n in sent.values())
    report.check(
        f"publisher wrapped its sequence numbers before the viewers joined (> {need} packets)",
        ok,
        f"packets sent {sent}",
    )


async def run(args) -> Report:
    report = Report()
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        if args.publish_only:
            await run_publish_only(http, args, report)
        elif args.view_only:
            await run_view_only(http, args, report)
        else:
            await run_full(http, args, report)
    return report


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="WHIP/WHEP end-to-end test with aiortc peers")
    p.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--stream", required=True, help="stream (room) name")
    p.add_argument("--viewers", type=int, default=3, help="number of WHEP viewers (default 3)")
    p.add_argument("--frames", type=int, default=60,
                   help="video frames of --size each viewer must decode (default 60)")
    p.add_argument("--size", default=f"{VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}", metavar="WxH",
                   help="the video frame size the viewers count (and a full run's publisher "
                        f"sends); default {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for media; with --publish-only, how long to publish")
    p.add_argument("--token", help="bearer token for WHIP/WHEP requests")
    p.add_argument("--ice-ip", default="127.0.0.1",
                   help="the only local address aiortc gathers candidates on")
    p.add_argument("--video-codec", default="VP8", choices=["VP8", "H264", "any"],
                   help="video codec the aiortc peers offer (default VP8)")
    p.add_argument("--start-seq", type=int,
                   help="first RTP sequence number of the publisher's streams (e.g. 65300: "
                        "they wrap after a few seconds)")
    p.add_argument("--tone", type=float,
                   help="with --view-only: the frequency of the publisher's tone to listen for "
                        "(a full run always checks its own 440 Hz sine)")
    p.add_argument("--join-after", type=float, default=0.0,
                   help="seconds the viewers join after the publisher (full run)")
    p.add_argument("--progress", action="store_true",
                   help="print every viewer's frame counts once a second while waiting")
    p.add_argument("--report-first-frame", action="store_true",
                   help="print each viewer's time from its WHEP POST to its first decoded "
                        "video and audio frame")
    p.add_argument("-v", "--verbose", action="store_true", help="log aiortc/aioice at INFO")
    roles = p.add_mutually_exclusive_group()
    roles.add_argument("--publish-only", action="store_true",
                       help="only publish (for a viewer that is not aiortc)")
    roles.add_argument("--view-only", action="store_true",
                       help="only view (for a publisher that is not aiortc)")
    args = p.parse_args(argv)
    args.server = args.server.rstrip("/")
    if args.viewers < 1 and not args.publish_only:
        p.error("--viewers must be at least 1")
    if args.start_seq is not None and not 0 <= args.start_seq < 65536:
        p.error("--start-seq must be in 0..65535")
    size = re.fullmatch(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})", args.size)
    if not size:
        p.error(f"--size must be WIDTHxHEIGHT, e.g. 640x360 (got {args.size!r})")
    args.size = (int(size.group(1)), int(size.group(2)))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    restrict_host_addresses(args.ice_ip)
    if args.start_seq is not None:
        start = args.start_seq
        aiortc.rtcrtpsender.random_sequence_number = lambda: start
    try:
        report = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 1
    print(report.summary(), flush=True)
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
