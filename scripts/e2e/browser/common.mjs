// What the browser tests share: waiting for a condition, and a test tone
// for fake microphones and softphones.

import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Writes a 16-bit stereo WAV of a `hz` sine at 48 kHz, `seconds` long. */
export function toneWav(file, seconds, hz = 440) {
  const rate = 48000;
  const frames = rate * seconds;
  const data = Buffer.alloc(frames * 4);
  for (let i = 0; i < frames; i++) {
    const v = Math.round(8000 * Math.sin((2 * Math.PI * hz * i) / rate));
    data.writeInt16LE(v, 4 * i);
    data.writeInt16LE(v, 4 * i + 2);
  }
  const head = Buffer.alloc(44);
  head.write('RIFF', 0); head.writeUInt32LE(36 + data.length, 4); head.write('WAVE', 8);
  head.write('fmt ', 12); head.writeUInt32LE(16, 16); head.writeUInt16LE(1, 20);
  head.writeUInt16LE(2, 22); head.writeUInt32LE(rate, 24); head.writeUInt32LE(rate * 4, 28);
  head.writeUInt16LE(4, 32); head.writeUInt16LE(16, 34);
  head.write('data', 36); head.writeUInt32LE(data.length, 40);
  writeFileSync(file, Buffer.concat([head, data]));
}

/** Calls probe until check(value) holds; throws with the last value after ms. */
export async function until(what, probe, check, ms = 30_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (check(last)) return last;
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}; last: ${JSON.stringify(last)}`);
    }
    await sleep(250);
  }
}
