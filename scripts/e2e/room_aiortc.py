#!/usr/bin/env python3
"""End-to-end test of corecast's WebRTC SDK transport (conference rooms) with
aiortc peers, written from docs/sdk-protocol.md alone: no corecast SDK.

--peers N aiortc peers (default 3) join one room:
  1. each POSTs {room, peer, sdp, publish} to {server}/webrtc/connect: an
     offer with a data channel "corecast", a sendonly audio transceiver (a
     sine, 440 Hz for the first peer, 660 Hz for the second, 220 Hz more for
     each next one), a sendonly video transceiver (lavfi test video, 320x240
     at 30 fps) and N-1 recvonly audio and N-1 recvonly video receive slots;
  2. each sends {"id":1,"request":"join","protocol":1} on the data channel,
     then subscribes to every track of every other peer: those in the join
     answer's `peers`, then those of `peer_joined` and `track_published`;
  3. each must decode --frames video frames of 320x240 from every other peer
     and hear that peer's tone (dominant frequency within 5 Hz) in the slots
     the server's subscribe answers named, and see each of its subscriptions
     reach state `live`;
  4. the first peer sends `leave`; every other peer must get `peer_left`
     (reason `left`) for it within 2 s, and its subscriptions to the leaver
     must end;
  5. the others end their connections with DELETE /webrtc/{conn} (204), and
     GET {server}/metrics must show the sum of corecast_endpoints back at 0.

Steps 1-4 must be done within --timeout seconds. Each check prints PASS or
FAIL, then one summary line per peer; the last line is "N passed, M failed",
and the exit status is 0 only when nothing failed. -v also prints the SDP
and every data-channel message.

Usage:
  python3 scripts/e2e/room_aiortc.py --server http://127.0.0.1:8080 \
      [--room NAME] [--peers 3] [--frames 60] [--timeout 60] [--token T]
"""

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urljoin

import aiohttp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

# No __pycache__ in the source tree for the module imported below.
sys.dont_write_bytecode = True

# The WHIP/WHEP test's building blocks: the same aiortc setup (loopback-only
# candidates, VP8, non-trickle offers) and the same frame and tone
# measurement (Viewer counts 320x240 frames and finds the dominant
# frequency from zero crossings).
from whip_whep_aiortc import (
    HTTP_TIMEOUT_S,
    TONE_TOLERANCE_HZ,
    VIDEO_SIZE,
    VIDEO_SOURCE,
    Report,
    Session,
    Viewer,
    auth_headers,
    connection_states,
    create_full_offer,
    log,
    prefer_video_codec,
    restrict_host_addresses,
    wait_endpoints_zero,
)

PROTOCOL = 1
CHANNEL_LABEL = "corecast"
FIRST_TONE_HZ = 440
TONE_STEP_HZ = 220
REQUEST_TIMEOUT_S = 10.0
LEFT_WITHIN_S = 2.0
PROGRESS_EVERY_S = 5.0
rpc_log = logging.getLogger("room_e2e")  # SDP and RPC messages, shown with -v


def tone_of(index: int) -> int:
    """The sine frequency peer `index` (0-based) publishes."""
    return FIRST_TONE_HZ + TONE_STEP_HZ * index


# ---------------------------------------------------------------- aiortc


def new_bundled_peer_connection() -> RTCPeerConnection:
    """A peer connection with one transport for everything from the start.

    aiortc's default bundle policy ("balanced") gives each kind its own
    transport until the answer bundles them; then it moves only the first
    transceiver of each kind onto the bundle transport, and a second video
    slot would stay on a transport that never connects (its RTP would be
    dropped as unroutable)."""
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


async def add_answer_candidates(pc: RTCPeerConnection, answer: str) -> None:
    """Hands the answer's candidates to aiortc once more, by mid.

    aiortc's setRemoteDescription keeps, per transport, the candidates of the
    last m-section that uses it (here the data channel's). The server bundles
    everything and lists its candidates in the first m-section only, as
    RFC 8843 allows, so without this ICE would stay at "checking". aioice
    ignores candidates it has already."""
    for media in aiortc_sdp.SessionDescription.parse(answer).media:
        for candidate in media.ice_candidates:
            candidate.sdpMid = media.rtp.muxId
            await pc.addIceCandidate(candidate)


# ---------------------------------------------------------------- one peer


@dataclass
class Slot:
    """A receive slot (a recvonly transceiver) and what the server put in it."""

    mid: str
    kind: str
    transceiver: Any
    # Whose track the server says the slot plays (subscribe answer, or a
    # subscription event that came first).
    peer: Optional[str] = None
    track: Optional[str] = None
    # Subscription states the server reported for this slot, in order.
    states: list = field(default_factory=list)
    # Frames decoded while the slot played no known subscription.
    stray_frames: int = 0


@dataclass
class Sub:
    """One subscription: another peer's track, and the server's answer."""

    peer: str
    track: str
    kind: str
    mid: Optional[str] = None
    error: str = ""


class RoomPeer:
    """One SDK connection: publishes a tone and the test video, plays the
    others in its receive slots, speaks the RPC on the data channel."""

    def __init__(self, index: int, args) -> None:
        self.index = index
        self.name = f"p{index + 1}"
        self.tone = tone_of(index)
        self.args = args
        self.pc = new_bundled_peer_connection()
        self.session = Session(self.name, self.pc)
        self.conn: Optional[str] = None
        self.channel = None
        self.opened = asyncio.Event()
        self.joined = False
        self.join_answer: dict = {}
        self.problem = ""  # why this peer could not take part, in words
        self.players = [
            MediaPlayer(f"sine=f={self.tone}:sample_rate=48000", format="lavfi"),
            MediaPlayer(VIDEO_SOURCE, format="lavfi"),
        ]
        self.send = {}  # kind -> transceiver
        self.slot_transceivers = []
        self.slots: dict[str, Slot] = {}
        self.subs: dict[tuple[str, str], Sub] = {}
        self.heard: dict[str, Viewer] = {}  # other peer -> what we got from it
        self.peers: dict[str, list] = {}  # other peer -> its tracks (dicts)
        self.left: dict[str, tuple[float, str]] = {}  # peer -> (monotonic, reason)
        self.closed_reason: Optional[str] = None
        self.early_events: list[dict] = []  # events before the join answer was handled
        self.errors: list[str] = []  # error events and failed requests
        self.tasks: list[asyncio.Future] = []
        self._next_id = 0
        self._pending: dict[int, asyncio.Future] = {}

    # ------------------------------------------------------------ offer

    def build_offer_parts(self, slots_per_kind: int) -> None:
        audio, video = self.players
        self.send["audio"] = self.pc.addTransceiver(audio.audio, direction="sendonly")
        self.send["video"] = self.pc.addTransceiver(video.video, direction="sendonly")
        prefer_video_codec(self.send["video"], "VP8")
        for kind in ("audio", "video"):
            for _ in range(slots_per_kind):
                t = self.pc.addTransceiver(kind, direction="recvonly")
                if kind == "video":
                    prefer_video_codec(t, "VP8")
                self.slot_transceivers.append(t)
        # Last: aiortc bundles the data channel onto the first transceiver's
        # transport only when a transceiver exists already.
        self.channel = self.pc.createDataChannel(CHANNEL_LABEL)
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self.on_message)

    async def connect(self, http: aiohttp.ClientSession, report: Report) -> bool:
        """POST /webrtc/connect and apply the answer."""
        offer = await create_full_offer(self.pc)
        # aiortc assigns the mids in createOffer: known only now.
        publish = [
            {"mid": self.send[kind].mid, "name": kind} for kind in ("audio", "video")
        ]
        body = {"room": self.args.room, "peer": self.name, "sdp": offer, "publish": publish}
        if self.args.token:
            body["token"] = self.args.token
        rpc_log.info("%s offer (publish %s):\n%s", self.name, publish, offer)
        url = f"{self.args.server}/webrtc/connect"
        problem, answer = "", None
        try:
            async with http.post(url, json=body, headers=auth_headers(self.args.token)) as resp:
                text = await resp.text()
                if resp.status != 201:
                    problem = f"HTTP {resp.status}: {text.strip()[:300]}"
                else:
                    try:
                        answer = json.loads(text)
                    except ValueError:
                        answer = None
                    if not isinstance(answer, dict) or not isinstance(answer.get("conn"), str) \
                            or not isinstance(answer.get("sdp"), str):
                        problem = f"201 body is not {{conn, sdp}}: {text[:200]!r}"
                    elif answer.get("protocol") != PROTOCOL:
                        problem = f"answer protocol {answer.get('protocol')!r}, expected {PROTOCOL}"
                    elif not resp.headers.get("Location"):
                        problem = "201 without a Location header"
                    else:
                        self.session.location = urljoin(str(resp.url), resp.headers["Location"])
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            problem = f"request failed: {exc!r}"
        if not report.check(
            f"{self.name} POST {url} -> 201",
            not problem,
            problem or f"conn {answer['conn']}, Location {self.session.location}",
        ):
            self.problem = f"connect failed: {problem}"
            return False
        self.conn = answer["conn"]
        rpc_log.info("%s answer:\n%s", self.name, answer["sdp"])
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type="answer")
            )
        except Exception as exc:  # aiortc raises several types for bad SDP
            self.problem = f"setRemoteDescription failed: {exc!r}"
            report.check(f"{self.name} applies the SDP answer", False, self.problem)
            log(f"{self.name}: answer was:\n{answer['sdp']}")
            return False
        await add_answer_candidates(self.pc, answer["sdp"])
        return True

    # ------------------------------------------------------------ RPC

    def send_text(self, msg: dict) -> None:
        text = json.dumps(msg, separators=(",", ":"))
        rpc_log.info("%s -> %s", self.name, text)
        self.channel.send(text)

    async def request(self, name: str, **fields) -> dict:
        """Sends a request; returns the answer (ok or not). Raises
        asyncio.TimeoutError without an answer in REQUEST_TIMEOUT_S."""
        self._next_id += 1
        rid = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self.send_text({"id": rid, "request": name, **fields})
        try:
            return await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        finally:
            self._pending.pop(rid, None)

    def on_message(self, data) -> None:
        if not isinstance(data, str):
            self.errors.append(f"binary data-channel message ({len(data)} bytes)")
            return
        rpc_log.info("%s <- %s", self.name, data)
        try:
            msg = json.loads(data)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self.errors.append(f"message that is not a JSON object: {data[:200]!r}")
            return
        if isinstance(msg.get("event"), str):
            self.on_event(msg)
            return
        future = self._pending.get(msg.get("id"))
        if future is None:
            self.errors.append(f"answer to no pending request: {data[:200]}")
        elif not future.done():
            future.set_result(msg)

    async def join(self, report: Report) -> bool:
        answer = await self.request("join", protocol=PROTOCOL)
        problem = ""
        if not answer.get("ok"):
            problem = f"refused: {answer.get('error')}"
        elif answer.get("peer") != self.name or answer.get("room") != self.args.room:
            problem = f"answer names room {answer.get('room')!r} peer {answer.get('peer')!r}"
        elif answer.get("conn") != self.conn:
            problem = f"answer conn {answer.get('conn')!r}, connect said {self.conn!r}"
        elif not isinstance(answer.get("peers"), list) or not isinstance(answer.get("slots"), list):
            problem = f"answer without peers/slots lists: {json.dumps(answer)[:300]}"
        if not problem:
            problem = self.take_slots(answer["slots"])
        if not report.check(
            f"{self.name} join",
            not problem,
            problem or (f"{len(self.slots)} slots, peers already in the room: "
                        f"{[p.get('peer') for p in answer['peers']] or 'none'}"),
        ):
            self.problem = f"join: {problem}"
            return False
        self.join_answer = answer
        self.joined = True
        for p in answer["peers"]:
            self.on_peer(p)
        early, self.early_events = self.early_events, []
        for ev in early:
            self.on_event(ev)
        return True

    def take_slots(self, listed: list) -> str:
        """Maps the join answer's slots to our recvonly transceivers by mid."""
        by_mid = {t.mid: t for t in self.slot_transceivers}
        for s in listed:
            mid, kind = s.get("mid"), s.get("kind")
            t = by_mid.get(mid)
            if t is None:
                return f"slot {s} is not one of our recvonly transceivers {sorted(by_mid)}"
            if kind != t.kind:
                return f"slot {mid} is {kind!r}, our transceiver is {t.kind}"
            self.slots[mid] = Slot(mid, kind, t)
        missing = sorted(set(by_mid) - set(self.slots))
        if missing:
            return f"our recvonly transceivers {missing} are not listed as slots"
        for slot in self.slots.values():
            track = slot.transceiver.receiver.track
            if track is None:
                return f"slot {slot.mid}: the answer does not send on it (no remote track)"
            self.tasks.append(asyncio.ensure_future(self.consume(slot, track)))
        return ""

    async def consume(self, slot: Slot, track) -> None:
        """Decodes a slot's media, credited to the peer the server said it plays."""
        try:
            while True:
                frame = await track.recv()
                if slot.peer is None:
                    slot.stray_frames += 1
                else:
                    self.viewer(slot.peer).count(slot.kind, frame)
        except MediaStreamError:
            pass

    def viewer(self, other: str) -> Viewer:
        if other not in self.heard:
            self.heard[other] = Viewer(Session(f"{self.name} <- {other}", self.pc))
        return self.heard[other]

    # ------------------------------------------------------------ events

    def on_event(self, ev: dict) -> None:
        if not self.joined:
            # Events that follow the join answer at once reach us before
            # join() has resumed to handle that answer: they wait for it.
            self.early_events.append(ev)
            return
        name, peer = ev["event"], ev.get("peer")
        if name == "peer_joined":
            self.on_peer(ev)
        elif name == "track_published":
            self.want(peer, ev)
        elif name == "peer_left":
            self.left.setdefault(peer, (time.monotonic(), ev.get("reason")))
            self.peers.pop(peer, None)
        elif name == "track_unpublished":
            tracks = self.peers.get(peer, [])
            self.peers[peer] = [t for t in tracks if t.get("name") != ev.get("track")]
        elif name == "subscription":
            self.on_subscription(ev)
        elif name == "closed":
            self.closed_reason = ev.get("reason")
        elif name == "error":
            self.errors.append(f"error event {ev.get('code')}: {ev.get('message')}")

    def on_peer(self, p: dict) -> None:
        peer = p.get("peer")
        if not isinstance(peer, str) or peer == self.name:
            return
        self.peers.setdefault(peer, [])
        self.viewer(peer)
        for t in p.get("tracks") or []:
            self.want(peer, t)

    def want(self, peer: Optional[str], track: dict) -> None:
        """Subscribes to a track of another peer, once."""
        name, kind = track.get("name"), track.get("kind")
        if not self.joined or not isinstance(peer, str) or peer == self.name:
            return
        tracks = self.peers.setdefault(peer, [])
        if not any(t.get("name") == name for t in tracks):
            tracks.append(track)
        if (peer, name) in self.subs:
            return
        sub = self.subs[(peer, name)] = Sub(peer, name, kind)
        self.tasks.append(asyncio.ensure_future(self.subscribe(sub)))

    async def subscribe(self, sub: Sub) -> None:
        try:
            answer = await self.request("subscribe", peer=sub.peer, track=sub.track)
        except asyncio.TimeoutError:
            sub.error = f"no answer to subscribe within {REQUEST_TIMEOUT_S:g} s"
            return
        if not answer.get("ok"):
            sub.error = f"subscribe refused: {answer.get('error')}"
            return
        mid, kind = answer.get("mid"), answer.get("kind")
        slot = self.slots.get(mid)
        if slot is None:
            sub.error = f"subscribe answered mid {mid!r}, not one of our slots {sorted(self.slots)}"
        elif kind != sub.kind or slot.kind != sub.kind:
            sub.error = f"subscribe answered kind {kind!r} slot {mid} ({slot.kind}) for a {sub.kind} track"
        elif slot.peer not in (None, sub.peer) or slot.track not in (None, sub.track):
            sub.error = (f"slot {mid} was said to play {slot.peer}'s {slot.track}, "
                         f"now {sub.peer}'s {sub.track}")
        else:
            slot.peer, slot.track = sub.peer, sub.track
        sub.mid = mid

    def on_subscription(self, ev: dict) -> None:
        slot = self.slots.get(ev.get("mid"))
        if slot is None:
            self.errors.append(f"subscription event for mid {ev.get('mid')!r}, not a slot")
            return
        slot.states.append((ev.get("peer"), ev.get("track"), ev.get("state"), ev.get("reason")))
        # The event may come before the subscribe answer: it names the slot too.
        if ev.get("state") in ("waiting", "live", "paused") and slot.peer is None:
            slot.peer, slot.track = ev.get("peer"), ev.get("track")

    # ------------------------------------------------------------ state

    def sub_for(self, other: str, kind: str) -> Optional[Sub]:
        """Our subscription to `other`'s track of `kind` (the test's peers
        publish one of each)."""
        return next((s for s in self.subs.values() if s.peer == other and s.kind == kind), None)

    def slot_for(self, other: str, kind: str) -> Optional[Slot]:
        sub = self.sub_for(other, kind)
        return self.slots.get(sub.mid) if sub and sub.mid else None

    def went_live(self, slot: Optional[Slot], other: str, kind: str) -> bool:
        sub = self.sub_for(other, kind)
        return slot is not None and sub is not None and any(
            p == other and t == sub.track and st == "live" for p, t, st, _ in slot.states
        )

    def lacking(self, others: list[str], want_frames: int) -> list[str]:
        """What this peer still lacks of the others' media, in words."""
        if not self.joined:
            return [self.problem or "not joined"]
        out = []
        for other in others:
            v = self.viewer(other)
            for kind in ("video", "audio"):
                sub = self.sub_for(other, kind)
                slot = self.slot_for(other, kind)
                if sub is None:
                    out.append(f"no {kind} track of {other} known")
                    continue
                if sub.error:
                    out.append(f"{other}'s {kind}: {sub.error}")
                    continue
                if slot is None:
                    out.append(f"{other}'s {kind}: no subscribe answer yet")
                    continue
                if not self.went_live(slot, other, kind):
                    states = [s for _, _, s, _ in slot.states] or "none"
                    out.append(f"{other}'s {kind} (slot {slot.mid}) not live: states {states}")
                if kind == "video" and v.video_frames < want_frames:
                    sizes = f", other sizes {v.other_sizes}" if v.other_sizes else ""
                    out.append(f"{other}'s video (slot {slot.mid}): {v.video_frames}/{want_frames} "
                               f"frames of {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}{sizes}")
                if kind == "audio" and v.tone_hz() is None:
                    out.append(f"{other}'s audio (slot {slot.mid}): {v.audio_frames} frames, "
                               f"not yet a second of audio to measure")
        return out

    def summary(self, others: list[str], tones: dict[str, int]) -> str:
        parts = []
        for other in others:
            v = self.heard.get(other) or Viewer(Session("", self.pc))
            vs, aslot = self.slot_for(other, "video"), self.slot_for(other, "audio")
            hz = v.tone_hz()
            heard = "no tone" if hz is None else f"{hz:.1f} Hz"
            parts.append(
                f"{other}: video {v.video_frames} frames {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} "
                f"in slot {vs.mid if vs else '-'}"
                f"{' (live)' if self.went_live(vs, other, 'video') else ''}, "
                f"audio {heard} (want {tones[other]}) in slot {aslot.mid if aslot else '-'}"
                f"{' (live)' if self.went_live(aslot, other, 'audio') else ''}"
            )
        return f"{self.name} ({self.tone} Hz, conn {self.conn}): " + " | ".join(parts)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        for player in self.players:
            for track in (player.audio, player.video):
                if track is not None:
                    track.stop()


# ---------------------------------------------------------------- the test


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def bring_up(peer: RoomPeer, http, report: Report, deadline: float) -> bool:
    """Connect, wait for the data channel, join."""
    if not await peer.connect(http, report):
        return False
    try:
        await asyncio.wait_for(peer.opened.wait(), remaining(deadline))
    except asyncio.TimeoutError:
        peer.problem = f"the data channel did not open ({connection_states(peer.pc)})"
        report.check(f"{peer.name} data channel open", False, peer.problem)
        return False
    try:
        return await peer.join(report)
    except asyncio.TimeoutError:
        peer.problem = f"no answer to join within {REQUEST_TIMEOUT_S:g} s"
        report.check(f"{peer.name} join", False, peer.problem)
        return False


async def wait_for_media(peers: list[RoomPeer], args, report: Report, deadline: float) -> None:
    names = [p.name for p in peers]
    start = time.monotonic()
    last_log = start
    while True:
        missing = {p.name: p.lacking([n for n in names if n != p.name], args.frames) for p in peers}
        if not any(missing.values()) or time.monotonic() >= deadline:
            break
        if all(p.pc.connectionState in ("failed", "closed") for p in peers if missing[p.name]):
            log("every peer still waiting has a failed or closed connection")
            break
        if time.monotonic() - last_log >= PROGRESS_EVERY_S:
            last_log = time.monotonic()
            for p in peers:
                if missing[p.name]:
                    log(f"{p.name} ({connection_states(p.pc)}) still lacks: {'; '.join(missing[p.name])}")
        await asyncio.sleep(0.2)
    waited = time.monotonic() - start
    tones = {p.name: p.tone for p in peers}
    for p in peers:
        lack = missing[p.name]
        report.check(
            f"{p.name} receives every other peer's video and audio, every subscription live",
            not lack,
            f"after {waited:.1f} s" if not lack else
            f"after {waited:.1f} s (--timeout {args.timeout:g}): {'; '.join(lack)}",
        )
        for other in (n for n in names if n != p.name):
            v = p.heard.get(other)
            hz = v.tone_hz() if v else None
            aslot = p.slot_for(other, "audio")
            report.check(
                f"{p.name} hears {other}'s {tones[other]} Hz in slot "
                f"{aslot.mid if aslot else '?'}",
                hz is not None and abs(hz - tones[other]) <= TONE_TOLERANCE_HZ,
                "no second of audio" if hz is None else f"dominant frequency {hz:.1f} Hz",
            )
        stray = {s.mid: s.stray_frames for s in p.slots.values() if s.stray_frames}
        errors = p.errors[:5]
        if stray or errors:
            log(f"{p.name}: frames on slots before the server said what they play {stray}; "
                f"errors {errors}")
    print("-- summary", flush=True)
    for p in peers:
        print(p.summary([n for n in names if n != p.name], tones), flush=True)


async def check_leave(leaver: RoomPeer, stayers: list[RoomPeer], report: Report) -> None:
    """The leaver sends leave; the others must see peer_left within 2 s and
    their subscriptions to it must end."""
    sent = time.monotonic()
    try:
        answer = await leaver.request("leave")
        problem = "" if answer.get("ok") else f"refused: {answer.get('error')}"
    except asyncio.TimeoutError:
        problem = f"no answer within {REQUEST_TIMEOUT_S:g} s"
    except Exception as exc:  # the channel may already be closing
        problem = f"cannot send: {exc!r}"
    report.check(f"{leaver.name} leave", not problem, problem or "ok")
    until = sent + LEFT_WITHIN_S
    while time.monotonic() < until and not all(leaver.name in s.left for s in stayers):
        await asyncio.sleep(0.02)
    for s in stayers:
        seen = s.left.get(leaver.name)
        report.check(
            f"{s.name} gets peer_left for {leaver.name} within {LEFT_WITHIN_S:g} s",
            seen is not None and seen[1] == "left",
            "no peer_left" if seen is None else
            f"after {(seen[0] - sent) * 1000:.0f} ms, reason {seen[1]!r}",
        )
    # Subscriptions to the leaver end (reason peer_left); give them the same 2 s.
    until = time.monotonic() + LEFT_WITHIN_S

    def unended(s: RoomPeer) -> list[str]:
        out = []
        for kind in ("audio", "video"):
            slot = s.slot_for(leaver.name, kind)
            if slot and not any(p == leaver.name and st == "ended" for p, _, st, _ in slot.states):
                out.append(f"slot {slot.mid} ({kind})")
        return out

    while time.monotonic() < until and any(unended(s) for s in stayers):
        await asyncio.sleep(0.02)
    for s in stayers:
        left = unended(s)
        had = [s.slot_for(leaver.name, kind) for kind in ("audio", "video")]
        reasons = sorted({str(r) for slot in s.slots.values()
                          for p, _, st, r in slot.states if p == leaver.name and st == "ended"})
        report.check(
            f"{s.name}'s subscriptions to {leaver.name} end",
            all(had) and not left,
            f"it had no subscription to {leaver.name}" if not any(had) else
            f"not ended: {', '.join(left)}" if left else f"reason {', '.join(reasons)}",
        )
    if leaver.closed_reason is not None:
        log(f"{leaver.name} got closed (reason {leaver.closed_reason!r})")


async def hang_up(http, peer: RoomPeer, report: Report, token: Optional[str]) -> None:
    if not peer.session.location:
        return
    try:
        async with http.delete(peer.session.location, headers=auth_headers(token)) as resp:
            body = await resp.text()
            report.check(
                f"{peer.name} DELETE {peer.session.location} -> 204",
                resp.status == 204,
                "" if resp.status == 204 else f"HTTP {resp.status}: {body.strip()[:200]}",
            )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        report.check(f"{peer.name} DELETE", False, f"request failed: {exc!r}")


async def run(args) -> Report:
    report = Report()
    deadline = time.monotonic() + args.timeout
    peers = [RoomPeer(i, args) for i in range(args.peers)]
    for p in peers:
        p.build_offer_parts(args.peers - 1)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            up = await asyncio.gather(*(bring_up(p, http, report, deadline) for p in peers))
            if all(up):
                log(f"{args.peers} peers joined room {args.room!r}")
                await wait_for_media(peers, args, report, deadline)
                await check_leave(peers[0], peers[1:], report)
            else:
                failed = [f"{p.name}: {p.problem}" for p, ok in zip(peers, up) if not ok]
                report.check("every peer joined", False, "; ".join(failed))
        finally:
            # The leaver's connection is gone already (after leave the server
            # closes it): only the others are DELETEd and checked.
            for p in peers[1:]:
                if p.joined:
                    await hang_up(http, p, report, args.token)
            await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        if all(p.joined for p in peers):
            await wait_endpoints_zero(http, args.server, report)
    return report


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="SDK room end-to-end test with aiortc peers")
    p.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--room", default="e2e-room", help="room name (default e2e-room)")
    p.add_argument("--peers", type=int, default=3, help="number of peers (default 3)")
    p.add_argument("--frames", type=int, default=60,
                   help="video frames of 320x240 each peer must decode from each other peer "
                        "(default 60)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds for connecting, media and the leave (default 60)")
    p.add_argument("--token", help="bearer token for /webrtc requests")
    p.add_argument("--ice-ip", default="127.0.0.1",
                   help="the only local address aiortc gathers candidates on")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the SDP and every data-channel message")
    args = p.parse_args(argv)
    args.server = args.server.rstrip("/")
    if not 2 <= args.peers <= 32:
        p.error("--peers must be from 2 to 32 (a peer has at most 32 slots of a kind)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.verbose:
        rpc_log.setLevel(logging.INFO)
    restrict_host_addresses(args.ice_ip)
    try:
        report = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 1
    print(report.summary(), flush=True)
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
