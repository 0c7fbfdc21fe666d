// Chromium end-to-end tests of simulcast and SVC: a WHIP publisher in
// Chromium sends three VP8 simulcast layers (rids q, h, f: 160x120, 320x240,
// 640x480), or one VP9 or AV1 stream of three spatial and three temporal
// layers (scalabilityMode L3T3_KEY of a 960x540 camera; AV1's layers are
// named only by the dependency descriptor extension, which the viewer
// negotiates too), and a WHEP viewer in another
// Chromium page must get the best layer its link carries: the top layer on
// an unconstrained link, a lower one (still decoding) while its downlink is
// limited to 300 kbit/s, and the top layer again when the limit goes. Runs like browser.test.mjs, inside the network namespace of
// scripts/e2e/run-browser (it must: it shapes the namespace's `lo` with tc):
//   ip netns exec NS node --test scripts/e2e/browser/simulcast.test.mjs
// Environment: CORECAST_URL (http://127.0.0.2:8080).
//
// How the viewer's link is limited: the server (127.0.0.2:9000) and both
// Chromium peers (127.0.0.2, on the namespace's veth) talk over the
// namespace's loopback device, so an egress qdisc on `lo` with a u32 filter
// on the viewer's UDP port (destination port = the viewer's local ICE port,
// from its getStats) limits what reaches the viewer and nothing else: the
// publisher's uplink, HTTP and the viewer's own feedback to the server are
// untouched. The kernel this runs on has sch_htb, sch_tbf and cls_u32 but no
// sch_prio or sch_netem, so the classful root is htb (unclassified traffic
// goes to a 10 Gbit/s class) and the viewer's class has a tbf leaf whose
// 200 ms latency bound drops what a 300 kbit/s link would not carry instead
// of queueing it for seconds.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { until } from './common.mjs';

const ROOT = resolve(import.meta.dirname, '../../..');
const SERVER = process.env.CORECAST_URL || 'http://127.0.0.2:8080';
const OUT = join(ROOT, 'target/e2e');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Without it Chromium caps the simulcast layers by the camera's size (2 for
  // 640x480: it sends q and h, and never f, whatever the bandwidth).
  '--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/',
];
const TEST = { timeout: 90_000 };

// What the publisher sends: rid -> scaleResolutionDownBy, maxBitrate, and
// the size that layer has from a 640x480 camera.
const LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000, size: [160, 120] },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000, size: [320, 240] },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000, size: [640, 480] },
];
// The size of the top layer of the scenario that runs (toTop sets it).
let TOP = LAYERS.at(-1).size;
// The SVC publisher: one VP9 encoding of a 960x540 camera in three spatial
// layers (240x135, 480x270, 960x540) and three temporal ones. Chromium
// keeps an SVC layer's long side at 240 pixels or more: from 640x480 it
// sends two spatial layers, not three.
const SVC = { scalabilityMode: 'L3T3_KEY', maxBitrate: 2_500_000, size: [960, 540], codec: 'video/VP9' };
// The same in AV1 (libaom): Chromium sends the dependency descriptor
// because the encoding has a scalability mode.
const SVC_AV1 = { ...SVC, codec: 'video/AV1' };
const LIMIT = '300kbit';       // the limited viewer link (simulcast)
// The SVC viewer's link is limited to this share of what it received on the
// top layer (over 3 s, after the first keyframes): Chromium's VP9 SVC of the
// fake camera is a few hundred kbit/s in all, which 300 kbit/s may carry.
// The top spatial layer is more than half of it, and is forwarded with at
// least half its frame rate: 30% fits only a lower spatial layer.
const SVC_LIMIT_SHARE = 0.3;
const TO_TOP_MS = 20_000;      // publishing -> viewer on the top layer
const TO_LOWER_MS = 10_000;    // limit on -> viewer on a lower layer
const HOLD_MS = 5_000;
const SETTLE_MS = 8_000;       // SVC: at most this long for the viewer to decode at one size on the limited link         // how long the viewer is watched on the limited link after that
const BACK_MS = 15_000;        // limit off -> viewer on the top layer again
// Frames the viewer must decode in 2 s on the top layer. An SVC viewer
// climbing back may get the top spatial layer at two of its three temporal
// layers (half the frames) until its estimate carries the third.
const TOP_FRAMES = (svc) => (svc ? 15 : 20);
const FREEZE_MS = 1_000;       // no new decoded frame for longer than this: a freeze
const MAX_FREEZES = 3;         // allowed while the limit is on (SVC: once the viewer settled) and until the top layer is back

let context;
let profile;
const log = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const streamName = (prefix) => `${prefix}-${Date.now().toString(36)}`;
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/e2e/run-browser installs it)`);
  mkdirSync(OUT, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'corecast-simulcast-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1100, height: 800 },
  });
});

after(async () => {
  if (shaping) unlimit();
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

// ------------------------------------------------------------------ helpers

// The code both pages run, installed with page.evaluate (so it must not use
// anything of this module).
function pageCode() {
  /** Waits until ICE gathering is complete (the server takes no trickle), 3 s at most. */
  const gathered = (pc) => new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    const check = () => pc.iceGatheringState === 'complete' && done();
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(done, 3000);
  });
  const sdpLines = (sdp, re) => sdp.split(/\r?\n/).filter((l) => re.test(l));
  const SIMULCAST_LINES = /^a=(simulcast|rid|extmap:\d+ .*(rtp-stream-id|mid|dependency))/;

  /** POSTs pc's offer to a WHIP or WHEP url and applies the answer. */
  async function negotiate(pc, url) {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const res = await fetch(url, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    if (res.status !== 201) throw new Error(`POST ${url} answered HTTP ${res.status}: ${answer}`);
    window.session = new URL(res.headers.get('Location'), location.href).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    return {
      offer: sdpLines(pc.localDescription.sdp, SIMULCAST_LINES),
      answer: sdpLines(answer, SIMULCAST_LINES),
    };
  }

  const page = document.body;
  page.innerHTML = '<main><h1></h1><video autoplay muted playsinline width="640" height="480"'
    + ' style="background:#222"></video><pre></pre></main>';
  const video = page.querySelector('video');

  /** WHIP: camera 640x480 + microphone, video as simulcast `layers` in VP8,
   *  or (`svc`: {scalabilityMode, maxBitrate, size, codec}) one SVC encoding
   *  in that codec of a camera of that size. */
  window.publish = async (url, layers, svc) => {
    page.querySelector('h1').textContent = `publisher: ${url}`;
    const [width, height] = svc?.size ?? [640, 480];
    const media = await navigator.mediaDevices.getUserMedia({ video: { width, height }, audio: true });
    video.srcObject = media;
    const pc = window.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    const vt = pc.addTransceiver(media.getVideoTracks()[0], {
      direction: 'sendonly',
      sendEncodings: svc ? [{ scalabilityMode: svc.scalabilityMode, maxBitrate: svc.maxBitrate }]
        : layers.map(({ rid, scaleResolutionDownBy, maxBitrate }) => ({ rid, scaleResolutionDownBy, maxBitrate })),
    });
    const codecs = RTCRtpSender.getCapabilities('video').codecs;
    const mime = svc ? svc.codec : 'video/VP8';
    vt.setCodecPreferences([
      ...codecs.filter((c) => c.mimeType === mime),
      ...codecs.filter((c) => c.mimeType === 'video/rtx'),
    ]);
    pc.addTransceiver(media.getAudioTracks()[0], { direction: 'sendonly' });
    const sdp = await negotiate(pc, url);
    sdp.encodings = vt.sender.getParameters().encodings.map((e) => e.rid ?? '(none)');
    return sdp;
  };

  /** The publisher's video layers from getStats. */
  window.sending = async () => {
    const pc = window.pc;
    const report = await pc.getStats();
    const all = [...report.values()];
    const pair = all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    return {
      state: pc.connectionState,
      bwe: pair?.availableOutgoingBitrate,
      layers: all.filter((s) => s.type === 'outbound-rtp' && s.kind === 'video')
        .map((s) => ({
          rid: s.rid, w: s.frameWidth, h: s.frameHeight, frames: s.framesEncoded ?? 0, fps: s.framesPerSecond,
          active: s.active, limit: s.qualityLimitationReason, target: s.targetBitrate,
          codec: report.get(s.codecId)?.mimeType, mode: s.scalabilityMode,
        }))
        .sort((a, b) => String(a.rid).localeCompare(String(b.rid))),
    };
  };

  /** WHEP: receives video and audio into the <video>; samples its stats every 200 ms. */
  window.view = async (url) => {
    page.querySelector('h1').textContent = `viewer: ${url}`;
    const pc = window.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    const vt = pc.addTransceiver('video', { direction: 'recvonly' });
    // The dependency descriptor: without it, AV1 SVC does not decode (it
    // names each frame's layer and references). Chromium offers it on a
    // receiver only when asked.
    if (vt.setHeaderExtensionsToNegotiate) {
      vt.setHeaderExtensionsToNegotiate(vt.getHeaderExtensionsToNegotiate().map((e) => (
        /dependency-descriptor/.test(e.uri) ? { ...e, direction: 'recvonly' } : e)));
    }
    pc.addTransceiver('audio', { direction: 'recvonly' });
    video.srcObject = new MediaStream(pc.getReceivers().map((r) => r.track));
    const sdp = await negotiate(pc, url);
    window.samples = [];
    const pre = page.querySelector('pre');
    const sample = async () => {
      const report = await pc.getStats();
      const all = [...report.values()];
      const v = all.find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
      const s = {
        t: Date.now(), state: pc.connectionState,
        w: v?.frameWidth ?? 0, h: v?.frameHeight ?? 0, frames: v?.framesDecoded ?? 0,
        vw: video.videoWidth, vh: video.videoHeight, bytes: v?.bytesReceived ?? 0,
        lost: v?.packetsLost ?? 0, freezes: v?.freezeCount ?? 0, keyframes: v?.keyFramesDecoded ?? 0,
        codec: v && report.get(v.codecId)?.mimeType,
      };
      window.samples.push(s);
      pre.textContent = JSON.stringify(s, null, 1);
    };
    (async function loop() {
      if (pc.connectionState === 'closed') return;
      await sample().catch((e) => console.warn('sample:', e));
      setTimeout(loop, 200);
    })();
    return sdp;
  };

  /** The local and remote UDP ports of the connection's selected candidate pair. */
  window.ports = async () => {
    const report = await window.pc.getStats();
    const all = [...report.values()];
    const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport ? report.get(transport.selectedCandidatePairId)
      : all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    return {
      local: report.get(pair?.localCandidateId)?.port,
      remote: report.get(pair?.remoteCandidateId)?.port,
      protocol: report.get(pair?.localCandidateId)?.protocol,
    };
  };

  window.hangup = async () => {
    if (window.session) await fetch(window.session, { method: 'DELETE' }).catch(() => {});
    window.pc?.close();
  };
}

const pages = [];
async function openPage(label) {
  const page = await context.newPage();
  page.label = label;
  pages.push(page);
  page.on('pageerror', (e) => log(`${label}: page error: ${e.message}`));
  page.on('console', (m) => ['error', 'warning'].includes(m.type()) && !/favicon/.test(m.location().url)
    && log(`${label}: console: ${m.text()}`));
  // Any page of the server's origin: 127.0.0.2 is a secure context (getUserMedia, WebRTC).
  await page.goto(`${SERVER}/healthz`);
  await page.evaluate(pageCode);
  return page;
}

/** The publisher's video layers in words: "f 640x480 31 frames 20 fps limit=none target=1500k; …". */
const layerText = (s) => s.layers.map((l) => `${l.rid ?? l.mode ?? '(no rid)'} ${l.w ?? '-'}x${l.h ?? '-'} ${l.frames} frames`
  + ` ${l.fps ?? '-'} fps ${l.active === false ? 'inactive ' : ''}limit=${l.limit}`
  + ` target=${Math.round((l.target ?? 0) / 1000)}k`).join('; ')
  + ` (estimate ${Math.round((s.bwe ?? 0) / 1000)} kbit/s)`;

/** Publishes `stream` with the three layers (simulcast, or one SVC encoding
 *  with `svc`) and waits until Chromium sends all of them. */
async function publisher(stream, svc) {
  const page = await openPage('publisher');
  const sdp = await page.evaluate(([url, layers, svc]) => window.publish(url, layers, svc),
    [`${SERVER}/whip/${stream}`, LAYERS, svc ?? null]);
  log(`publisher offer: ${sdp.offer.join(' | ')}`);
  log(`publisher answer: ${sdp.answer.join(' | ') || '(no a=simulcast, a=rid, rtp-stream-id)'}`);
  log(`publisher encodings after the answer: ${sdp.encodings.join(', ')}`);
  await until('the publisher to connect', () => page.evaluate(() => window.pc.connectionState),
    (s) => s === 'connected', 15_000);
  const t0 = Date.now();
  return {
    page,
    sdp,
    /** Waits until all three layers are encoded at their sizes and all keep being encoded. */
    async sendsAllLayers(ms = TO_TOP_MS) {
      const seen = [];
      // SVC: one stream in the codec and scalability mode asked for, at the top size.
      const ok = svc
        ? (s) => s.layers.some((l) => l.codec === svc.codec && l.mode === svc.scalabilityMode
          && l.w === TOP[0] && l.h === TOP[1] && l.frames > 0)
        : (s) => LAYERS.every(({ rid, size }) => s.layers.some((l) => l.rid === rid && l.w === size[0]
          && l.h === size[1] && l.frames > 0));
      let s;
      for (const end = Date.now() + ms; ;) {
        s = await page.evaluate(() => window.sending());
        const line = `+${secs(Date.now() - t0)}: ${layerText(s)}`;
        seen.push(line);
        if (ok(s)) break;
        if (Date.now() > end) {
          const what = svc ? `${svc.codec} ${svc.scalabilityMode} at ${TOP.join('x')}`
            : `the 3 simulcast layers ${LAYERS.map((l) => `${l.rid} ${l.size.join('x')}`).join(', ')}`;
          assert.fail(`Chromium does not send ${what} within ${ms / 1000} s; the server answered ${JSON.stringify(sdp.answer)}, `
            + `encodings after the answer: ${sdp.encodings.join(', ')}; outbound video seen:\n  ${seen.slice(-8).join('\n  ')}`);
        }
        await sleep(500);
      }
      await sleep(1000);
      const later = await page.evaluate(() => window.sending());
      for (const { rid } of svc ? [{ rid: undefined }] : LAYERS) {
        const [a, b] = [s, later].map((x) => x.layers.find((l) => l.rid === rid).frames);
        assert.ok(b > a, `layer ${rid ?? '(svc)'} stopped being encoded (${a} -> ${b} frames): ${layerText(later)}`);
      }
      log(`publisher sends all layers after ${secs(Date.now() - t0)}: ${layerText(later)}`);
      return later;
    },
  };
}

/** A WHEP viewer of `stream` whose stats the page samples every 200 ms; its
 *  failure messages end with what `pub` sends at the time. */
async function viewer(stream, pub) {
  const page = await openPage('viewer');
  const sdp = await page.evaluate((url) => window.view(url), `${SERVER}/whep/${stream}`);
  log(`viewer answer: ${sdp.answer.join(' | ')}`);
  const t0 = Date.now();
  const samples = [];
  const events = []; // [time, text]: layer changes and what the test did
  const size = (s) => (s.w ? `${s.w}x${s.h}` : 'nothing');
  let lastLog = 0;
  const sending = async () => {
    const s = await pub.page.evaluate(() => window.sending()).catch((e) => ({ error: e.message }));
    return s.layers ? `; the publisher sends ${layerText(s)}` : `; publisher stats: ${s.error}`;
  };
  const v = {
    page,
    samples,
    t0,
    /** Notes what the test did in the layer history. */
    mark(what) {
      events.push([Date.now(), what]);
      log(`viewer +${secs(Date.now() - t0)}: ${what}`);
    },
    /** Fetches the page's new samples; logs layer changes and, every 2 s, progress. */
    async poll() {
      const fresh = await page.evaluate((n) => window.samples.slice(n), samples.length);
      for (const s of fresh) {
        const prev = samples.at(-1);
        samples.push(s);
        if (!prev || prev.w !== s.w || prev.h !== s.h || (prev.vw !== s.vw && s.vw)) {
          v.mark(`${size(s)} (video element ${s.vw}x${s.vh}, ${s.frames} frames decoded)`);
        }
      }
      const s = samples.at(-1);
      if (s && s.t - lastLog >= 2000) {
        lastLog = s.t;
        log(`viewer +${secs(s.t - t0)}: ${size(s)}, ${s.frames} frames, ${v.kbps(2000)} kbit/s of video, `
          + `${s.lost} lost, ${s.freezes} freezes (Chromium's count), ${s.keyframes} keyframes, ${s.state}`);
      }
      return s ?? { frames: 0, w: 0, h: 0, vw: 0 };
    },
    /** Received video bitrate over the last `ms`. */
    kbps(ms) {
      const s = samples.at(-1);
      if (!s) return 0;
      const a = samples.findLast((x) => x.t <= s.t - ms) ?? samples[0];
      return s.t > a.t ? Math.round(((s.bytes - a.bytes) * 8) / (s.t - a.t)) : 0;
    },
    /** The layer history: "+0.4 s 160x120 (…); +3.1 s limit on; …". */
    history() {
      return events.map(([t, what]) => `+${secs(t - t0)} ${what}`).join('; ');
    },
    /** Polls until check(latest sample) holds; fails with the layer history after ms. */
    async until(what, check, ms) {
      const end = Date.now() + ms;
      for (;;) {
        const s = await v.poll();
        if (check(s)) return s;
        if (Date.now() > end) {
          assert.fail(`the viewer did not ${what} within ${ms / 1000} s; now ${size(s)}, ${s.frames} frames, `
            + `${v.kbps(2000)} kbit/s of video; layer history: ${v.history() || 'no video at all'}${await sending()}`);
        }
        await sleep(250);
      }
    },
    /** Freezes (no new decoded frame for over FREEZE_MS) in the samples since `from`. */
    freezes(from) {
      const list = [];
      let lastNew = null;
      let frames = null;
      for (const s of samples.filter((x) => x.t >= from)) {
        if (frames === null || s.frames > frames) {
          if (lastNew !== null && s.t - lastNew > FREEZE_MS) list.push([lastNew, s.t - lastNew]);
          lastNew = s.t;
          frames = s.frames;
        }
      }
      const end = samples.at(-1)?.t;
      if (lastNew !== null && end - lastNew > FREEZE_MS) list.push([lastNew, end - lastNew]);
      return list.map(([t, ms]) => `${secs(ms)} at +${secs(t - t0)}`);
    },
    /** Polls until the viewer has decoded at least `frames` frames over the
     *  last `ms` at one size, or until `max` ms have passed (it does not
     *  fail: what follows checks the decoding). Returns whether it settled. */
    async settles(ms, frames, max) {
      const end = Date.now() + max;
      for (;;) {
        const s = await v.poll();
        const recent = samples.filter((x) => x.t >= s.t - ms);
        const first = recent[0];
        const steady = first && s.t - first.t >= ms - 250 && recent.every((x) => x.w === s.w && x.h === s.h);
        if (steady && s.frames - first.frames >= frames) return true;
        if (Date.now() > end) return false;
        await sleep(250);
      }
    },
    /** Watches for ms: frames must keep being decoded at the current size. */
    async keepsDecoding(ms, minFrames) {
      const a = await v.poll();
      await sleep(ms);
      const b = await v.poll();
      if (b.frames - a.frames < minFrames) {
        assert.fail(`the viewer decoded ${b.frames - a.frames} frames in ${ms / 1000} s (at least ${minFrames} `
          + `expected); now ${size(b)}, ${v.kbps(ms)} kbit/s of video; layer history: ${v.history()}${await sending()}`);
      }
      return b;
    },
  };
  return v;
}

const atTop = (s) => s.w === TOP[0] && s.h === TOP[1] && s.vw === TOP[0] && s.vh === TOP[1];

// --- tc on the namespace's loopback

let shaping = false;

function tc(...args) {
  const r = spawnSync('tc', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`tc ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`tc ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Refuses to shape `lo` outside a named network namespace (it would slow this host's loopback). */
function assertOwnNamespace() {
  const r = spawnSync('ip', ['netns', 'identify', String(process.pid)], { encoding: 'utf8' });
  const ns = r.status === 0 ? r.stdout.trim() : '';
  assert.ok(ns, 'this test shapes the loopback device with tc: run it inside a network namespace '
    + `(scripts/e2e/run-browser simulcast does); ip netns identify: ${r.error?.message ?? (r.stderr.trim() || 'none')}`);
  return ns;
}

/** Limits UDP to `port` on lo (what the server sends the viewer) to `rate`. */
function limit(port, rate) {
  assertOwnNamespace();
  shaping = true;
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10');
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit', 'quantum', '200000');
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:30', 'htb', 'rate', rate, 'ceil', rate, 'burst', '16kb');
  tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:30', 'handle', '30:', 'tbf', 'rate', rate, 'burst', '16kb',
    'latency', '200ms');
  tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
    'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'dport', String(port), '0xffff', 'flowid', '1:30');
}

/** What the viewer's limited class passed and dropped so far. */
function shaped() {
  const out = tc('-s', 'qdisc', 'show', 'dev', 'lo');
  const m = /qdisc tbf 30:[^\n]*\n\s*Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/.exec(out);
  return m ? { bytes: +m[1], packets: +m[2], dropped: +m[3] } : { bytes: 0, packets: 0, dropped: 0, out };
}

function unlimit() {
  spawnSync('tc', ['qdisc', 'del', 'dev', 'lo', 'root'], { encoding: 'utf8' });
  shaping = false;
  const left = tc('qdisc', 'show', 'dev', 'lo');
  assert.ok(!/htb|tbf/.test(left), `the limit on lo did not go: ${left}`);
}

/** A test that ends its sessions and closes its pages and, when it fails, saves what they show. */
function scenario(name, fn) {
  test(name, TEST, async () => {
    const t0 = Date.now();
    try {
      const health = await fetch(`${SERVER}/healthz`, { signal: AbortSignal.timeout(3000) }).catch((e) => e);
      assert.equal(health.status, 200, `corecast does not answer ${SERVER}/healthz (${health.message ?? health.status}): `
        + 'did it exit? See target/e2e/corecast-browser.log');
      await fn();
      log(`${name}: ${secs(Date.now() - t0)}`);
    } catch (e) {
      for (const [i, page] of pages.entries()) {
        const file = join(OUT, `simulcast-fail-${name.replace(/\W+/g, '-').slice(0, 40)}-${i}-${page.label}.png`);
        await page.screenshot({ path: file }).catch(() => {});
        log(`${page.label} page: screenshot ${file}`);
      }
      throw e;
    } finally {
      if (shaping) unlimit();
      for (const page of pages.splice(0)) {
        await page.evaluate(() => window.hangup?.()).catch(() => {});
        await page.close({ runBeforeUnload: false }).catch(() => {});
      }
    }
  });
}

/** Publisher (simulcast, or `svc`) and viewer of a new stream; returns when
 *  the viewer decodes the top layer. */
async function toTop(prefix, svc) {
  TOP = svc?.size ?? LAYERS.at(-1).size;
  const stream = streamName(prefix);
  const pub = await publisher(stream, svc);
  const view = await viewer(stream, pub);
  await pub.sendsAllLayers();
  const s = await view.until(`reach the top layer ${TOP.join('x')}`, atTop, TO_TOP_MS);
  log(`viewer on the top layer ${secs(s.t - view.t0)} after its WHEP POST (${s.codec})`);
  assert.equal(s.codec, svc ? svc.codec : 'video/VP8', 'the codec the viewer decodes');
  await view.keepsDecoding(2000, TOP_FRAMES(svc));
  if (!atTop(await view.poll())) {
    // On a loaded 2-core host both browsers encode and decode at once, and the
    // viewer's estimate can dip for a moment (seen once in CI: 960x540, then
    // 480x270 two seconds later, no limit set). What the scenarios need is a
    // viewer back on the top layer before they go on.
    log(`the viewer left the top layer without a limit; layer history: ${view.history()}`);
    await view.until(`return to the top layer ${TOP.join('x')}`, atTop, TO_TOP_MS);
  }
  return { pub, view };
}

// ------------------------------------------------------------------ tests

for (const [kind, svc] of [['simulcast', null], ['VP9 SVC', SVC], ['AV1 SVC', SVC_AV1]]) {
  const prefix = svc ? `svc-${svc.codec.slice(6).toLowerCase()}` : 'simulcast';

  scenario(`a ${kind} publisher's viewer on an unconstrained link ends on the top layer`, async () => {
    const { view } = await toTop(prefix, svc);
    log(`layer history: ${view.history()}`);
  });

  scenario(`a viewer of a ${kind} publisher whose link is limited to ~300 kbit/s gets a lower layer, keeps decoding, `
    + 'and returns to the top layer when the limit goes', async () => {
    assertOwnNamespace();
    tc('qdisc', 'show', 'dev', 'lo'); // tc is there and works here, before anything starts
    const { view } = await toTop(`${prefix}-limit`, svc);

    const ports = await view.page.evaluate(() => window.ports());
    assert.ok(ports.local > 0 && ports.protocol === 'udp', `no UDP port of the viewer in its stats: ${JSON.stringify(ports)}`);
    if (svc) await view.keepsDecoding(3000, 15);
    const full = view.kbps(3000);
    const rate = svc ? `${Math.max(60, Math.round(full * SVC_LIMIT_SHARE))}kbit` : LIMIT;
    limit(ports.local, rate);
    const on = Date.now();
    view.mark(`limit ${rate} on UDP port ${ports.local} (server port ${ports.remote}; ${full} kbit/s of video before)`);
    const lower = await view.until(`go below ${TOP[0]} wide on a ${rate} link`, (s) => s.w > 0 && s.w < TOP[0], TO_LOWER_MS);
    log(`viewer on ${lower.w}x${lower.h} ${secs(lower.t - on)} after the limit; tc: ${JSON.stringify(shaped())}`);
    // SVC: the estimate falls in steps, and the first step down may land on
    // a layer the link does not carry yet (CI once saw 480x270, frozen, for
    // 5 s before 240x136): the hold is watched once the viewer decodes at
    // one size. A step up within the limited link waits for a keyframe (a
    // freeze of a second or more); fewer frames are decoded meanwhile.
    // Freezes count from here: the steps down before the viewer settles are
    // the adaptation SETTLE_MS bounds (CI once saw 1.0 s and 5.2 s right
    // after the limit on AV1, then 2 more while limited; and a simulcast
    // viewer that went on to 160x120 within the watched 5 s, decoding 23
    // frames there).
    const settled = await view.settles(2000, 10, SETTLE_MS);
    view.mark(settled ? 'decoding at one size' : `not settled within ${SETTLE_MS / 1000} s`);
    const from = Date.now();
    const adapting = view.freezes(on);
    if (adapting.length) log(`freezes while the viewer adapted to the limit: ${adapting.join(', ')}`);
    // SVC on a link limited to 30% of its rate: the estimate may probe a
    // spatial layer up, whose keyframe costs a freeze (seen: 11 frames in
    // 5 s on a loaded machine), and a packet tc drops from the base layer
    // costs a keyframe of all three layers through the limited link (seen
    // on AV1 in CI: 3 frames in 5 s right after the viewer settled). So an
    // SVC viewer is watched twice as long: 10 frames in 10 s still say the
    // picture moves; the freezes are counted below.
    // Simulcast: Chromium's lowest layer (160x120) runs at a reduced frame
    // rate on a loaded 2-core CI host (seen: 21 and 23 frames in 5 s, no
    // freeze, with str0m's own 3 s NACK buffer), so it is watched as long
    // as SVC and must show 20 frames in 10 s.
    const hold = 2 * HOLD_MS;
    const held = await view.keepsDecoding(hold, svc ? 10 : 20);
    const tcSeen = shaped();
    assert.ok(tcSeen.packets > 0, `the tc filter on port ${ports.local} matched nothing: ${JSON.stringify(tcSeen)}`);
    assert.ok(held.w < TOP[0], `the viewer went back to ${held.w}x${held.h} while its link was limited; `
      + `layer history: ${view.history()}`);
    view.mark(`${view.kbps(hold)} kbit/s received over the last ${hold / 1000} s; tc passed `
      + `${tcSeen.packets} packets (${Math.round(tcSeen.bytes / 1000)} kB), dropped ${tcSeen.dropped}`);

    unlimit();
    const off = Date.now();
    view.mark('limit off');
    const back = await view.until(`return to the top layer ${TOP.join('x')} after the limit went`, atTop, BACK_MS);
    log(`viewer back on the top layer ${secs(back.t - off)} after the limit went`);
    await view.keepsDecoding(2000, TOP_FRAMES(svc));
    const freezes = view.freezes(from);
    log(`freezes (over ${FREEZE_MS} ms without a new frame) since the viewer settled: `
      + `${freezes.join(', ') || 'none'}`);
    log(`layer history: ${view.history()}`);
    assert.ok(freezes.length <= MAX_FREEZES, `${freezes.length} freezes while limited and after (at most `
      + `${MAX_FREEZES}): ${freezes.join(', ')}; layer history: ${view.history()}`);
  });
}
