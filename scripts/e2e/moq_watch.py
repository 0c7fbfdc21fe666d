#!/usr/bin/env python3
"""Watches a corecast room over Media over QUIC with the PyPI MoQ client
(moq-rs, moq-ffi's prebuilt wheel: moq-net and hang in Rust, written by
others): connects over raw QUIC pinning the certificate hash that corecast
serves at /certificate.sha256, reads the room's catalog and its video and
audio frames, decodes them (PyAV: libvpx or FFmpeg's H.264 for video,
Opus for audio) and prints one JSON line of what it saw:

  {"catalog": {"video": {"video": "vp8"}, "audio": {"audio": "opus"}},
   "video": {"frames": N, "keyframes": K, "first_keyframe": true,
             "bytes": B, "timestamps_increase": true,
             "decoded": D, "size": "640x480"},
   "audio": {"frames": N, ..., "decoded": D, "tone_hz": 440.0}}

The tone is the strongest frequency of a Goertzel scan of the decoded
audio (scripts/e2e/wav_tone.py).

Exits 1 (with {"error": ...}) when it cannot connect or times out before
--frames video frames.
"""

import argparse
import asyncio
import json
import sys
import urllib.request

import array
import os

import av
import moq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wav_tone import goertzel  # noqa: E402

DECODERS = {"vp8": "libvpx", "avc": "h264", "vp09": "libvpx-vp9", "av01": "libdav1d"}


def decoder(codec: str):
    """A PyAV decoder for a catalog codec string (vp8, avc3.*, opus)."""
    if codec == "opus":
        return av.CodecContext.create("opus", "r")
    for prefix, name in DECODERS.items():
        if codec.startswith(prefix):
            try:
                return av.CodecContext.create(name, "r")
            except Exception:
                return av.CodecContext.create(name.removeprefix("lib"), "r")
    raise ValueError(f"no decoder for {codec}")


def dominant_hz(samples, rate):
    """The strongest frequency of s16 mono samples (100 Hz to 3.9 kHz)."""
    step = max(1, rate // 8000)
    low = [sum(samples[i:i + step]) / step for i in range(0, len(samples) - step + 1, step)]
    low_rate = rate / step
    best = max(range(100, 3901, 10), key=lambda f: goertzel(low, low_rate, f))
    fine = [best - 10 + 0.5 * k for k in range(41)]
    return max(fine, key=lambda f: goertzel(low, low_rate, f))


async def count(media, codec, want, timeout, out):
    """Counts and decodes frames of one track until `want` or `timeout`."""
    out.update(frames=0, keyframes=0, first_keyframe=None, bytes=0,
               timestamps_increase=True, sizes=[], decoded=0, decode_errors=0)
    ctx = decoder(codec)
    pcm = array.array("h")
    rate = 48000
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    last = None
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    async with media as frames:
        while out["frames"] < want:
            left = end - loop.time()
            if left <= 0:
                return
            try:
                f = await asyncio.wait_for(frames.__anext__(), left)
            except (asyncio.TimeoutError, StopAsyncIteration):
                return
            if out["first_keyframe"] is None:
                out["first_keyframe"] = bool(f.keyframe)
            out["frames"] += 1
            out["keyframes"] += int(bool(f.keyframe))
            out["bytes"] += len(f.payload)
            if len(out["sizes"]) < 5:
                out["sizes"].append(len(f.payload))
            if last is not None and f.timestamp_us < last:
                out["timestamps_increase"] = False
            last = f.timestamp_us
            try:
                decoded = ctx.decode(av.Packet(bytes(f.payload)))
            except Exception:
                out["decode_errors"] += 1
                continue
            for d in decoded:
                out["decoded"] += 1
                if isinstance(d, av.VideoFrame):
                    out["size"] = f"{d.width}x{d.height}"
                elif len(pcm) < rate * 2:
                    for s16 in resampler.resample(d):
                        pcm.extend(array.array("h", bytes(s16.planes[0])[: s16.samples * 2]))
    if len(pcm) >= rate:
        # The last second of what was heard.
        out["tone_hz"] = dominant_hz(pcm[-rate:], rate)


async def main(args):
    fingerprint = args.fingerprint
    if not fingerprint:
        with urllib.request.urlopen(f"{args.http}/certificate.sha256", timeout=5) as r:
            fingerprint = r.read().decode().strip()
    report = {"fingerprint": fingerprint}
    async with moq.Client(args.url, tls_fingerprints=[fingerprint],
                          websocket_enabled=False, reconnect=False) as client:
        broadcast = None
        loop = asyncio.get_running_loop()
        end = loop.time() + args.timeout
        while loop.time() < end:
            try:
                broadcast = await asyncio.wait_for(client.request_broadcast(args.room), 2)
                break
            except Exception as e:  # not announced yet: try again
                report["request_error"] = str(e)
                await asyncio.sleep(0.2)
        if broadcast is None:
            raise RuntimeError(f"no broadcast {args.room!r}: {report.get('request_error')}")
        catalogs = await broadcast.subscribe_catalog()
        catalog = await asyncio.wait_for(catalogs.__anext__(), args.timeout)
        while "video" not in catalog.video or "audio" not in catalog.audio:
            catalog = await asyncio.wait_for(catalogs.__anext__(), args.timeout)
        report["catalog"] = {
            "video": {k: v.codec for k, v in catalog.video.items()},
            "audio": {k: v.codec for k, v in catalog.audio.items()},
        }
        video, audio = {}, {}
        await asyncio.gather(
            count(await broadcast.subscribe_media("video", catalog.video["video"]),
                  catalog.video["video"].codec, args.frames, args.timeout, video),
            count(await broadcast.subscribe_media("audio", catalog.audio["audio"]),
                  catalog.audio["audio"].codec, args.frames, args.timeout, audio),
        )
        report["video"], report["audio"] = video, audio
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="moql://HOST:PORT/ (raw QUIC)")
    p.add_argument("--http", help="corecast's HTTP base URL, for /certificate.sha256")
    p.add_argument("--fingerprint", help="the certificate's SHA-256 (hex) instead of --http")
    p.add_argument("--room", required=True, help="the room (broadcast) to watch")
    p.add_argument("--frames", type=int, default=60, help="video frames to receive")
    p.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args()
    try:
        r = asyncio.run(main(a))
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(r))
    ok = r.get("video", {}).get("frames", 0) >= a.frames
    sys.exit(0 if ok else 1)
