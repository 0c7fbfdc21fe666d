#!/usr/bin/env python3
"""Prints the dominant frequency (from zero crossings: the tests' sources
are pure sines) and the RMS of the last --seconds of a 16-bit PCM WAV file's
first channel, and checks them: --expect-hz within 5 Hz, --min-rms.

Usage: python3 scripts/e2e/wav_tone.py FILE [--seconds 2] [--expect-hz 880]
       [--min-rms 300]
Exit status 0 when the checks pass."""

import argparse
import array
import math
import sys
import wave


def measure(path: str, seconds: float) -> tuple[float, float, int]:
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: {8 * w.getsampwidth()}-bit samples, want 16")
        channels, rate, n = w.getnchannels(), w.getframerate(), w.getnframes()
        pcm = array.array("h", w.readframes(n))
    if sys.byteorder == "big":
        pcm.byteswap()
    mono = pcm[::channels]
    tail = mono[-int(rate * seconds):]
    if len(tail) < rate * seconds:
        raise SystemExit(f"{path}: only {len(mono) / rate:.2f} s of audio")
    signs = [x >= 0 for x in tail]
    crossings = sum(1 for a, b in zip(signs, signs[1:]) if a != b)
    hz = crossings / 2 / seconds
    level = math.sqrt(sum(x * x for x in tail) / len(tail))
    return hz, level, rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--expect-hz", type=float, default=0.0)
    p.add_argument("--min-rms", type=float, default=300.0)
    args = p.parse_args()
    hz, level, rate = measure(args.file, args.seconds)
    ok = level >= args.min_rms and (not args.expect_hz or abs(hz - args.expect_hz) <= 5)
    print(f"{args.file}: {hz:.1f} Hz, RMS {level:.0f}, {rate} Hz sampling"
          f" -> {'ok' if ok else 'not what was expected'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
