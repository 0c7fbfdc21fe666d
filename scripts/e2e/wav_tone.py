#!/usr/bin/env python3
"""Prints the dominant frequency and the RMS of the last --seconds of a
16-bit PCM WAV file's first channel, and checks them: --expect-hz within
5 Hz, --min-rms. The frequency is the strongest of a Goertzel scan (10 Hz
steps from 100 Hz to 3.9 kHz, then 0.5 Hz steps around the best) of the
audio taken down to 8 kHz: a glitch or a gap moves it less than it moves
a count of zero crossings.

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
    level = math.sqrt(sum(x * x for x in tail) / len(tail))
    # Down to about 8 kHz (the tones are well below 4 kHz): every n-th sample
    # of a moving average, which also keeps higher noise from folding down.
    step = max(1, rate // 8000)
    low = [sum(tail[i:i + step]) / step for i in range(0, len(tail) - step + 1, step)]
    low_rate = rate / step
    best = max(range(100, 3901, 10), key=lambda f: goertzel(low, low_rate, f))
    fine = [best - 10 + 0.5 * k for k in range(41)]
    hz = max(fine, key=lambda f: goertzel(low, low_rate, f))
    return hz, level, rate


def goertzel(samples: list, rate: float, freq: float) -> float:
    """The power of `samples` at `freq` Hz."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


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
