// corecast browser SDK: join a conference room over one WebRTC connection.
// Speaks docs/sdk-protocol.md (version 1). An ES module with no dependencies
// and no build step, served at /sdk/corecast.js; its types are in
// /sdk/corecast.d.ts. Reference: docs/sdk.md.

/**
 * @typedef {'audio' | 'video'} Kind
 *
 * @typedef {object} TrackInfo  A published track, as the protocol describes it.
 * @property {string} name
 * @property {Kind} kind
 * @property {string | null} codec  e.g. "opus/48000", "VP8/90000"; null until media flows
 * @property {boolean} muted
 *
 * @typedef {object} PeerInfo  Another user in the room.
 * @property {string} peer  the peer id
 * @property {any} metadata  what the peer gave at connect or with update()
 * @property {TrackInfo[]} tracks
 *
 * @typedef {object} PublishTrack  A local track to publish; declared at connect.
 * @property {MediaStreamTrack} track
 * @property {string} [name]  1–64 of A-Z a-z 0-9 - _ . ; defaults to the track's kind
 *
 * @typedef {object} LocalTrack  A track this connection publishes.
 * @property {string} name
 * @property {Kind} kind
 * @property {MediaStreamTrack} track
 * @property {string} mid
 * @property {RTCRtpSender} sender
 * @property {boolean} published  false after unpublish()
 * @property {boolean} muted
 *
 * @typedef {'free' | 'waiting' | 'live' | 'paused'} SlotState
 *
 * @typedef {object} Slot  A receive transceiver: plays one subscription at a time.
 * @property {string} mid
 * @property {Kind} kind
 * @property {RTCRtpReceiver} receiver
 * @property {MediaStreamTrack} mediaTrack  the same track for the slot's whole life
 * @property {string | null} peer  whose track it plays, null when free
 * @property {string | null} track  the name of that track
 * @property {SlotState} state
 *
 * @typedef {object} Subscribed  What subscribe() resolves with.
 * @property {string} mid
 * @property {Kind} kind
 * @property {MediaStreamTrack} mediaTrack
 *
 * @typedef {object} PeerJoinedEvent
 * @property {'peer_joined'} event
 * @property {string} peer
 * @property {any} metadata
 * @property {TrackInfo[]} tracks
 *
 * @typedef {object} PeerLeftEvent
 * @property {'peer_left'} event
 * @property {string} peer
 * @property {'left' | 'closed' | 'replaced' | 'timeout'} reason
 *
 * @typedef {object} PeerUpdatedEvent
 * @property {'peer_updated'} event
 * @property {string} peer
 * @property {any} metadata
 *
 * @typedef {object} TrackChangeEvent  track_published and track_updated.
 * @property {'track_published' | 'track_updated'} event
 * @property {string} peer
 * @property {string} name
 * @property {Kind} kind
 * @property {string | null} codec
 * @property {boolean} muted
 *
 * @typedef {object} TrackUnpublishedEvent
 * @property {'track_unpublished'} event
 * @property {string} peer
 * @property {string} track
 *
 * @typedef {object} SubscriptionEvent
 * @property {'subscription'} event
 * @property {string} mid
 * @property {string} peer
 * @property {string} track
 * @property {'waiting' | 'live' | 'paused' | 'ended'} state
 * @property {string} [reason]  when ended: unsubscribed, unpublished, peer_left, replaced
 *
 * @typedef {object} ClosedEvent
 * @property {'closed'} event
 * @property {string} reason  the server's (replaced, left) or the SDK's (disconnected)
 *
 * @typedef {object} RoomErrorEvent  The server's error event, or a problem the SDK met on its own
 *   (auto-subscribe: no_free_slot; bad_message).
 * @property {'error'} event
 * @property {string} code
 * @property {string} message
 *
 * @typedef {object} RemoteTrackEvent  The SDK's own event: a subscription went live.
 * @property {'track'} event
 * @property {string} peer
 * @property {string} track  the track's name
 * @property {Kind} kind
 * @property {string} mid
 * @property {MediaStreamTrack} mediaTrack  attach it to an <audio> or <video>
 *
 * @typedef {object} ActiveSpeakersEvent  The room's loudest speakers changed.
 * @property {'active_speakers'} event
 * @property {{peer: string, track: string, level: number | null}[]} speakers  loudest first
 *
 * @typedef {object} SipCallEvent  A call placed with POST /api/sip/calls changed state.
 * @property {'sip_call'} event
 * @property {string} id  the call's id (a connection id)
 * @property {string} peer  its peer name in the room once answered
 * @property {'calling' | 'ringing' | 'answered' | 'ended'} state
 * @property {string} [reason]  when ended: sip_refused 486, sip_cancelled, sip_bye, ...
 *
 * @typedef {object} DtmfEvent  A phone in the room pressed a key (RFC 4733).
 * @property {'dtmf'} event
 * @property {string} peer
 * @property {string} digit  0-9, *, #, A-D
 *
 * @typedef {object} RoomEventMap
 * @property {PeerJoinedEvent} peer_joined
 * @property {PeerLeftEvent} peer_left
 * @property {PeerUpdatedEvent} peer_updated
 * @property {TrackChangeEvent} track_published
 * @property {TrackChangeEvent} track_updated
 * @property {TrackUnpublishedEvent} track_unpublished
 * @property {SubscriptionEvent} subscription
 * @property {ClosedEvent} closed
 * @property {RoomErrorEvent} error
 * @property {RemoteTrackEvent} track
 * @property {ActiveSpeakersEvent} active_speakers
 * @property {SipCallEvent} sip_call
 * @property {DtmfEvent} dtmf
 *
 * @typedef {{[K in keyof RoomEventMap]?: (ev: RoomEventMap[K]) => void}} Handlers
 *
 * @typedef {object} ConnectOptions
 * @property {string} room  1–128 of A-Z a-z 0-9 - _ . ~
 * @property {string} peer  your id in the room, same characters
 * @property {string} [token]  a room token or the server's static token
 * @property {any} [metadata]  shown to the others; at most 4096 bytes as JSON
 * @property {PublishTrack[]} [publish]  the tracks to publish (no renegotiation later)
 * @property {{audio?: number, video?: number}} [slots]  receive slots, 0–32 each; default 8 + 8
 * @property {boolean} [autoSubscribe]  subscribe to every other peer's tracks; default true
 * @property {Handlers} [on]  listeners attached before joining, so no event is missed
 */

export const PROTOCOL = 1;
const ROOM_OR_PEER = /^[A-Za-z0-9._~-]{1,128}$/;
const TRACK_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const MAX_MESSAGE = 16384;
const MAX_METADATA = 4096;
const MAX_SLOTS = 32;
const GATHER_MS = 2000;
const OPEN_MS = 15000;
const REQUEST_MS = 10000;
const LEAVE_MS = 1500;

// What an HTTP refusal of the connect means, in words; the server's text follows.
/** @type {Record<number, string>} */
const REASONS = {
  400: 'The server could not use the connect request',
  401: 'The server wants a token, or another one',
  403: 'The token does not allow this room, peer id or transport',
  404: 'This server has no /webrtc/connect (is it a corecast with the SDK transport?)',
  406: 'No codec in common with the server',
  413: 'The offer is too large (fewer receive slots make it smaller)',
  415: 'Wrong content type',
  503: 'The server is full right now',
};

// Lets connect() end a Room that never joined; not part of the API.
const ABORT = Symbol('abort');

/** @param {string} s */
const utf8Length = (s) => new TextEncoder().encode(s).length;
/**
 * @param {string} peer
 * @param {string} track
 */
const keyOf = (peer, track) => `${peer}\n${track}`;

/**
 * An Error with a protocol error code (`no_free_slot`, ...) or one of the
 * SDK's (`timeout`, `closed`, `too_large`, `unreachable`).
 * @param {string} code
 * @param {string} message
 * @returns {Error & {code: string}}
 */
function codeError(code, message) {
  return Object.assign(new Error(message), { code });
}

/**
 * Resolves when ICE gathering is complete, or after `ms`: the server takes no
 * trickled candidates on connect, so the offer must carry them.
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<void>}
 */
function iceGathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** @param {string | undefined} token */
const authHeaders = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

/**
 * POSTs the connect request; returns the server's {conn, sdp}.
 * @param {string} base
 * @param {object} body
 * @param {string | undefined} token
 * @returns {Promise<{conn: string, sdp: string, protocol?: number}>}
 */
async function postConnect(base, body, token) {
  let res;
  try {
    res = await fetch(`${base}/webrtc/connect`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders(token) },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`Cannot reach the server at ${base} (${e instanceof Error ? e.message : e}).`);
  }
  const text = await res.text();
  if (res.status !== 201) {
    const why = REASONS[res.status] || `The server answered HTTP ${res.status}`;
    const t = text.trim();
    const said = t ? ` The server said: ${t}${/[.!?]$/.test(t) ? '' : '.'}` : '';
    const retry = res.status === 503 && res.headers.get('Retry-After');
    const later = retry ? ` Try again in ${retry} s.` : '';
    throw Object.assign(new Error(`${why}.${said}${later}`), { status: res.status });
  }
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = null;
  }
  if (!answer || typeof answer.conn !== 'string' || typeof answer.sdp !== 'string') {
    throw new Error('The server answered the connect without a connection id and SDP answer.');
  }
  return answer;
}

/**
 * Asks for the dependency descriptor header extension on a receiving video
 * transceiver (before the offer is made). It names the layer and the
 * references of each frame; AV1 SVC does not decode without it, and
 * Chromium offers it on a receiver only when asked. A no-op where the
 * browser has no `setHeaderExtensionsToNegotiate`.
 *
 * @param {RTCRtpTransceiver} transceiver
 */
export function receiveDependencyDescriptor(transceiver) {
  if (!transceiver.setHeaderExtensionsToNegotiate) return;
  const wanted = transceiver.getHeaderExtensionsToNegotiate().map((e) => (
    /dependency-descriptor/.test(e.uri) && e.direction === 'stopped' ? { ...e, direction: 'recvonly' } : e));
  try {
    transceiver.setHeaderExtensionsToNegotiate(wanted);
  } catch (e) {
    console.warn('corecast: cannot negotiate the dependency descriptor:', e);
  }
}

/**
 * Joins a room: one RTCPeerConnection with a data channel, the tracks to
 * publish and the receive slots, offered in one HTTP request; then `join` on
 * the data channel. Resolves once joined.
 *
 * Events are only dispatched after the returned promise resolves, so
 * listeners attached right after `await connect(...)` miss nothing; `on`
 * attaches them earlier still.
 *
 * @param {string} url  the server's base URL, e.g. location.origin
 * @param {ConnectOptions} options
 * @returns {Promise<Room>}
 */
export async function connect(url, options) {
  const { room, peer, token, metadata, publish = [], slots = {}, autoSubscribe = true, on = {} } = options;
  if (!ROOM_OR_PEER.test(room ?? '')) {
    throw new Error('A room name is 1 to 128 letters, digits or - _ . ~ (no spaces).');
  }
  if (!ROOM_OR_PEER.test(peer ?? '')) {
    throw new Error('A peer id is 1 to 128 letters, digits or - _ . ~ (no spaces).');
  }
  checkMetadata(metadata);
  const names = new Set();
  for (const p of publish) {
    const name = p.name ?? p.track?.kind;
    if (!p.track || !TRACK_NAME.test(name ?? '')) {
      throw new Error(`Cannot publish "${name}": a track name is 1 to 64 letters, digits or - _ . and needs a MediaStreamTrack.`);
    }
    if (names.has(name)) throw new Error(`Two published tracks are named "${name}".`);
    names.add(name);
  }
  const counts = { audio: slots.audio ?? 8, video: slots.video ?? 8 };
  for (const [kind, n] of Object.entries(counts)) {
    if (!Number.isInteger(n) || n < 0 || n > MAX_SLOTS) {
      throw new Error(`slots.${kind} must be a whole number from 0 to ${MAX_SLOTS}.`);
    }
  }

  const base = String(url).replace(/\/+$/, '');
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  let conn = null;
  /** @type {Room | null} */
  let r = null;
  try {
    const dc = pc.createDataChannel('corecast');
    const sending = publish.map((p) => ({
      name: p.name ?? p.track.kind,
      track: p.track,
      transceiver: pc.addTransceiver(p.track, { direction: 'sendonly' }),
    }));
    for (const kind of /** @type {Kind[]} */ (['audio', 'video'])) {
      for (let i = 0; i < counts[kind]; i += 1) {
        const t = pc.addTransceiver(kind, { direction: 'recvonly' });
        if (kind === 'video') receiveDependencyDescriptor(t);
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, GATHER_MS);
    /** @type {Record<string, any>} */
    const body = {
      room,
      peer,
      sdp: pc.localDescription?.sdp,
      publish: sending.map((s) => ({ mid: s.transceiver.mid, name: s.name })),
    };
    if (token) body.token = token;
    if (metadata !== undefined) body.metadata = metadata;
    const answer = await postConnect(base, body, token);
    conn = answer.conn;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const local = sending.map((s) => /** @type {LocalTrack} */ ({
      name: s.name,
      kind: /** @type {Kind} */ (s.track.kind),
      track: s.track,
      mid: /** @type {string} */ (s.transceiver.mid),
      sender: s.transceiver.sender,
      published: true,
      muted: false,
    }));
    r = new Room({ pc, dc, base, token, conn, room, peer, metadata, local, autoSubscribe });
    for (const [name, fn] of Object.entries(on)) {
      if (fn) r.on(/** @type {keyof RoomEventMap} */ (name), /** @type {any} */ (fn));
    }
    await r.request('join', { protocol: PROTOCOL });
    // A track handed over disabled starts muted for the others too. Not
    // awaited: events must not be dispatched before connect() resolves.
    for (const t of r.local.values()) {
      if (!t.track.enabled) r.mute(t.name).catch(() => {});
    }
    return r;
  } catch (e) {
    // The server may hold a connection we will never use: end it now.
    if (r) r[ABORT]();
    else if (conn) fetch(`${base}/webrtc/${encodeURIComponent(conn)}`, { method: 'DELETE', headers: authHeaders(token) }).catch(() => {});
    pc.close();
    throw e;
  }
}

/** @param {any} metadata */
function checkMetadata(metadata) {
  if (metadata === undefined) return;
  const text = JSON.stringify(metadata);
  if (text === undefined) throw new Error('The metadata must be a JSON value.');
  if (utf8Length(text) > MAX_METADATA) {
    throw codeError('bad_request', `The metadata is ${utf8Length(text)} bytes as JSON; at most ${MAX_METADATA} are allowed.`);
  }
}

/**
 * @typedef {object} Pending
 * @property {string} name
 * @property {(answer: any) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */

/**
 * A joined room. Made by connect(), never directly. Its fields are kept up
 * to date by the SDK; read them, do not change them.
 */
export class Room {
  /**
   * The room's name.
   * @type {string}
   */
  name;
  /**
   * Your peer id.
   * @type {string}
   */
  peer;
  /**
   * The connection id (16 hex digits).
   * @type {string}
   */
  conn;
  /**
   * The underlying connection, for getStats() and the like.
   * @type {RTCPeerConnection}
   */
  pc;
  /**
   * Every other peer in the room, by id, in the order they became known.
   * @type {Map<string, PeerInfo>}
   */
  peers = new Map();
  /**
   * The receive slots by mid.
   * @type {Map<string, Slot>}
   */
  slots = new Map();
  /**
   * Your published tracks by name.
   * @type {Map<string, LocalTrack>}
   */
  local = new Map();
  /**
   * Your metadata as the others see it.
   * @type {any}
   */
  metadata;
  /**
   * Whether to subscribe to every other peer's tracks by itself.
   * @type {boolean}
   */
  autoSubscribe;
  /** True from the join answer until the room closes. */
  joined = false;
  /** True once the connection ended. */
  closed = false;

  /** @type {RTCDataChannel} */ #dc;
  /** @type {string} */ #base;
  /** @type {string | undefined} */ #token;
  /** @type {Map<string, Set<Function>>} */ #listeners = new Map();
  /** @type {Map<number, Pending>} */ #pending = new Map();
  #lastId = 0;
  /** @type {Promise<void>} */ #opened;
  #leaving = false;
  #hungUp = false;
  // Auto-subscribe bookkeeping, keyed by keyOf(peer, track): requests in
  // flight (with their kind), tracks the app unsubscribed from (left alone
  // until it subscribes again), tracks already reported as lacking a slot.
  /** @type {Map<string, Kind>} */ #subscribing = new Map();
  /** @type {Set<string>} */ #declined = new Set();
  #followingSpeakers = false;
  /** @type {Set<string>} */ #starved = new Set();
  // Slots (mids) whose current subscription had its `track` event.
  /** @type {Set<string>} */ #announced = new Set();
  #onPageHide = () => this.#hangUpNow();

  /**
   * @param {{pc: RTCPeerConnection, dc: RTCDataChannel, base: string, token?: string, conn: string,
   *          room: string, peer: string, metadata: any, local: LocalTrack[], autoSubscribe: boolean}} init
   */
  constructor(init) {
    this.pc = init.pc;
    this.#dc = init.dc;
    this.#base = init.base;
    this.#token = init.token;
    this.conn = init.conn;
    this.name = init.room;
    this.peer = init.peer;
    this.metadata = init.metadata;
    this.autoSubscribe = init.autoSubscribe;
    for (const t of init.local) this.local.set(t.name, t);

    const unreachable = () => codeError('unreachable', 'The media connection to the server did not come up: '
      + 'this browser cannot reach the server\'s UDP media port (check its --ice-ip and the firewall).');
    this.#opened = new Promise((resolve, reject) => {
      if (this.#dc.readyState === 'open') return resolve();
      const timer = setTimeout(() => reject(unreachable()), OPEN_MS);
      this.#dc.addEventListener('open', () => { clearTimeout(timer); resolve(); });
      this.pc.addEventListener('connectionstatechange', () => {
        if (this.pc.connectionState === 'failed') { clearTimeout(timer); reject(unreachable()); }
      });
    });
    this.#opened.catch(() => {}); // a request waiting on it reports it

    this.#dc.addEventListener('message', (e) => this.#onMessage(e.data));
    this.#dc.addEventListener('close', () => this.#close('disconnected'));
    this.pc.addEventListener('connectionstatechange', () => {
      if (this.pc.connectionState === 'failed' && this.joined) this.#close('disconnected');
    });
    globalThis.addEventListener?.('pagehide', this.#onPageHide);
  }

  /**
   * Calls `fn` with each event `name`. Returns a function that removes it.
   * @template {keyof RoomEventMap} K
   * @param {K} name
   * @param {(ev: RoomEventMap[K]) => void} fn
   * @returns {() => void}
   */
  on(name, fn) {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  /**
   * Removes a listener added with on().
   * @template {keyof RoomEventMap} K
   * @param {K} name
   * @param {(ev: RoomEventMap[K]) => void} fn
   */
  off(name, fn) {
    this.#listeners.get(name)?.delete(fn);
  }

  /**
   * @param {string} name
   * @param {object} ev
   */
  #emit(name, ev) {
    for (const fn of [...(this.#listeners.get(name) ?? [])]) {
      // One listener's mistake must not stop the room's bookkeeping.
      try {
        fn(ev);
      } catch (e) {
        console.error(`corecast: a "${name}" listener threw`, e);
      }
    }
  }

  /**
   * Sends a request and resolves with the answer's fields (`id` and `ok`
   * included). Rejects with an Error whose `code` is the protocol's error code
   * when the server answers `ok: false`, or the SDK's: `timeout` (no answer in
   * 10 s), `closed`, `too_large`, `unreachable`.
   * @param {string} name
   * @param {Record<string, any>} [fields]
   * @returns {Promise<Record<string, any>>}
   */
  async request(name, fields = {}) {
    if (this.closed) throw codeError('closed', `Cannot ${name}: the connection to the room is closed.`);
    const id = (this.#lastId += 1);
    // id and request first (easier to read in logs), and not overridable by fields.
    const text = JSON.stringify(Object.assign({ id, request: name }, fields, { id, request: name }));
    const size = utf8Length(text);
    if (size > MAX_MESSAGE) {
      throw codeError('too_large', `The ${name} request is ${size} bytes; a message is at most ${MAX_MESSAGE}.`);
    }
    // Sent at once when the channel is open: leave() must get out during pagehide.
    if (this.#dc.readyState !== 'open') await this.#opened;
    if (this.closed) throw codeError('closed', `Cannot ${name}: the connection to the room is closed.`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(codeError('timeout', `The server did not answer the ${name} request within ${REQUEST_MS / 1000} s.`));
      }, REQUEST_MS);
      this.#pending.set(id, { name, resolve, reject, timer });
      try {
        this.#dc.send(text);
      } catch (e) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(codeError('closed', `Cannot send the ${name} request: ${e instanceof Error ? e.message : e}`));
      }
    });
  }

  /**
   * Announces again a track declared at connect (after unpublish()); the
   * others get track_published. It is announced at join by itself.
   * @param {string} name
   * @returns {Promise<void>}
   */
  async publish(name) {
    const t = this.#localTrack(name);
    if (t.sender.track !== t.track) await t.sender.replaceTrack(t.track);
    await this.request('publish', { track: name });
    t.published = true;
  }

  /**
   * Withdraws a track; the others' subscriptions to it end. The browser stops
   * sending it (no bandwidth used) until publish() brings it back.
   * @param {string} name
   * @returns {Promise<void>}
   */
  async unpublish(name) {
    const t = this.#localTrack(name);
    await this.request('unpublish', { track: name });
    t.published = false;
    await t.sender.replaceTrack(null);
  }

  /**
   * Mutes a published track: the local MediaStreamTrack is disabled at once
   * (silence or black), the others get track_updated with muted: true.
   * @param {string} name
   * @returns {Promise<void>}
   */
  async mute(name) {
    const t = this.#localTrack(name);
    t.track.enabled = false;
    t.muted = true;
    await this.request('mute', { track: name });
  }

  /**
   * The reverse of mute().
   * @param {string} name
   * @returns {Promise<void>}
   */
  async unmute(name) {
    const t = this.#localTrack(name);
    t.track.enabled = true;
    t.muted = false;
    await this.request('unmute', { track: name });
  }

  /**
   * Plays another peer's track in a free receive slot of its kind, or in
   * slot `mid` (replacing what it played). Resolves once the server agreed;
   * the `track` event follows when media flows.
   * @param {string} peer
   * @param {string} track
   * @param {string} [mid]
   * @returns {Promise<Subscribed>}
   */
  async subscribe(peer, track, mid) {
    this.#declined.delete(keyOf(peer, track));
    return this.#subscribe(peer, track, mid);
  }

  /**
   * @param {string} peer
   * @param {string} track
   * @param {string} [mid]
   * @returns {Promise<Subscribed>}
   */
  async #subscribe(peer, track, mid) {
    /** @type {Record<string, string>} */
    const fields = { peer, track };
    if (mid !== undefined) fields.mid = mid;
    const a = await this.request('subscribe', fields);
    const slot = this.slots.get(a.mid);
    if (!slot) throw codeError('bad_answer', `The server put ${peer}'s ${track} in slot ${a.mid}, which this connection does not have.`);
    // A subscription event may have arrived first; it knows the state better.
    if (slot.peer !== peer || slot.track !== track) {
      Object.assign(slot, { peer, track, state: 'waiting' });
      this.#announced.delete(slot.mid);
    }
    return { mid: slot.mid, kind: slot.kind, mediaTrack: slot.mediaTrack };
  }

  /**
   * Stops a slot; its subscription ends. With autoSubscribe, the track it
   * played is not subscribed again by itself.
   * @param {string} mid
   * @returns {Promise<void>}
   */
  async unsubscribe(mid) {
    const slot = this.slots.get(mid);
    if (slot?.peer && slot.track) this.#declined.add(keyOf(slot.peer, slot.track));
    await this.request('unsubscribe', { mid });
  }

  /**
   * A video slot's preference: its top simulcast layer (0 = the lowest;
   * left out: the best its link carries) and its priority (1 to 10, default
   * 1) in the share of the link.
   * @param {string} mid
   * @param {{maxLayer?: number, priority?: number}} [pref]
   * @returns {Promise<void>}
   */
  async prefer(mid, pref = {}) {
    /** @type {Record<string, any>} */
    const fields = { mid };
    if (pref.maxLayer !== undefined) fields.max_layer = pref.maxLayer;
    if (pref.priority !== undefined) fields.priority = pref.priority;
    await this.request('prefer', fields);
  }

  /**
   * Lets the server point this connection's audio slots at the loudest
   * other speakers of the room (at most its --top-audio); auto-subscribe
   * leaves audio alone meanwhile. The `active_speakers` event tells who
   * speaks.
   * @param {boolean} [on]
   * @returns {Promise<string[]>} the mids of the audio slots the server manages
   */
  async followSpeakers(on = true) {
    const a = await this.request('follow_speakers', { on });
    this.#followingSpeakers = on;
    return a.mids ?? [];
  }

  /**
   * Replaces your metadata; the others get peer_updated.
   * @param {any} metadata
   * @returns {Promise<void>}
   */
  async update(metadata) {
    checkMetadata(metadata);
    await this.request('update', { metadata });
    this.metadata = metadata;
  }

  /**
   * Leaves the room: sends leave, ends the connection with DELETE, closes
   * the RTCPeerConnection and dispatches `closed` (reason `left`). Your local
   * MediaStreamTracks keep running: stop them yourself.
   * @returns {Promise<void>}
   */
  async leave() {
    if (this.closed) return;
    this.#leaving = true;
    let left = false;
    if (this.#dc.readyState === 'open') {
      const answered = this.request('leave').then(() => { left = true; }, () => {});
      await Promise.race([answered, new Promise((r) => setTimeout(r, LEAVE_MS))]);
    }
    // An answered leave ended the connection on the server: no DELETE.
    if (!left) await this.#hangUp(false);
    this.#close('left');
  }

  // The page is going away: no time to wait for answers.
  #hangUpNow() {
    if (this.closed) return;
    this.#leaving = true;
    if (this.#dc.readyState === 'open') {
      try {
        this.#dc.send(JSON.stringify({ id: (this.#lastId += 1), request: 'leave' }));
      } catch {
        // the DELETE below ends it anyway
      }
    }
    this.#hangUp(true);
    this.#close('left');
  }

  /** @param {boolean} keepalive */
  async #hangUp(keepalive) {
    if (this.#hungUp) return;
    this.#hungUp = true;
    // After a leave the server may have ended the connection already (404): fine.
    await fetch(`${this.#base}/webrtc/${encodeURIComponent(this.conn)}`, {
      method: 'DELETE', headers: authHeaders(this.#token), keepalive,
    }).catch(() => {});
  }

  /** connect() failed after the Room was made: end it without a `closed` event. */
  [ABORT]() {
    this.#hangUp(false);
    this.#close('failed', false);
  }

  /**
   * @param {string} reason
   * @param {boolean} [tell]  dispatch `closed`
   */
  #close(reason, tell = true) {
    if (this.closed) return;
    this.closed = true;
    this.joined = false;
    globalThis.removeEventListener?.('pagehide', this.#onPageHide);
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(codeError('closed', `The connection to the room closed before the server answered ${p.name}.`));
    }
    this.#pending.clear();
    this.pc.close();
    if (tell) this.#emit('closed', { event: 'closed', reason: this.#leaving ? 'left' : reason });
  }

  /** @param {string} name */
  #localTrack(name) {
    const t = this.local.get(name);
    if (!t) {
      throw codeError('unknown_track', `No track "${name}" was declared at connect (tracks are declared there: `
        + 'the connection is not renegotiated).');
    }
    return t;
  }

  /** @param {unknown} data */
  #onMessage(data) {
    if (typeof data !== 'string') return; // the protocol has text messages only
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      msg = null;
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
      this.#emit('error', { event: 'error', code: 'bad_message', message: 'The server sent a message that is not a JSON object.' });
      return;
    }
    if (typeof msg.event === 'string') {
      this.#onEvent(msg);
      return;
    }
    const p = this.#pending.get(msg.id);
    if (!p) return; // answered after its timeout
    this.#pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) {
      if (p.name === 'join') this.#onJoined(msg);
      p.resolve(msg);
    } else {
      const code = msg.error?.code ?? 'unknown';
      const message = msg.error?.message ?? 'no reason given';
      p.reject(codeError(code, `The server refused ${p.name}: ${message} (${code}).`));
    }
  }

  /** @param {Record<string, any>} a */
  #onJoined(a) {
    this.name = a.room ?? this.name;
    this.peer = a.peer ?? this.peer;
    this.conn = a.conn ?? this.conn;
    for (const p of a.peers ?? []) this.#setPeer(p);
    const transceivers = this.pc.getTransceivers();
    // The server's list is the authority; without one, every receive transceiver is a slot.
    const slots = Array.isArray(a.slots) ? a.slots : transceivers
      .filter((t) => t.direction === 'recvonly' && t.mid !== null)
      .map((t) => ({ mid: t.mid, kind: t.receiver.track.kind }));
    for (const s of slots) {
      const t = transceivers.find((x) => x.mid === s.mid);
      if (!t) continue; // the server lists a slot the browser does not have: cannot play it
      this.slots.set(s.mid, { mid: s.mid, kind: s.kind, receiver: t.receiver, mediaTrack: t.receiver.track,
        peer: null, track: null, state: 'free' });
    }
    this.joined = true;
    // A macrotask later: connect() resolves and the app attaches its
    // listeners first; errors of these subscriptions then reach them.
    setTimeout(() => this.#fill(), 0);
  }

  /** @param {any} p */
  #setPeer(p) {
    this.peers.set(p.peer, { peer: p.peer, metadata: p.metadata ?? null, tracks: (p.tracks ?? []).map(trackInfo) });
  }

  /** @param {Record<string, any>} ev */
  #onEvent(ev) {
    const peer = ev.peer;
    const info = typeof peer === 'string' ? this.peers.get(peer) : undefined;
    // `peers` lists the others only, even if the server tells us about ourselves.
    const self = peer === this.peer && ev.event !== 'subscription' && ev.event !== 'closed';
    switch (self ? '' : ev.event) {
      case 'peer_joined':
        this.#setPeer(ev);
        break;
      case 'peer_left':
        this.peers.delete(peer);
        break;
      case 'peer_updated':
        if (info) info.metadata = ev.metadata ?? null;
        break;
      case 'track_published':
      case 'track_updated': {
        const p = info ?? { peer, metadata: null, tracks: [] };
        if (!info) this.peers.set(peer, p);
        const i = p.tracks.findIndex((t) => t.name === ev.name);
        const t = trackInfo(ev);
        if (i < 0) p.tracks.push(t);
        else p.tracks[i] = t;
        break;
      }
      case 'track_unpublished':
        if (info) info.tracks = info.tracks.filter((t) => t.name !== ev.track);
        break;
      case 'subscription':
        this.#onSubscription(/** @type {SubscriptionEvent} */ (ev));
        return;
      case 'closed':
        this.#close(ev.reason ?? 'closed');
        return;
      default:
        break;
    }
    this.#emit(ev.event, ev);
    if (ev.event === 'peer_joined' || ev.event === 'track_published') this.#fill();
  }

  /** @param {SubscriptionEvent} ev */
  #onSubscription(ev) {
    const slot = this.slots.get(ev.mid);
    let announce = false;
    if (slot) {
      const same = slot.peer === ev.peer && slot.track === ev.track;
      if (!same && ev.state !== 'ended') this.#announced.delete(slot.mid);
      if (ev.state === 'ended') {
        // An old subscription's end may come after the slot's next one began.
        if (same) {
          Object.assign(slot, { peer: null, track: null, state: 'free' });
          this.#announced.delete(slot.mid);
        }
      } else {
        Object.assign(slot, { peer: ev.peer, track: ev.track, state: ev.state });
        announce = ev.state === 'live' && !this.#announced.has(slot.mid);
        if (announce) this.#announced.add(slot.mid);
      }
    }
    this.#emit('subscription', ev);
    if (slot && announce) {
      this.#emit('track', { event: 'track', peer: ev.peer, track: ev.track, kind: slot.kind, mid: slot.mid,
        mediaTrack: slot.mediaTrack });
    }
    if (ev.state === 'ended') this.#fill();
  }

  // Auto-subscribe: every other peer's tracks that no slot plays yet, as long
  // as free slots of their kind are left.
  #fill() {
    if (!this.autoSubscribe || !this.joined) return;
    const free = { audio: 0, video: 0 };
    const total = { audio: 0, video: 0 };
    for (const s of this.slots.values()) {
      total[s.kind] += 1;
      if (!s.peer) free[s.kind] += 1;
    }
    for (const kind of this.#subscribing.values()) free[kind] -= 1;
    for (const p of this.peers.values()) {
      if (p.peer === this.peer) continue;
      for (const t of p.tracks) {
        const key = keyOf(p.peer, t.name);
        if (!(t.kind in free) || this.#subscribing.has(key) || this.#declined.has(key)) continue;
        // The server plays the loudest speakers in the audio slots.
        if (t.kind === 'audio' && this.#followingSpeakers) continue;
        if ([...this.slots.values()].some((s) => s.peer === p.peer && s.track === t.name)) continue;
        if (free[t.kind] <= 0) {
          if (total[t.kind] > 0) this.#noSlot(key, p.peer, t);
          continue;
        }
        free[t.kind] -= 1;
        this.#starved.delete(key);
        this.#subscribing.set(key, t.kind);
        this.#subscribe(p.peer, t.name)
          .catch((e) => {
            // The track or peer went away meanwhile: nothing to report.
            if (e.code === 'unknown_peer' || e.code === 'unknown_track' || e.code === 'closed') return;
            if (e.code === 'no_free_slot') return this.#noSlot(key, p.peer, t);
            this.#emit('error', { event: 'error', code: e.code ?? 'unknown', message: e.message });
          })
          .finally(() => this.#subscribing.delete(key));
      }
    }
  }

  /**
   * Says once per track that it cannot be played for lack of a slot.
   * @param {string} key
   * @param {string} peer
   * @param {TrackInfo} t
   */
  #noSlot(key, peer, t) {
    if (this.#starved.has(key)) return;
    this.#starved.add(key);
    this.#emit('error', { event: 'error', code: 'no_free_slot',
      message: `Cannot play ${peer}'s ${t.name}: all ${t.kind} slots are in use (connect with more slots).` });
  }
}

/**
 * @param {any} t
 * @returns {TrackInfo}
 */
function trackInfo(t) {
  return { name: t.name, kind: t.kind, codec: t.codec ?? null, muted: !!t.muted };
}
