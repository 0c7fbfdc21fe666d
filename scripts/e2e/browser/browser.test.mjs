// Chromium end-to-end tests of corecast's demo pages (/publish, /watch) and of
// interop between Chromium and aiortc through the server. Run by
// scripts/e2e/run-browser, which starts the server inside a network namespace
// where 127.0.0.2 is a real (veth) address; run the same way by hand:
//   ip netns exec NS node --test scripts/e2e/browser/browser.test.mjs
// Environment: CORECAST_URL (http://127.0.0.2:8080), CORECAST_ICE_IP (127.0.0.2).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { until } from './common.mjs';

const ROOT = resolve(import.meta.dirname, '../../..');
const SERVER = process.env.CORECAST_URL || 'http://127.0.0.2:8080';
const ICE_IP = process.env.CORECAST_ICE_IP || '127.0.0.2';
const OUT = join(ROOT, 'target/e2e');
const PYTHON = join(ROOT, 'target/e2e-venv/bin/python');
const AIORTC = join(ROOT, 'scripts/e2e/whip_whep_aiortc.py');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
];
const TEST = { timeout: 150_000 };

let context; // one browser (persistent context = a fresh --user-data-dir)
let profile;
const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const streamName = (prefix) => `${prefix}-${Date.now().toString(36)}`;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/e2e/run-browser installs it)`);
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing (scripts/e2e/run-browser creates it)`);
  mkdirSync(OUT, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'corecast-chromium-'));
  // launchPersistentContext passes --user-data-dir=profile itself.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1100, height: 1000 },
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

// ------------------------------------------------------------------ helpers

/** The first RTP stats entry of `type` and kind video on the page's window.pc. */
function videoRtp(page, type) {
  return page.evaluate(async (type) => {
    const pc = window.pc;
    if (!pc) return { state: 'no connection' };
    const report = await pc.getStats();
    const s = [...report.values()].find((x) => x.type === type && x.kind === 'video');
    return {
      state: pc.connectionState,
      reconnects: window.reconnects,
      frames: (type === 'inbound-rtp' ? s?.framesDecoded : s?.framesEncoded) ?? 0,
      width: s?.frameWidth,
      height: s?.frameHeight,
      codec: s && report.get(s.codecId)?.mimeType,
    };
  }, type);
}

const text = (page, id) => page.locator(`#${id}`).innerText();
const overlay = (page) => page.evaluate(() => {
  const o = document.getElementById('overlay');
  return o.hidden ? '' : o.textContent;
});

/** Waits until the /watch page decoded `frames` video frames of width x height. */
async function watchFrames(page, frames, [width, height], ms = 40_000) {
  const v = await until(`${frames} frames of ${width}x${height} on /watch`, () => videoRtp(page, 'inbound-rtp'),
    (v) => v.frames >= frames && v.width === width && v.height === height, ms);
  log(`/watch decoded ${v.frames} frames of ${v.width}x${v.height} ${v.codec} (reconnects ${v.reconnects})`);
  return v;
}

const pages = [];
async function openPage(path, label) {
  const page = await context.newPage();
  page.label = label;
  pages.push(page);
  page.on('pageerror', (e) => log(`${label}: page error: ${e.message}`));
  page.on('console', (m) => ['error', 'warning'].includes(m.type()) && log(`${label}: console: ${m.text()}`));
  await page.goto(`${SERVER}${path}`);
  return page;
}

/** Opens /publish, presses Start, waits until the connection is up. */
async function publishInBrowser(stream, query = '') {
  const page = await openPage(`/publish?stream=${stream}${query}`, 'publish');
  await page.click('#start');
  await until('the publisher to connect', () => page.evaluate(() => window.pc?.connectionState),
    (s) => s === 'connected', 20_000);
  return page;
}

/** The aiortc peer of scripts/e2e/whip_whep_aiortc.py as a child process. */
function aiortc(args) {
  const argv = [AIORTC, '--server', SERVER, '--ice-ip', ICE_IP, ...args];
  const proc = spawn(PYTHON, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const take = (chunk) => {
    out += chunk;
    for (const line of String(chunk).split('\n')) if (line.trim()) log(`  aiortc: ${line}`);
  };
  proc.stdout.on('data', take);
  proc.stderr.on('data', take);
  const exited = new Promise((res) => proc.on('exit', (code, signal) => res(code ?? signal)));
  let done = false;
  exited.then(() => (done = true));
  return {
    exited,
    output: () => out,
    waitFor: (re, ms) => until(`aiortc to print ${re}`, () => ({ out, done }), (s) => re.test(s.out) || s.done, ms)
      .then((s) => assert.match(s.out, re, 'aiortc exited early')),
    async stop() {
      if (done) return exited;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** A test that closes its pages and, when it fails, saves what they show. */
function scenario(name, fn) {
  test(name, TEST, async () => {
    const t0 = Date.now();
    try {
      const health = await fetch(`${SERVER}/healthz`, { signal: AbortSignal.timeout(3000) }).catch((e) => e);
      assert.equal(health.status, 200, `corecast does not answer ${SERVER}/healthz (${health.message ?? health.status}): `
        + 'did it exit? See target/e2e/corecast-browser.log');
      await fn();
      log(`${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    } catch (e) {
      for (const [i, page] of pages.entries()) {
        const file = join(OUT, `fail-${name.replace(/\W+/g, '-').slice(0, 40)}-${i}-${page.label}.png`);
        await page.screenshot({ path: file }).catch(() => {});
        const shown = await page.locator('main').innerText().catch(() => '?');
        log(`${page.label} page (screenshot ${file}):\n${shown}`);
      }
      throw e;
    } finally {
      for (const page of pages.splice(0)) await page.close({ runBeforeUnload: false }).catch(() => {});
    }
  });
}

// ------------------------------------------------------------------ tests

scenario('publish page to watch page in Chromium', async () => {
  const stream = streamName('tabs');
  const pub = await publishInBrowser(stream, '&size=640x480');
  const watch = await openPage(`/watch?stream=${stream}`, 'watch');
  const got = await watchFrames(watch, 60, [640, 480]);
  const sent = await videoRtp(pub, 'outbound-rtp');
  assert.deepEqual([got.width, got.height], [sent.width, sent.height], 'viewer size = publisher size');
  assert.equal(got.codec, sent.codec);

  // Both pages show their stats in words.
  await until('/watch stats', async () => ({
    state: await text(watch, 'state'), resolution: await text(watch, 'resolution'),
    fps: await text(watch, 'fps'), bitrate: await text(watch, 'bitrate'), loss: await text(watch, 'loss'),
  }), (s) => s.state === 'playing' && s.resolution === '640×480' && /^\d/.test(s.fps)
    && /bit\/s$/.test(s.bitrate) && /%/.test(s.loss), 10_000);
  await until('/publish stats', async () => ({
    codecs: await text(pub, 'codecs'), bitrate: await text(pub, 'bitrate'), resolution: await text(pub, 'resolution'),
  }), (s) => /VP8|VP9|H264|AV1/.test(s.codecs) && /bit\/s$/.test(s.bitrate) && s.resolution === '640×480', 10_000);
  assert.equal(await overlay(watch), '', 'no overlay while playing');
  const home = await openPage('/', 'home');
  await until('/ to list the stream as live with 1 viewer', () => home.locator('#streams').innerText(),
    (t) => t.split('\n').some((row) => row.split('\t').slice(0, 3).join() === `${stream},live,1`), 10_000);
  await watch.screenshot({ path: join(OUT, 'watch.png') });
  await pub.screenshot({ path: join(OUT, 'publish.png') });
  log(`screenshots: ${join(OUT, 'watch.png')}, ${join(OUT, 'publish.png')}`);

  // The publisher leaves: the viewer says so, then plays the next publisher (another size).
  await pub.click('#stop');
  await until('/watch to say "not live"', () => overlay(watch), (o) => /not live/.test(o), 15_000);
  const pub2 = await publishInBrowser(stream, '&size=320x240');
  await until('/watch to play the new publisher', () => videoRtp(watch, 'inbound-rtp'),
    (v) => v.width === 320 && v.height === 240, 30_000);
  const before = await videoRtp(watch, 'inbound-rtp');
  await until('30 more frames', () => videoRtp(watch, 'inbound-rtp'),
    (v) => v.reconnects !== before.reconnects ? v.frames >= 30 : v.frames >= before.frames + 30, 20_000);
  assert.equal(await text(watch, 'state'), 'playing');
  log(`/watch recovered after the publisher came back (reconnects ${before.reconnects})`);
  await pub2.click('#stop');
});

scenario('aiortc publisher, Chromium viewer', async () => {
  const stream = streamName('aio-pub');
  const peer = aiortc(['--publish-only', '--stream', stream, '--timeout', '120']);
  try {
    await peer.waitFor(/publishing on/, 20_000);
    const watch = await openPage(`/watch?stream=${stream}`, 'watch');
    const got = await watchFrames(watch, 60, [320, 240]);
    assert.equal(got.codec, 'video/VP8');
  } finally {
    const code = await peer.stop();
    assert.equal(code, 0, `aiortc publisher exited ${code}:\n${peer.output()}`);
    assert.match(peer.output(), / 0 failed/);
  }
});

scenario('Chromium publisher, aiortc viewer', async () => {
  const stream = streamName('aio-view');
  const pub = await publishInBrowser(stream, '&size=320x240&codec=VP8');
  const peer = aiortc(['--view-only', '--stream', stream, '--viewers', '1', '--frames', '60', '--timeout', '45']);
  const code = await peer.exited;
  assert.equal(code, 0, `aiortc viewer exited ${code}:\n${peer.output()}`);
  assert.match(peer.output(), /PASS viewer 1 frames/);
  assert.equal(await text(pub, 'state'), 'connected');
  // Closing the tab ends the WHIP session at once (DELETE on pagehide).
  await pub.close({ runBeforeUnload: true });
  await until(`${stream} to leave /api/streams`, async () => (await (await fetch(`${SERVER}/api/streams`)).json()),
    (list) => !list.some((s) => s.stream === stream), 5_000);
});

scenario('watch page says "not live", then plays by itself', async () => {
  const stream = streamName('late');
  const watch = await openPage(`/watch?stream=${stream}`, 'watch');
  await until('/watch to say "not live"', async () => ({ overlay: await overlay(watch), state: await text(watch, 'state') }),
    (s) => /not live/.test(s.overlay) && s.state === 'not live', 15_000);
  await sleep(3000); // it stays so, without reconnecting, while nobody publishes
  assert.match(await overlay(watch), /not live/);
  assert.equal(await watch.evaluate(() => window.reconnects), 0);
  await watch.screenshot({ path: join(OUT, 'watch-not-live.png') });

  const pub = await publishInBrowser(stream, '&size=640x480');
  const got = await watchFrames(watch, 60, [640, 480]);
  await until('/watch to say "playing"', () => text(watch, 'state'), (s) => s === 'playing', 5_000);
  assert.equal(await overlay(watch), '');
  log(`started by itself after ${got.reconnects} reconnects`);
  await pub.click('#stop');
});

scenario('every video codec of the server, picked on /publish', async () => {
  await Promise.all(['VP9', 'H264', 'AV1'].map(async (codec) => {
    const stream = streamName(`codec-${codec}`);
    await publishInBrowser(stream, `&size=320x240&codec=${codec}`);
    const watch = await openPage(`/watch?stream=${stream}`, `watch ${codec}`);
    const got = await watchFrames(watch, 30, [320, 240]);
    assert.equal(got.codec, `video/${codec}`);
  }));
});

scenario('pages explain errors in words', async () => {
  const pub = await openPage('/publish?stream=no%20spaces', 'publish');
  await pub.click('#start');
  await until('/publish to explain the bad name', () => text(pub, 'error'), (t) => /stream name/i.test(t), 5_000);
  const watch = await openPage('/watch?stream=no%20spaces', 'watch');
  await until('/watch to explain the bad name', () => text(watch, 'error'), (t) => /stream name/i.test(t), 5_000);
});
