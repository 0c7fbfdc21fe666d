// Chromium end-to-end test of the conference page (/room) and so of the
// browser SDK (/sdk/corecast.js) and the server's SDK transport: three tabs
// join one room with fake cameras and microphones; each must decode the
// other two's video and receive their audio; then one leaves and the other
// two must see it go. Runs like browser.test.mjs, inside the network
// namespace of scripts/e2e/run-browser (Chromium uses no 127.0.0.1
// candidates, so the server advertises 127.0.0.2):
//   ip netns exec NS node --test scripts/e2e/browser/room.test.mjs
// Environment: CORECAST_URL (http://127.0.0.2:8080).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const ROOT = resolve(import.meta.dirname, '../../..');
const SERVER = process.env.CORECAST_URL || 'http://127.0.0.2:8080';
const OUT = join(ROOT, 'target/e2e');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  // The remote audio must play (its energy is measured) although no one clicked.
  '--autoplay-policy=no-user-gesture-required',
  // Three tabs, two of them in the background: keep them all running at full speed.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];
const ROOM = 'e2e-room';
const PEERS = ['p1', 'p2', 'p3'];
const FRAMES = 60;
const MEDIA_MS = 40_000;
const LEFT_MS = 2_000;

let context;
let profile;
const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/e2e/run-browser installs it)`);
  mkdirSync(OUT, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'corecast-room-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1100, height: 900 },
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** What a /room page reports on window.corecastRoom (see room.js). */
function probe(page) {
  return page.evaluate(async () => {
    const s = window.corecastRoom;
    if (!s) return { joined: false, peers: [], error: 'the page has no window.corecastRoom', stats: [] };
    return { joined: s.joined, peers: s.peers, error: s.error, stats: await s.stats() };
  });
}

/** What `me` still lacks of each other peer's media, in words; [] when nothing. */
function lacking(me, s) {
  if (!s.joined) return [`not joined${s.error ? ` (${s.error})` : ''}`];
  const out = [];
  for (const other of PEERS.filter((p) => p !== me)) {
    const v = s.stats.find((x) => x.peer === other && x.kind === 'video');
    const a = s.stats.find((x) => x.peer === other && x.kind === 'audio');
    if (!v) out.push(`no video slot plays ${other}`);
    else if (v.framesDecoded < FRAMES || !(v.frameWidth > 0)) {
      out.push(`${other}'s video: ${v.framesDecoded} frames decoded of ${FRAMES}, ${v.frameWidth}x${v.frameHeight} (${v.state})`);
    }
    if (!a) out.push(`no audio slot plays ${other}`);
    else if (!(a.packetsReceived > 0) || !(a.totalAudioEnergy > 0 || a.audioLevel > 0)) {
      out.push(`${other}'s audio: ${a.packetsReceived} packets, energy ${a.totalAudioEnergy} (${a.state})`);
    }
  }
  if (s.error) out.push(`the page shows an error: ${s.error}`);
  return out;
}

function summary(me, s) {
  return PEERS.filter((p) => p !== me).map((other) => {
    const v = s.stats.find((x) => x.peer === other && x.kind === 'video') ?? {};
    const a = s.stats.find((x) => x.peer === other && x.kind === 'audio') ?? {};
    return `${other}: video ${v.frameWidth}x${v.frameHeight} ${v.framesDecoded} frames, `
      + `audio ${a.packetsReceived} packets energy ${Number(a.totalAudioEnergy).toFixed(3)}`;
  }).join(' | ');
}

/** Saves a screenshot and logs what each page shows, for a failure's reader. */
async function evidence(pages) {
  for (const [peer, page] of pages) {
    const file = join(OUT, `room-fail-${peer}.png`);
    await page.screenshot({ path: file }).catch(() => {});
    const shown = await page.locator('main').innerText().catch(() => '?');
    log(`${peer} (screenshot ${file}):\n${shown}`);
  }
}

test('three tabs in a room see and hear each other; one leaves', { timeout: 120_000 }, async () => {
  const health = await fetch(`${SERVER}/healthz`, { signal: AbortSignal.timeout(3000) }).catch((e) => e);
  assert.equal(health.status, 200, `corecast does not answer ${SERVER}/healthz (${health.message ?? health.status})`);

  /** @type {Map<string, import('playwright-core').Page>} */
  const pages = new Map();
  try {
    for (const peer of PEERS) {
      const page = await context.newPage();
      page.on('pageerror', (e) => log(`${peer}: page error: ${e.message}`));
      page.on('console', (m) => ['error', 'warning'].includes(m.type()) && log(`${peer}: console: ${m.text()}`));
      await page.goto(`${SERVER}/room?room=${ROOM}&peer=${peer}`);
      pages.set(peer, page);
    }

    // Everyone decodes everyone else's video and hears their audio.
    const t0 = Date.now();
    let seen;
    for (;;) {
      seen = new Map();
      for (const [peer, page] of pages) seen.set(peer, await probe(page));
      const missing = [...seen].map(([peer, s]) => [peer, lacking(peer, s)]).filter(([, l]) => l.length);
      if (!missing.length) break;
      if (Date.now() - t0 > MEDIA_MS) {
        await evidence(pages);
        const words = missing.map(([peer, l]) => `  ${peer}: ${l.join('; ')}`).join('\n');
        assert.fail(`after ${MEDIA_MS / 1000} s the room is not complete:\n${words}`);
      }
      await sleep(500);
    }
    log(`all media flowing after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    for (const [peer, s] of seen) console.log(`${peer} sees ${summary(peer, s)}`);

    // p1 leaves with its button: the others drop it at once.
    const [leaver, ...stayers] = PEERS;
    await pages.get(leaver).click('#leave');
    const t1 = Date.now();
    for (;;) {
      const still = [];
      for (const peer of stayers) {
        const s = await probe(pages.get(peer));
        if (s.peers.includes(leaver)) still.push(`${peer} still lists ${leaver} (peers: ${s.peers.join(', ')})`);
      }
      if (!still.length) break;
      if (Date.now() - t1 > LEFT_MS) {
        await evidence(pages);
        assert.fail(`${LEFT_MS / 1000} s after ${leaver} left: ${still.join('; ')}`);
      }
      await sleep(100);
    }
    log(`${stayers.join(' and ')} saw ${leaver} leave within ${Date.now() - t1} ms`);
    // The leaver's own page is done once its leave was answered and the
    // connection ended (Room.leave() resolves then): that may come after the
    // others heard of it, but as quickly.
    let gone;
    for (;;) {
      gone = await probe(pages.get(leaver));
      if (!gone.joined) break;
      if (Date.now() - t1 > LEFT_MS) {
        await evidence(pages);
        assert.fail(`${LEFT_MS / 1000} s after clicking Leave, ${leaver} still says it is joined`);
      }
      await sleep(100);
    }
    log(`${leaver} left within ${Date.now() - t1} ms`);
    assert.equal(gone.error, null, `${leaver} shows an error after leaving: ${gone.error}`);
    for (const peer of stayers) {
      const s = await probe(pages.get(peer));
      assert.ok(s.joined, `${peer} is no longer joined after ${leaver} left (${s.error})`);
      assert.deepEqual(s.peers, stayers.filter((p) => p !== peer), `${peer}'s peers`);
    }
  } finally {
    for (const page of pages.values()) await page.close({ runBeforeUnload: false }).catch(() => {});
  }
});
