#!/usr/bin/env python3
"""Publishes a room over Media over QUIC with the PyPI MoQ client (moq-rs):
H.264 (PyAV's libx264, Annex B with parameter sets in band: avc3) of a
moving test pattern and Opus (libopus) of a --tone Hz sine, in real time,
for --seconds. The broadcast's path is the room's name; corecast publishes
it on the room's video and audio tracks for WebRTC viewers.

Prints one JSON line at the end: {"video_frames": N, "audio_frames": M}.
"""

import argparse
import asyncio
import json
import math
import struct
import sys
import time
import urllib.request
from fractions import Fraction

import av
import moq


def video_encoder(width, height, fps):
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height = width, height
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.framerate = Fraction(fps, 1)
    enc.gop_size = fps
    enc.max_b_frames = 0
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                   "x264-params": "repeat-headers=1:annexb=1"}
    return enc


def audio_encoder():
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = 64000
    return enc


def opus_head():
    # RFC 7845 §5.1: version 1, 1 channel, 312 samples pre-skip, 48 kHz, 0 dB, family 0.
    return b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)


async def main(args):
    fingerprint = args.fingerprint
    if not fingerprint:
        with urllib.request.urlopen(f"{args.http}/certificate.sha256", timeout=5) as r:
            fingerprint = r.read().decode().strip()
    w, h = (int(x) for x in args.size.split("x"))
    venc, aenc = video_encoder(w, h, args.fps), audio_encoder()
    counts = {"video_frames": 0, "audio_frames": 0}
    async with moq.Client(args.url, tls_fingerprints=[fingerprint],
                          websocket_enabled=False, reconnect=False) as client:
        broadcast = client.create_broadcast(args.room)
        video = broadcast.publish_video(moq.VideoFormat.AVC3, b"", track="video")
        audio = broadcast.publish_audio(moq.AudioFormat.OPUS, opus_head(), track="audio")
        broadcast.announce()
        start = time.monotonic()
        n_video = n_audio = 0
        phase = 0.0
        while time.monotonic() - start < args.seconds:
            t = time.monotonic() - start
            while n_video / args.fps <= t:
                frame = av.VideoFrame(w, h, "yuv420p")
                # A moving gradient: every frame differs.
                y = bytes(((x + n_video * 4) & 0xff) for x in range(w)) * h
                frame.planes[0].update(y)
                frame.planes[1].update(bytes([128]) * (w // 2 * h // 2))
                frame.planes[2].update(bytes([128]) * (w // 2 * h // 2))
                frame.pts = n_video
                for pkt in venc.encode(frame):
                    video.write_frame(bytes(pkt), timestamp_us=max(0, int((pkt.pts or 0) * 1_000_000 / args.fps)))
                    counts["video_frames"] += 1
                n_video += 1
            while n_audio * 0.02 <= t:
                samples = []
                for _ in range(960):
                    samples.append(int(12000 * math.sin(phase)))
                    phase += 2 * math.pi * args.tone / 48000
                frame = av.AudioFrame(format="s16", layout="mono", samples=960)
                frame.planes[0].update(struct.pack(f"<{len(samples)}h", *samples))
                frame.sample_rate = 48000
                frame.pts = n_audio * 960
                for pkt in aenc.encode(frame):
                    audio.write_frame(bytes(pkt), timestamp_us=max(0, int((pkt.pts or 0) * 1_000_000 / 48000)))
                    counts["audio_frames"] += 1
                n_audio += 1
            await asyncio.sleep(0.005)
        video.finish()
        audio.finish()
    return counts


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="moql://HOST:PORT/ (raw QUIC)")
    p.add_argument("--http", help="corecast's HTTP base URL, for /certificate.sha256")
    p.add_argument("--fingerprint", help="the certificate's SHA-256 (hex) instead of --http")
    p.add_argument("--room", required=True)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--size", default="320x240")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--tone", type=float, default=440.0)
    a = p.parse_args()
    try:
        r = asyncio.run(main(a))
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(r))
