// Media over QUIC in Chromium, both ways, with players nobody here wrote:
//  - a stream published from /publish (WebRTC; its microphone a 660 Hz
//    tone) plays in the npm MoQ player (@moq/watch) over WebTransport,
//    which pins the server's generated certificate by the hash at
//    /certificate.sha256: frames decoded at the publisher's size, and the
//    tone heard (the dominant frequency of the player's audio output);
//  - a MoQ publisher (the PyPI client, scripts/e2e/moq_publish.py) plays
//    at /watch (WebRTC).
// Run by scripts/e2e/run-browser (the server's MoQ port is its HTTP port's
// number, on UDP, as the player expects); by hand:
//   ip netns exec NS node --test scripts/e2e/browser/moq.test.mjs
// Environment: CORECAST_URL (http://127.0.0.2:8080), CORECAST_MOQ
// (moql://127.0.0.2:8080/).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { toneWav, until } from './common.mjs';

const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '../../..');
const SERVER = process.env.CORECAST_URL || 'http://127.0.0.2:8080';
const MOQ = process.env.CORECAST_MOQ || 'moql://127.0.0.2:8080/';
const OUT = join(ROOT, 'target/e2e');
const PYTHON = join(ROOT, 'target/e2e-venv/bin/python');
const CHROMIUM = '/usr/bin/chromium';
// QUIC stays on: WebTransport runs over it.
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];
const TEST = { timeout: 150_000 };
const FRAMES = 60;
const TONE_HZ = 660;

let context;
let profile;
let player; // the page server of the MoQ player
let playerUrl;
const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const streamName = (prefix) => `${prefix}-${Date.now().toString(36)}`;

/** The player page: @moq/watch's <moq-watch> element, nothing else. */
const PAGE = `<!doctype html>
<meta charset="utf-8"><title>MoQ player</title>
<script type="module" src="/moq-watch.js"></script>
<body></body>
<script type="module">
  const q = new URLSearchParams(location.search);
  const el = document.createElement('moq-watch');
  el.setAttribute('url', q.get('url'));
  el.setAttribute('name', q.get('name'));
  // Subscribe at once: corecast answers requests, it announces nothing.
  el.setAttribute('reload', 'false');
  el.setAttribute('visible', 'always');
  // Not muted: a muted player downloads no audio (Chromium runs with
  // --autoplay-policy=no-user-gesture-required).
  el.appendChild(document.createElement('canvas'));
  document.body.appendChild(el);
  window.player = el;
  // The dominant frequency of what the player plays: an analyser on the
  // audio decoder's output node, the peak bin refined by a parabola.
  let analyser, tapped;
  window.dominantHz = () => {
    const root = el.audio.out.root.peek();
    const ctx = el.audio.out.context.peek();
    if (!root || !ctx) return { state: 'no audio node' };
    if (tapped !== root) {
      analyser = ctx.createAnalyser();
      analyser.fftSize = 16384;
      root.connect(analyser);
      tapped = root;
      return { state: 'tapped' };
    }
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    let k = 1;
    for (let i = 2; i < bins.length - 1; i++) if (bins[i] > bins[k]) k = i;
    const [l, c, r] = [bins[k - 1], bins[k], bins[k + 1]];
    const shift = 0.5 * (l - r) / (l - 2 * c + r);
    return { state: ctx.state, hz: ((k + shift) * ctx.sampleRate) / analyser.fftSize, db: c };
  };
</script>`;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/e2e/run-browser installs it)`);
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing (scripts/e2e/run-browser creates it)`);
  mkdirSync(OUT, { recursive: true });
  // The player, bundled from the npm package as a page would ship it.
  const bundle = join(OUT, 'moq-watch.js');
  await build({
    stdin: { contents: "import '@moq/watch/element';", resolveDir: HERE },
    bundle: true, format: 'esm', outfile: bundle, logLevel: 'warning',
  });
  const js = readFileSync(bundle);
  player = createServer((req, res) => {
    if (req.url.startsWith('/moq-watch.js')) {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    }
  });
  const host = new URL(SERVER).hostname;
  await new Promise((ok) => player.listen(0, host, ok));
  playerUrl = `http://${host}:${player.address().port}`;
  profile = mkdtempSync(join(tmpdir(), 'corecast-chromium-'));
  // The publisher's microphone: a tone (Chromium loops the file).
  const wav = join(profile, `tone${TONE_HZ}.wav`);
  toneWav(wav, 10, TONE_HZ);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, viewport: { width: 1000, height: 800 },
    args: [...FLAGS, `--use-file-for-fake-audio-capture=${wav}`],
  });
});

after(async () => {
  await context?.close();
  player?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function openPage(url, label) {
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (['error', 'warning'].includes(m.type()) || /WebTransport|WebSocket/.test(t)) log(`${label}: console: ${t}`);
  });
  await page.goto(url);
  return page;
}

/** A metric's value in /metrics (summed over its label sets). */
async function metric(name) {
  const text = await (await fetch(`${SERVER}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  }
  return sum;
}

/** What the MoQ player decoded so far. */
function played(page) {
  return page.evaluate(() => {
    const p = window.player;
    if (!p?.video) return { state: 'no player' };
    const v = p.video.out.stats.peek();
    const d = p.video.out.display.peek();
    const a = p.audio?.out.stats.peek();
    return {
      frames: v?.frameCount ?? 0,
      videoBytes: v?.bytesReceived ?? 0,
      audioBytes: a?.bytesReceived ?? 0,
      width: d?.width, height: d?.height,
    };
  });
}

test('a stream published on /publish plays in the npm MoQ player over WebTransport', TEST, async () => {
  const stream = streamName('moqweb');
  const sessionsBefore = await metric('corecast_moq_connections_total');
  const pub = await openPage(`${SERVER}/publish?stream=${stream}&size=640x480`, 'publish');
  await pub.click('#start');
  await until('the publisher to connect', () => pub.evaluate(() => window.pc?.connectionState),
    (s) => s === 'connected', 20_000);
  const url = new URL('/', SERVER).toString();
  const watch = await openPage(`${playerUrl}/?url=${encodeURIComponent(url)}&name=${stream}`, 'moq-watch');
  const got = await until(`${FRAMES} decoded frames in the MoQ player`, () => played(watch),
    (p) => p.frames >= FRAMES && p.audioBytes > 0, 60_000);
  log(`MoQ player: ${JSON.stringify(got)}`);
  assert.deepEqual([got.width, got.height], [640, 480], 'frames of the publisher\'s size');
  const tone = await until(`the ${TONE_HZ} Hz tone in the player's output`, () => watch.evaluate(() => window.dominantHz()),
    (t) => t.db > -70 && Math.abs(t.hz - TONE_HZ) < 5, 20_000);
  log(`MoQ player hears ${tone.hz.toFixed(1)} Hz at ${tone.db.toFixed(1)} dB (${tone.state})`);
  await watch.screenshot({ path: join(OUT, 'moq-watch.png') });
  assert.ok(await metric('corecast_moq_connections_total') > sessionsBefore, 'a MoQ connection');
  assert.ok(await metric('corecast_moq_frames_total') >= FRAMES, 'frames counted');
  // The player keeps playing.
  const later = await until('more frames', () => played(watch), (p) => p.frames >= got.frames + 30, 20_000);
  log(`MoQ player later: ${later.frames} frames`);
  await watch.close();
  await pub.close();
});

test('a MoQ publisher plays at /watch', TEST, async () => {
  const room = streamName('moqpub');
  const fp = await (await fetch(`${SERVER}/certificate.sha256`)).text();
  assert.match(fp, /^[0-9a-f]{64}$/, 'the certificate hash');
  const argv = ['scripts/e2e/moq_publish.py', '--url', MOQ, '--fingerprint', fp, '--room', room,
    '--seconds', '40', '--size', '320x240'];
  const proc = spawn(PYTHON, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (c) => { out += c; });
  proc.stderr.on('data', (c) => { out += c; });
  const exited = new Promise((ok) => proc.on('exit', (code) => ok(code)));
  try {
    await until('the MoQ publisher to be the stream publisher', async () => {
      const streams = await (await fetch(`${SERVER}/api/streams`)).json();
      return JSON.stringify(streams);
    }, (s) => s.includes(room), 20_000);
    const watch = await openPage(`${SERVER}/watch?stream=${room}`, 'watch');
    const got = await until(`${FRAMES} decoded frames at /watch`, () => watch.evaluate(async () => {
      const pc = window.pc;
      if (!pc) return { state: 'no connection' };
      const stats = [...(await pc.getStats()).values()];
      const v = stats.find((x) => x.type === 'inbound-rtp' && x.kind === 'video');
      const a = stats.find((x) => x.type === 'inbound-rtp' && x.kind === 'audio');
      return {
        state: pc.connectionState, frames: v?.framesDecoded ?? 0,
        width: v?.frameWidth, height: v?.frameHeight, audioPackets: a?.packetsReceived ?? 0,
      };
    }), (p) => p.frames >= FRAMES && p.audioPackets > 50, 60_000);
    log(`/watch: ${JSON.stringify(got)}`);
    assert.deepEqual([got.width, got.height], [320, 240], 'frames of the MoQ publisher\'s size');
    await watch.screenshot({ path: join(OUT, 'watch-moq.png') });
    await watch.close();
  } finally {
    proc.kill();
    await exited;
    if (out.trim()) log(`moq_publish.py:\n${out.trim()}`);
  }
});
