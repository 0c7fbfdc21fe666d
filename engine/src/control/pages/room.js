// The conference page, /room?room=R&peer=ID&token=T&name=DISPLAY: joins with
// the camera and microphone through the browser SDK and shows everyone in a
// grid. Joins by itself when the address names a room.

import { connect } from '/sdk/corecast.js';
import { $, say } from '/common.js';

const q = new URLSearchParams(location.search);
const token = q.get('token') || undefined;
const display = q.get('name') || '';
const ui = { form: $('form'), room: $('room'), peer: $('peer'), join: $('join'), mic: $('mic'),
             camera: $('camera'), leave: $('leave'), error: $('error'), sound: $('sound'),
             soundOn: $('sound-on'), state: $('state'), grid: $('grid'), share: $('share') };
ui.room.value = q.get('room') || '';
ui.peer.value = q.get('peer') || `guest-${1000 + Math.floor(Math.random() * 9000)}`;

/** @type {import('/sdk/corecast.js').Room | null} */
let room = null;
let media = null;          // our camera and microphone
const tiles = new Map();   // peer id → {fig, video, audio, name, badges, mids}

// What the page sees, for tests (scripts/e2e/browser/room.test.mjs) and the console.
const status = window.corecastRoom = {
  joined: false, peers: [], error: null, room: null, stats, leave: () => leave(),
};

function showError(text) {
  say(ui.error, text);
  status.error = text || null;
}

function mediaWords(e) {
  const words = {
    NotAllowedError: 'Permission to use the camera or microphone was denied.',
    NotFoundError: 'No camera or microphone was found.',
    NotReadableError: 'The camera or microphone is in use by another program.',
  };
  return words[e.name] || `Cannot open the camera or microphone: ${e.message}`;
}

// Camera and microphone, or whichever of them works; null when neither does.
async function openMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error(`Camera access needs a secure page: open http://localhost:${location.port || 80}/room on this machine, or use HTTPS.`);
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (e) {
    for (const one of [{ audio: true }, { video: true }]) {
      try {
        return await navigator.mediaDevices.getUserMedia(one);
      } catch {
        // try the other device
      }
    }
    throw new Error(mediaWords(e));
  }
}

function stopMedia() {
  media?.getTracks().forEach((t) => t.stop());
  media = null;
}

function shareLink(name) {
  const u = new URL('/room', location.href);
  u.searchParams.set('room', name);
  ui.share.href = u.href;
  ui.share.textContent = u.href;
}

async function join(e) {
  e?.preventDefault();
  if (room) return;
  showError('');
  const name = ui.room.value.trim();
  const peer = ui.peer.value.trim();
  // Checked here too, so a bad name does not turn the camera on first.
  for (const [what, v] of [['room name', name], ['peer id', peer]]) {
    if (!/^[A-Za-z0-9._~-]{1,128}$/.test(v)) {
      return showError(`A ${what} is 1 to 128 letters, digits or - _ . ~ (no spaces).`);
    }
  }
  ui.join.disabled = true;
  ui.state.textContent = `Joining “${name}”…`;
  try {
    media = await openMedia().catch((err) => {
      showError(`${err.message} You join without them: you still see and hear the others.`);
      return null;
    });
    const publish = media ? media.getTracks().map((track) => ({ track, name: track.kind })) : [];
    const next = new URLSearchParams({ room: name, peer });
    for (const k of ['token', 'name']) if (q.get(k)) next.set(k, q.get(k));
    history.replaceState(null, '', `/room?${next}`);
    shareLink(name);
    room = status.room = await connect(location.origin, {
      room: name, peer, token, publish, metadata: display ? { name: display } : undefined, on: handlers,
    });
  } catch (err) {
    stopMedia();
    const hint = err.status === 401 ? ' Add &token=... to this page\'s address.' : '';
    showError(`${err.message}${hint}`);
    ui.state.textContent = 'Not in a room.';
    ui.join.disabled = false;
    return;
  }
  addTile(room.peer, true).video.srcObject = new MediaStream(media?.getVideoTracks() ?? []);
  for (const id of room.peers.keys()) addTile(id);
  status.joined = true;
  refresh();
}

async function leave() {
  await room?.leave(); // dispatches closed, which tidies the page
}

const handlers = {
  peer_joined: (ev) => { addTile(ev.peer); refresh(); },
  peer_left: (ev) => { removeTile(ev.peer); refresh(); },
  peer_updated: (ev) => showTile(ev.peer),
  track_published: (ev) => showTile(ev.peer),
  track_updated: (ev) => showTile(ev.peer),
  track_unpublished: (ev) => showTile(ev.peer),
  track: attach,
  subscription: (ev) => { if (ev.state === 'ended') detach(ev); },
  error: (ev) => showError(ev.message),
  closed: (ev) => closed(ev.reason),
};

function closed(reason) {
  if (!room) return; // connect() failed: it says why
  const peer = room.peer;
  room = status.room = null;
  status.joined = false;
  stopMedia();
  for (const id of [...tiles.keys()]) removeTile(id);
  ui.sound.hidden = true;
  refresh();
  const words = {
    left: '',
    replaced: `Another tab or device joined this room as ${peer}: this page left it.`,
    disconnected: 'The connection to the server was lost.',
  };
  if (reason !== 'left') showError(words[reason] ?? `The server closed the connection (${reason}).`);
  ui.state.textContent = reason === 'left' ? 'You left the room.' : 'Not in a room.';
}

// Buttons, the state line and the status object follow the room.
function refresh() {
  const a = room?.local.get('audio');
  const v = room?.local.get('video');
  ui.join.disabled = !!room;
  ui.leave.disabled = !room;
  ui.mic.disabled = !a;
  ui.camera.disabled = !v;
  ui.mic.textContent = a?.muted ? 'Unmute microphone' : 'Mute microphone';
  ui.camera.textContent = v?.muted ? 'Turn camera on' : 'Turn camera off';
  ui.mic.setAttribute('aria-pressed', String(!!a?.muted));
  ui.camera.setAttribute('aria-pressed', String(!!v?.muted));
  status.peers = room ? [...room.peers.keys()] : [];
  if (!room) return;
  const n = room.peers.size;
  ui.state.textContent = `In room “${room.name}” as ${room.peer}, ${n ? `with ${n} other${n > 1 ? 's' : ''}` : 'alone so far'}.`;
  showTile(room.peer);
}

async function toggle(name) {
  const t = room?.local.get(name);
  if (!t) return;
  try {
    await (t.muted ? room.unmute(name) : room.mute(name));
  } catch (e) {
    showError(e.message);
  }
  refresh();
}

function addTile(id, self = false) {
  if (tiles.has(id)) return tiles.get(id);
  const el = (tag, props = {}) => Object.assign(document.createElement(tag), props);
  const tile = {
    fig: el('figure', { className: self ? 'tile self' : 'tile' }),
    video: el('video', { autoplay: true, muted: true, playsInline: true }),
    audio: el('audio', { autoplay: true }),
    name: el('span', { className: 'name' }),
    badges: el('span', { className: 'badges' }),
    mids: { audio: null, video: null }, // the slots playing this peer
    self,
  };
  const caption = el('figcaption');
  caption.append(tile.name, tile.badges);
  tile.fig.append(tile.video, tile.audio, caption);
  tile.fig.dataset.peer = id;
  // Our own tile first, the others in the order they came.
  if (self) ui.grid.prepend(tile.fig);
  else ui.grid.append(tile.fig);
  tiles.set(id, tile);
  showTile(id);
  return tile;
}

function removeTile(id) {
  tiles.get(id)?.fig.remove();
  tiles.delete(id);
}

// The tile's name and what is off, in words.
function showTile(id) {
  const tile = tiles.get(id);
  if (!tile || !room) return;
  const off = [];
  if (tile.self) {
    tile.name.textContent = `${display || id} (you)`;
    if (!room.local.has('audio')) off.push('no microphone');
    else if (room.local.get('audio').muted) off.push('microphone off');
    if (!room.local.has('video')) off.push('no camera');
    else if (room.local.get('video').muted) off.push('camera off');
  } else {
    const p = room.peers.get(id);
    const shown = p?.metadata?.name;
    tile.name.textContent = typeof shown === 'string' && shown ? shown : id;
    tile.name.title = id;
    const track = (kind) => p?.tracks.find((t) => t.kind === kind);
    for (const [kind, none, muted] of [['audio', 'no microphone', 'microphone off'], ['video', 'no camera', 'camera off']]) {
      const t = track(kind);
      if (!t) off.push(none);
      else if (t.muted) off.push(muted);
    }
  }
  tile.badges.textContent = off.join(' · ');
  tile.fig.classList.toggle('no-video', off.some((w) => /camera/.test(w)));
}

// A subscription went live: play it in its peer's tile.
function attach(ev) {
  const tile = tiles.get(ev.peer) ?? addTile(ev.peer);
  const el = ev.kind === 'video' ? tile.video : tile.audio;
  el.srcObject = new MediaStream([ev.mediaTrack]);
  tile.mids[ev.kind] = ev.mid;
  el.play().catch((e) => {
    // Sound without a click first is refused by most browsers.
    if (e.name === 'NotAllowedError') ui.sound.hidden = false;
  });
}

// A subscription ended: its slot may play someone else next.
function detach(ev) {
  const tile = tiles.get(ev.peer);
  const kind = room?.slots.get(ev.mid)?.kind;
  if (!tile || !kind || tile.mids[kind] !== ev.mid) return;
  tile.mids[kind] = null;
  (kind === 'video' ? tile.video : tile.audio).srcObject = null;
}

/** Per receiving slot: whose track it plays and what arrived. */
async function stats() {
  const r = room;
  if (!r) return [];
  const out = [];
  for (const slot of r.slots.values()) {
    if (!slot.peer) continue;
    const report = await slot.receiver.getStats();
    const rtp = [...report.values()].find((s) => s.type === 'inbound-rtp') ?? {};
    out.push({
      peer: slot.peer, track: slot.track, kind: slot.kind, mid: slot.mid, state: slot.state,
      packetsReceived: rtp.packetsReceived ?? 0, framesDecoded: rtp.framesDecoded ?? 0,
      frameWidth: rtp.frameWidth ?? 0, frameHeight: rtp.frameHeight ?? 0,
      audioLevel: rtp.audioLevel ?? 0, totalAudioEnergy: rtp.totalAudioEnergy ?? 0,
    });
  }
  return out;
}

ui.form.onsubmit = join;
ui.leave.onclick = () => leave();
ui.mic.onclick = () => toggle('audio');
ui.camera.onclick = () => toggle('video');
ui.soundOn.onclick = () => {
  ui.sound.hidden = true;
  for (const t of tiles.values()) if (t.audio.srcObject) t.audio.play().catch(() => {});
};
ui.room.oninput = () => shareLink(ui.room.value.trim());
shareLink(ui.room.value.trim() || 'demo');
if (ui.room.value) join();
