// Shared code of the corecast demo pages: WHIP/WHEP signalling, getStats
// arithmetic and small DOM helpers. A plain ES module, no build step.

export const $ = (id) => document.getElementById(id);

/** The page's query: ?stream=NAME&token=T (plus any other key via get). */
export function params() {
  const q = new URLSearchParams(location.search);
  return { stream: q.get('stream') || '', token: q.get('token') || '', get: (k) => q.get(k) };
}

/** A shareable address of `page` for a stream; keeps the token. */
export function pageLink(page, stream, token) {
  const q = new URLSearchParams();
  if (stream) q.set('stream', stream);
  if (token) q.set('token', token);
  const s = q.toString();
  return s ? `${page}?${s}` : page;
}

export function checkStreamName(name) {
  if (!/^[A-Za-z0-9._~-]{1,128}$/.test(name)) {
    throw new Error('A stream name is 1 to 128 letters, digits or - _ . ~ (no spaces).');
  }
}

/** Shows a message in an element, or hides the element when text is empty. */
export function say(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

const authHeaders = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

// What a refusal means, in words; the server's own text follows it.
const REASONS = {
  400: 'The server could not use the request',
  401: 'The server wants a token, or another one: add &token=... to this page\'s address',
  404: 'No such session',
  406: 'No codec in common with the stream',
  413: 'The offer is too large',
  415: 'Wrong content type',
  503: 'The server is full right now',
};

/** Waits until ICE gathering is complete, or `ms` at most: the offer then
 *  carries the candidates found so far (the server does not take trickle). */
function iceGathered(pc, ms = 2000) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => pc.iceGatheringState === 'complete' && done();
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** WHIP or WHEP: creates the offer, POSTs it to `url`, applies the answer.
 *  Returns the session's address (for DELETE). Throws an Error in words
 *  (with .status when the server refused). */
export async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  let res;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...authHeaders(token) },
      body: pc.localDescription.sdp,
    });
  } catch (e) {
    throw new Error(`Cannot reach the server (${e.message}).`);
  }
  const body = await res.text();
  if (res.status !== 201) {
    const why = REASONS[res.status] || `The server answered HTTP ${res.status}`;
    const said = body.trim() ? ` The server said: ${body.trim()}` : '';
    throw Object.assign(new Error(`${why}.${said}`), { status: res.status });
  }
  const where = res.headers.get('Location');
  if (!where) throw new Error('The server answered without a Location header.');
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  return new URL(where, res.url).href;
}

/** Ends a session. keepalive lets the request finish while the page unloads. */
export function hangup(session, token) {
  if (!session) return Promise.resolve();
  return fetch(session, { method: 'DELETE', headers: authHeaders(token), keepalive: true })
    .catch(() => {});
}

/** The streams this node knows: [{stream, live, viewers, codecs}]. */
export async function listStreams() {
  const res = await fetch('/api/streams', { cache: 'no-store' });
  if (!res.ok) throw new Error(`/api/streams answered HTTP ${res.status}`);
  return res.json();
}

/** Per-second rates from cumulative counters (bytes, frames) of getStats. */
export class Rate {
  #last = null;
  /** Returns units per second since the previous call, or null the first time. */
  update(value, nowMs) {
    const prev = this.#last;
    this.#last = { value, nowMs };
    if (!prev || nowMs <= prev.nowMs || value < prev.value) return null;
    return ((value - prev.value) * 1000) / (nowMs - prev.nowMs);
  }
}

export function bitrate(bytesPerSecond) {
  if (bytesPerSecond == null) return '–';
  const bits = bytesPerSecond * 8;
  return bits >= 1e6 ? `${(bits / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bits / 1e3)} kbit/s`;
}

/** "VP8" for an RTP stats entry whose codec is video/VP8. */
export function codecName(report, rtp) {
  const c = rtp && rtp.codecId && report.get(rtp.codecId);
  return c ? c.mimeType.split('/')[1] : '';
}

/** The codecs of the RTP entries, e.g. "VP8 + opus". */
export function codecs(report, entries) {
  return entries.map((e) => codecName(report, e)).filter(Boolean).join(' + ') || '–';
}
