// Chromium end-to-end test of SIP calls with the conference page: a /room
// page joins a room with its fake microphone, baresip (a softphone, Debian)
// calls sip:ROOM@server with a 440 Hz sine; the page must receive the
// phone's audio with energy, the phone must hear the page (energy in what
// it decodes), and when baresip hangs up the page must see the phone leave.
// Runs like the other browser tests, inside the network namespace of
// scripts/e2e/run-browser, which starts the server with --sip-port 5060:
//   ip netns exec NS node --test scripts/e2e/browser/sip.test.mjs
// Environment: CORECAST_URL (http://127.0.0.2:8080), CORECAST_SIP
// (127.0.0.2:5060).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { toneWav } from './common.mjs';

const ROOT = resolve(import.meta.dirname, '../../..');
const SERVER = process.env.CORECAST_URL || 'http://127.0.0.2:8080';
const SIP = process.env.CORECAST_SIP || '127.0.0.2:5060';
const OUT = join(ROOT, 'target/e2e');
const CHROMIUM = '/usr/bin/chromium';
const MODULES = '/usr/lib/baresip/modules';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];
const ROOM = 'e2e-sip';
const CALL_S = 14;
const AUDIO_MS = 20_000;

let context;
let profile;
const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/e2e/run-browser installs it)`);
  assert.ok(existsSync(`${MODULES}/sndfile.so`), 'baresip is missing (scripts/e2e/run-browser installs it)');
  mkdirSync(OUT, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'corecast-sip-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS,
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** The loudest RMS over 100 ms windows of a 16-bit WAV's first channel. */
function loudest(file) {
  const wav = readFileSync(file);
  const channels = wav.readUInt16LE(22);
  const rate = wav.readUInt32LE(24);
  let at = 12;
  while (at + 8 <= wav.length && wav.toString('ascii', at, at + 4) !== 'data') {
    at += 8 + wav.readUInt32LE(at + 4);
  }
  const start = at + 8;
  const frames = Math.floor((wav.length - start) / (2 * channels));
  const win = rate / 10;
  let best = 0;
  for (let w = 0; w + win <= frames; w += win) {
    let sum = 0;
    for (let i = w; i < w + win; i++) sum += wav.readInt16LE(start + 2 * channels * i) ** 2;
    best = Math.max(best, Math.sqrt(sum / win));
  }
  return best;
}

async function sipCalls() {
  const r = await fetch(`${SERVER}/api/sip/calls`, { signal: AbortSignal.timeout(3000) });
  assert.equal(r.status, 200, 'GET /api/sip/calls');
  return (await r.json()).calls;
}

test('a softphone calls into the room of a /room page; each hears the other', { timeout: 90_000 }, async () => {
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  const dir = join(OUT, 'browser-sip-baresip');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  let phone;
  try {
    await page.goto(`${SERVER}/room?room=${ROOM}&peer=web`);
    const t0 = Date.now();
    while (!(await page.evaluate(() => window.corecastRoom?.joined))) {
      assert.ok(Date.now() - t0 < 15_000, 'the page did not join');
      await sleep(200);
    }

    toneWav(join(dir, 'tone440.wav'), CALL_S + 10);
    const host = SIP.split(':')[0];
    writeFileSync(join(dir, 'config'), [
      'poll_method epoll', `sip_listen ${host}:5070`, `net_interface ${host}`,
      'audio_player aubridge,x', `audio_source aufile,${join(dir, 'tone440.wav')}`,
      'audio_alert aubridge,x', `module_path ${MODULES}`, 'module menu.so', 'module opus.so',
      'module aufile.so', 'module aubridge.so', 'module sndfile.so', 'module account.so',
      `snd_path ${dir}`, '',
    ].join('\n'));
    writeFileSync(join(dir, 'accounts'), `<sip:phone@${host}>;regint=0\n`);
    phone = spawn('baresip', ['-f', dir, '-e', `/dial sip:${ROOM}@${SIP}`, '-t', String(CALL_S)],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let phoneLog = '';
    phone.stdout.on('data', (d) => { phoneLog += d; });
    phone.stderr.on('data', (d) => { phoneLog += d; });
    const ended = new Promise((ok) => phone.on('exit', ok));

    // The call is a peer of the room: the page plays its audio.
    let peer;
    let audio;
    const t1 = Date.now();
    for (;;) {
      peer ??= (await sipCalls()).find((c) => c.room === ROOM)?.peer;
      if (peer) {
        const stats = await page.evaluate(async () => window.corecastRoom.stats());
        audio = stats.find((x) => x.peer === peer && x.kind === 'audio');
        if (audio?.packetsReceived > 100 && audio.totalAudioEnergy > 0) break;
      }
      if (Date.now() - t1 > AUDIO_MS) {
        await page.screenshot({ path: join(OUT, 'sip-fail.png') }).catch(() => {});
        assert.fail(`no audio from the phone after ${AUDIO_MS / 1000} s: call peer ${peer}, `
          + `stats ${JSON.stringify(audio)}; baresip:\n${phoneLog.slice(-2000)}`);
      }
      await sleep(500);
    }
    log(`the page hears the phone ${peer}: ${audio.packetsReceived} packets, energy ${audio.totalAudioEnergy.toFixed(3)}`);

    // baresip hangs up at -t: the call leaves the room.
    const code = await ended;
    phone = null;
    assert.equal(code, 0, `baresip exited with ${code}:\n${phoneLog.slice(-2000)}`);
    assert.match(phoneLog, /Call established/, 'baresip established the call');
    const t2 = Date.now();
    while ((await page.evaluate(() => window.corecastRoom.peers)).includes(peer)) {
      assert.ok(Date.now() - t2 < 5000, `the page still lists ${peer} 5 s after the phone hung up`);
      await sleep(200);
    }

    // What the phone heard: the page's fake microphone (beeps), with energy.
    const dec = readdirSync(dir).find((f) => f.endsWith('-dec.wav'));
    assert.ok(dec, `baresip recorded nothing (files: ${readdirSync(dir).join(', ')})`);
    const level = loudest(join(dir, dec));
    log(`the phone heard the page: loudest 100 ms at RMS ${level.toFixed(0)}`);
    assert.ok(level > 300, `the phone heard silence (loudest RMS ${level.toFixed(0)})`);
  } finally {
    phone?.kill('SIGKILL');
    await page.close({ runBeforeUnload: false }).catch(() => {});
  }
});
