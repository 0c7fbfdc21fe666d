//! The control plane's view of sessions and streams.
//!
//! A session is pending (its endpoint held here) until a shard receives its
//! first STUN request and claims it; from then on only its shard is known.
//! A stream (the `{stream}` of `/whip/{stream}`) has at most one publisher and
//! any number of viewers, which follow whoever publishes now.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, CodecInfo, MediaKind};
use corecast_webrtc::{Endpoint, Role};

use crate::messages::{ControlEvent, SessionId, ShardCommand};
use crate::metrics::{inc, ShardMetrics};

enum Place {
    Pending {
        endpoint: Box<Endpoint>,
        since: Instant,
    },
    Shard(usize),
}

struct Session {
    stream: String,
    role: Role,
    ufrag: String,
    place: Place,
}

#[derive(Default)]
struct Stream {
    publisher: Option<SessionId>,
    channels: Vec<(MediaKind, ChannelId)>,
    negotiated: Vec<CodecInfo>,
    active: Vec<CodecInfo>,
    viewers: HashSet<SessionId>,
}

/// A live stream, as `/api/streams` shows it.
#[derive(Debug, serde::Serialize)]
pub struct StreamInfo {
    pub stream: String,
    pub live: bool,
    pub viewers: usize,
    pub codecs: Vec<String>,
}

/// Where a PATCH goes.
pub enum FragmentTarget<'a> {
    Pending(&'a mut Endpoint),
    Shard(flume::Sender<ShardCommand>),
}

/// Sessions, streams and the shards' command channels.
pub struct Directory {
    shards: Vec<flume::Sender<ShardCommand>>,
    sessions: HashMap<SessionId, Session>,
    by_ufrag: HashMap<String, SessionId>,
    streams: HashMap<String, Stream>,
}

impl Directory {
    pub fn new(shards: Vec<flume::Sender<ShardCommand>>) -> Directory {
        Directory {
            shards,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            streams: HashMap::new(),
        }
    }

    pub fn shutdown(&mut self) {
        self.shards.clear();
        self.sessions.clear();
    }

    pub fn pending(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s.place, Place::Pending { .. }))
            .count()
    }

    /// The codecs a new viewer of `stream` must accept, per kind: the codec
    /// the publisher sends once known, else those it negotiated. A kind the
    /// publisher does not publish is unconstrained (empty: anything).
    pub fn required_codecs(&self, stream: &str) -> Vec<CodecInfo> {
        let Some(s) = self.streams.get(stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let active: Vec<CodecInfo> = s
                .active
                .iter()
                .filter(|c| c.kind() == kind)
                .copied()
                .collect();
            if active.is_empty() {
                out.extend(s.negotiated.iter().filter(|c| c.kind() == kind).copied());
            } else {
                out.extend(active);
            }
        }
        out
    }

    #[cfg(test)]
    fn set_codecs(&mut self, stream: &str, negotiated: Vec<CodecInfo>, active: Vec<CodecInfo>) {
        let s = self.streams.entry(stream.to_string()).or_default();
        s.negotiated = negotiated;
        s.active = active;
    }

    pub fn session_stream(&self, session: SessionId) -> Option<(&str, Role)> {
        self.sessions
            .get(&session)
            .map(|s| (s.stream.as_str(), s.role))
    }

    /// Adds a WHIP publisher; an earlier publisher of the stream is closed and
    /// its viewers switch to the new one.
    pub fn add_publisher(
        &mut self,
        stream: &str,
        session: SessionId,
        endpoint: Endpoint,
        now: Instant,
    ) {
        let old = self.streams.get(stream).and_then(|s| s.publisher);
        if let Some(old) = old {
            self.remove(old);
        }
        let channels: Vec<(MediaKind, ChannelId)> = endpoint.published_channels().collect();
        let negotiated = endpoint.negotiated_codecs();
        self.insert(session, stream, endpoint, now);
        let s = self.streams.entry(stream.to_string()).or_default();
        s.publisher = Some(session);
        s.channels = channels;
        s.negotiated = negotiated;
        s.active.clear();
        self.resubscribe(stream);
    }

    pub fn add_viewer(&mut self, stream: &str, endpoint: Endpoint, now: Instant) -> SessionId {
        let session = SessionId::random();
        self.insert(session, stream, endpoint, now);
        self.streams
            .entry(stream.to_string())
            .or_default()
            .viewers
            .insert(session);
        session
    }

    fn insert(&mut self, session: SessionId, stream: &str, endpoint: Endpoint, now: Instant) {
        let ufrag = endpoint.local_ufrag().to_string();
        self.by_ufrag.insert(ufrag.clone(), session);
        self.sessions.insert(
            session,
            Session {
                stream: stream.to_string(),
                role: endpoint.role(),
                ufrag,
                place: Place::Pending {
                    endpoint: Box::new(endpoint),
                    since: now,
                },
            },
        );
    }

    /// Ends a session (DELETE, replaced publisher). Returns whether it existed.
    pub fn remove(&mut self, session: SessionId) -> bool {
        let Some(s) = self.sessions.remove(&session) else {
            return false;
        };
        self.by_ufrag.remove(&s.ufrag);
        if let Place::Shard(shard) = s.place {
            self.send(shard, ShardCommand::Close { session });
        }
        self.forget(session, &s.stream, s.role);
        true
    }

    fn forget(&mut self, session: SessionId, stream: &str, role: Role) {
        let Some(st) = self.streams.get_mut(stream) else {
            return;
        };
        match role {
            Role::Publisher if st.publisher == Some(session) => {
                st.publisher = None;
                let old = std::mem::take(&mut st.channels);
                st.active.clear();
                st.negotiated.clear();
                for (_, ch) in old {
                    self.broadcast_fanout(ch, 0);
                }
                // Viewers stay and wait for the next publisher.
                self.resubscribe(stream);
            }
            Role::Viewer => {
                st.viewers.remove(&session);
                self.update_fanout(stream);
            }
            Role::Publisher => {}
        }
        if let Some(st) = self.streams.get(stream) {
            if st.publisher.is_none() && st.viewers.is_empty() {
                self.streams.remove(stream);
            }
        }
    }

    /// Points every placed viewer of `stream` at its current publisher.
    fn resubscribe(&mut self, stream: &str) {
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        let mut cmds = Vec::new();
        for viewer in &st.viewers {
            if let Some(Session {
                place: Place::Shard(shard),
                ..
            }) = self.sessions.get(viewer)
            {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let channel = st
                        .channels
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, c)| *c);
                    cmds.push((
                        *shard,
                        ShardCommand::Subscribe {
                            session: *viewer,
                            kind,
                            channel,
                        },
                    ));
                }
            }
        }
        for (shard, cmd) in cmds {
            self.send(shard, cmd);
        }
        self.update_fanout(stream);
    }

    /// Tells every shard which shards hold viewers of the stream's channels.
    fn update_fanout(&mut self, stream: &str) {
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        let mut mask = 0u64;
        for v in &st.viewers {
            if let Some(Session {
                place: Place::Shard(shard),
                ..
            }) = self.sessions.get(v)
            {
                mask |= 1 << shard;
            }
        }
        let channels: Vec<ChannelId> = st.channels.iter().map(|(_, c)| *c).collect();
        for ch in channels {
            self.broadcast_fanout(ch, mask);
        }
    }

    fn broadcast_fanout(&self, channel: ChannelId, shards: u64) {
        for i in 0..self.shards.len() {
            self.send(i, ShardCommand::Fanout { channel, shards });
        }
    }

    fn send(&self, shard: usize, cmd: ShardCommand) {
        if let Some(tx) = self.shards.get(shard) {
            if tx.try_send(cmd).is_err() {
                tracing::warn!("shard {shard} command queue full: command dropped");
            }
        }
    }

    pub fn fragment_target(&mut self, session: SessionId) -> Option<FragmentTarget<'_>> {
        match &mut self.sessions.get_mut(&session)?.place {
            Place::Pending { endpoint, .. } => Some(FragmentTarget::Pending(endpoint)),
            Place::Shard(shard) => self.shards.get(*shard).cloned().map(FragmentTarget::Shard),
        }
    }

    /// Records a new server ufrag after an ICE restart of a pending session.
    pub fn set_ufrag(&mut self, session: SessionId, ufrag: String) {
        if let Some(s) = self.sessions.get_mut(&session) {
            self.by_ufrag.remove(&s.ufrag);
            self.by_ufrag.insert(ufrag.clone(), session);
            s.ufrag = ufrag;
        }
    }

    pub fn on_event(&mut self, event: ControlEvent, metrics: &[Arc<ShardMetrics>]) {
        match event {
            ControlEvent::Claim {
                shard,
                ufrag,
                datagram,
            } => {
                let Some(&session) = self.by_ufrag.get(&ufrag) else {
                    if let Some(m) = metrics.get(shard) {
                        inc(&m.bad_packets_total);
                    }
                    return;
                };
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                match std::mem::replace(&mut s.place, Place::Shard(shard)) {
                    Place::Pending { endpoint, .. } => {
                        let stream = s.stream.clone();
                        let subscriptions = match s.role {
                            Role::Viewer => self
                                .streams
                                .get(&stream)
                                .map(|st| st.channels.clone())
                                .unwrap_or_default(),
                            Role::Publisher => Vec::new(),
                        };
                        self.send(
                            shard,
                            ShardCommand::Adopt {
                                session,
                                endpoint,
                                first: datagram,
                                subscriptions,
                            },
                        );
                        self.update_fanout(&stream);
                    }
                    Place::Shard(owner) => {
                        s.place = Place::Shard(owner);
                        if owner != shard {
                            // Another 4-tuple of this client hashed to another shard.
                            self.send(owner, ShardCommand::Ingress { session, datagram });
                        }
                    }
                }
            }
            ControlEvent::Closed { session, reason } => {
                tracing::info!("session {session} closed: {reason:?}");
                if let Some(s) = self.sessions.remove(&session) {
                    self.by_ufrag.remove(&s.ufrag);
                    self.forget(session, &s.stream, s.role);
                }
            }
            ControlEvent::ActiveCodec {
                session,
                channel,
                codec,
            } => {
                let stream = self.sessions.get(&session).map(|s| s.stream.clone());
                if let Some(st) = stream.and_then(|name| self.streams.get_mut(&name)) {
                    if st.channels.iter().any(|(_, c)| *c == channel) {
                        st.active.retain(|c| c.kind() != codec.kind());
                        st.active.push(codec);
                    }
                }
            }
            ControlEvent::UfragChanged { session, ufrag } => self.set_ufrag(session, ufrag),
        }
    }

    pub fn expire_pending(&mut self, now: Instant, timeout: Duration) {
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(
                |(_, s)| matches!(s.place, Place::Pending { since, .. } if now >= since + timeout),
            )
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            tracing::info!("session {session} never connected: removed");
            self.remove(session);
        }
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = self
            .streams
            .iter()
            .map(|(name, s)| StreamInfo {
                stream: name.clone(),
                live: s.publisher.is_some(),
                viewers: s.viewers.len(),
                codecs: s.active.iter().map(|c| c.to_string()).collect(),
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_media::Codec;

    #[test]
    fn required_codecs_are_chosen_per_kind() {
        let mut d = Directory::new(Vec::new());
        let opus = CodecInfo::new(Codec::Opus, 48_000);
        let vp8 = CodecInfo::new(Codec::Vp8, 90_000);
        let vp9 = CodecInfo::new(Codec::Vp9, 90_000);
        assert!(d.required_codecs("s").is_empty());
        d.set_codecs("s", vec![opus, vp8, vp9], vec![]);
        assert_eq!(d.required_codecs("s"), vec![opus, vp8, vp9]);
        // Audio became active first: video is still the negotiated set.
        d.set_codecs("s", vec![opus, vp8, vp9], vec![opus]);
        assert_eq!(d.required_codecs("s"), vec![opus, vp8, vp9]);
        d.set_codecs("s", vec![opus, vp8, vp9], vec![opus, vp9]);
        assert_eq!(d.required_codecs("s"), vec![opus, vp9]);
    }
}
