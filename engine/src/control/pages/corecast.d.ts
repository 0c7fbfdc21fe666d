// Types of the corecast browser SDK (/sdk/corecast.js), protocol version 1.
// Reference: docs/sdk.md; wire protocol: docs/sdk-protocol.md.

export type Kind = 'audio' | 'video';

/** The protocol version this SDK speaks. */
export declare const PROTOCOL: 1;

/** A published track, as the protocol describes it. */
export interface TrackInfo {
  name: string;
  kind: Kind;
  /** e.g. "opus/48000", "VP8/90000"; null until media flows. */
  codec: string | null;
  muted: boolean;
}

/** Another user in the room. */
export interface PeerInfo {
  peer: string;
  metadata: any;
  tracks: TrackInfo[];
}

/** A local track to publish; declared at connect. */
export interface PublishTrack {
  track: MediaStreamTrack;
  /** 1–64 of A-Z a-z 0-9 - _ . ; defaults to the track's kind. */
  name?: string;
}

/** A track this connection publishes. */
export interface LocalTrack {
  name: string;
  kind: Kind;
  track: MediaStreamTrack;
  mid: string;
  sender: RTCRtpSender;
  /** false after unpublish(). */
  published: boolean;
  muted: boolean;
}

export type SlotState = 'free' | 'waiting' | 'live' | 'paused';

/** A receive transceiver: plays one subscription at a time. */
export interface Slot {
  mid: string;
  kind: Kind;
  receiver: RTCRtpReceiver;
  /** The same track for the slot's whole life, whichever subscription it plays. */
  mediaTrack: MediaStreamTrack;
  /** Whose track it plays; null when free. */
  peer: string | null;
  track: string | null;
  state: SlotState;
}

/** What subscribe() resolves with. */
export interface Subscribed {
  mid: string;
  kind: Kind;
  mediaTrack: MediaStreamTrack;
}

export interface PeerJoinedEvent extends PeerInfo {
  event: 'peer_joined';
}

export interface PeerLeftEvent {
  event: 'peer_left';
  peer: string;
  reason: 'left' | 'closed' | 'replaced' | 'timeout';
}

export interface PeerUpdatedEvent {
  event: 'peer_updated';
  peer: string;
  metadata: any;
}

/** track_published and track_updated. */
export interface TrackChangeEvent extends TrackInfo {
  event: 'track_published' | 'track_updated';
  peer: string;
}

export interface TrackUnpublishedEvent {
  event: 'track_unpublished';
  peer: string;
  track: string;
}

export interface SubscriptionEvent {
  event: 'subscription';
  mid: string;
  peer: string;
  track: string;
  state: 'waiting' | 'live' | 'paused' | 'ended';
  /** When ended: unsubscribed, unpublished, peer_left, replaced. */
  reason?: string;
}

export interface ClosedEvent {
  event: 'closed';
  /** The server's (replaced, left) or the SDK's (disconnected; left after leave()). */
  reason: string;
}

/** The server's error event, or one the SDK raises itself (no_free_slot, bad_message). */
export interface RoomErrorEvent {
  event: 'error';
  code: string;
  message: string;
}

/** The room's loudest speakers changed (loudest first). */
export interface ActiveSpeakersEvent {
  event: 'active_speakers';
  speakers: { peer: string; track: string; level: number | null }[];
}

/** A call placed with POST /api/sip/calls changed state. */
export interface SipCallEvent {
  event: 'sip_call';
  /** The call's id (a connection id). */
  id: string;
  /** Its peer name in the room once answered. */
  peer: string;
  state: 'calling' | 'ringing' | 'answered' | 'ended';
  /** When ended: sip_refused 486, sip_cancelled, sip_bye, ... */
  reason?: string;
}

/** A phone in the room pressed a key (RFC 4733). */
export interface DtmfEvent {
  event: 'dtmf';
  peer: string;
  /** 0-9, *, #, A-D. */
  digit: string;
}

/** The SDK's own event: a subscription went live. */
export interface RemoteTrackEvent {
  event: 'track';
  peer: string;
  /** The track's name. */
  track: string;
  kind: Kind;
  mid: string;
  /** Attach it to an <audio> or <video> element. */
  mediaTrack: MediaStreamTrack;
}

export interface RoomEventMap {
  peer_joined: PeerJoinedEvent;
  peer_left: PeerLeftEvent;
  peer_updated: PeerUpdatedEvent;
  track_published: TrackChangeEvent;
  track_updated: TrackChangeEvent;
  track_unpublished: TrackUnpublishedEvent;
  subscription: SubscriptionEvent;
  closed: ClosedEvent;
  error: RoomErrorEvent;
  track: RemoteTrackEvent;
  active_speakers: ActiveSpeakersEvent;
  sip_call: SipCallEvent;
  dtmf: DtmfEvent;
}

export type Handlers = { [K in keyof RoomEventMap]?: (ev: RoomEventMap[K]) => void };

export interface ConnectOptions {
  /** 1–128 of A-Z a-z 0-9 - _ . ~ */
  room: string;
  /** Your id in the room, same characters. A second connection with it replaces the first. */
  peer: string;
  /** A room token (`corecast token`) or the server's static --token. */
  token?: string;
  /** Shown to the others; at most 4096 bytes as JSON. */
  metadata?: any;
  /** The tracks to publish. The connection is not renegotiated: declare them here. */
  publish?: PublishTrack[];
  /** Receive slots, 0–32 of each kind. Default { audio: 8, video: 8 }. */
  slots?: { audio?: number; video?: number };
  /** Subscribe to every other peer's tracks as they appear. Default true. */
  autoSubscribe?: boolean;
  /** Listeners attached before joining. */
  on?: Handlers;
}

/** An Error from the SDK or the server, with the protocol's or the SDK's code. */
export interface RoomError extends Error {
  /** Protocol codes (no_free_slot, unknown_track, ...) or the SDK's: timeout, closed, too_large, unreachable. */
  code: string;
}

/** A joined room; made by connect(). Read its fields, do not change them (autoSubscribe excepted). */
export declare class Room {
  private constructor();
  /** The room's name. */
  readonly name: string;
  /** Your peer id. */
  readonly peer: string;
  /** The connection id (16 hex digits). */
  readonly conn: string;
  /** The underlying connection, for getStats() and the like. */
  readonly pc: RTCPeerConnection;
  /** Every other peer in the room, by id. */
  readonly peers: Map<string, PeerInfo>;
  /** The receive slots, by mid. */
  readonly slots: Map<string, Slot>;
  /** Your published tracks, by name. */
  readonly local: Map<string, LocalTrack>;
  /** Your metadata as the others see it. */
  readonly metadata: any;
  /** Whether every other peer's tracks are subscribed to by themselves. May be changed. */
  autoSubscribe: boolean;
  /** True from the join answer until the room closes. */
  readonly joined: boolean;
  /** True once the connection ended. */
  readonly closed: boolean;

  /** Calls fn with each event `name`; returns a function that removes it. */
  on<K extends keyof RoomEventMap>(name: K, fn: (ev: RoomEventMap[K]) => void): () => void;
  off<K extends keyof RoomEventMap>(name: K, fn: (ev: RoomEventMap[K]) => void): void;

  /** Any request; resolves with the answer's fields, rejects with a RoomError. */
  request(name: string, fields?: Record<string, any>): Promise<Record<string, any>>;
  /** Announces again a track declared at connect (after unpublish). */
  publish(name: string): Promise<void>;
  /** Withdraws a track; the browser stops sending it until publish(). */
  unpublish(name: string): Promise<void>;
  /** Plays another peer's track in a free slot of its kind, or in slot `mid`. */
  subscribe(peer: string, track: string, mid?: string): Promise<Subscribed>;
  /** Stops a slot; autoSubscribe leaves that track alone until subscribe(). */
  unsubscribe(mid: string): Promise<void>;
  /** A video slot's top simulcast layer (0 = lowest) and priority (1-10). */
  prefer(mid: string, pref?: { maxLayer?: number; priority?: number }): Promise<void>;
  /** The server plays the loudest other speakers in the audio slots; resolves with their mids. */
  followSpeakers(on?: boolean): Promise<string[]>;
  /** Disables the local track at once and tells the others. */
  mute(name: string): Promise<void>;
  unmute(name: string): Promise<void>;
  /** Replaces your metadata; the others get peer_updated. */
  update(metadata: any): Promise<void>;
  /** leave, DELETE, close; dispatches closed (reason "left"). Local tracks keep running. */
  leave(): Promise<void>;
}

/** Joins a room over one WebRTC connection; resolves once joined. */
export declare function connect(url: string, options: ConnectOptions): Promise<Room>;

/**
 * Asks for the dependency descriptor header extension on a receiving video
 * transceiver, before the offer (AV1 SVC needs it to decode); a no-op where
 * the browser cannot.
 */
export declare function receiveDependencyDescriptor(transceiver: RTCRtpTransceiver): void;
