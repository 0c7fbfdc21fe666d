//! Active speakers and top-N audio, per room.
//!
//! Shards report the mean audio level of every track they publish each
//! 200 ms (`shard/levels.rs`, from the RFC 6464 extension publishers send).
//! Here each room keeps a [`Speakers`] set (energy averaged over a second,
//! with hysteresis: `corecast_media::speakers`), and when its ordered set
//! changes:
//!
//! - every joined SDK connection of the room gets an `active_speakers`
//!   event (loudest first, with their levels);
//! - every SDK connection that follows the speakers (`follow_speakers`)
//!   has its audio slots pointed at the loudest speakers but itself, at
//!   most `--top-audio` of them (default 3): a big room costs each
//!   subscriber N audio streams, not one per peer. A slot switches source
//!   without renegotiation and without a gap in its sequence numbers (the
//!   endpoint's rewriter continues the stream; Opus needs no keyframe).
//!
//! A node decides from the audio it receives: its own publishers' and the
//! remote tracks that someone on the node subscribes to.

use std::collections::BTreeSet;
use std::time::Instant;

use corecast_media::speakers::{SpeakerConfig, Speakers};
use corecast_media::{ChannelId, ConnId, MediaKind, SlotId, TransportKind};
use serde_json::{json, Value};

use super::directory::Directory;
use super::rooms::{Sub, SubState};

/// The default of `--top-audio`.
pub const DEFAULT_TOP_AUDIO: usize = 3;

/// A room's speakers and what its connections were last told.
pub(super) struct RoomSpeakers {
    speakers: Speakers<ChannelId>,
    last: Vec<ChannelId>,
}

impl RoomSpeakers {
    /// Whether someone speaks in the room now.
    pub(super) fn speaking(&self) -> bool {
        !self.last.is_empty()
    }

    fn new(top: usize) -> RoomSpeakers {
        // One more than a follower hears: a follower among the loudest
        // hears the next one instead of itself.
        let config = SpeakerConfig {
            top_n: top.max(1) + 1,
            ..SpeakerConfig::default()
        };
        RoomSpeakers {
            speakers: Speakers::new(config),
            last: Vec::new(),
        }
    }
}

impl Directory {
    /// Levels a shard measured: one observation per track.
    pub(super) fn on_audio_levels(&mut self, now: Instant, levels: Vec<(ChannelId, u8)>) {
        let mut touched = BTreeSet::new();
        for (channel, level) in levels {
            let Some((room, ..)) = self.speaker_track(channel) else {
                continue;
            };
            let top = self.top_audio;
            self.speakers
                .entry(room.clone())
                .or_insert_with(|| RoomSpeakers::new(top))
                .speakers
                .observe(now, channel, level, None);
            touched.insert(room);
        }
        for room in touched {
            self.update_speakers(now, &room);
        }
    }

    /// The periodic update: speakers who went quiet leave, rooms that
    /// ended are forgotten.
    pub(super) fn tick_speakers(&mut self, now: Instant) {
        let conns = &self.conns;
        self.followers.retain(|c| conns.contains_key(c));
        // Phones hear the room even where nobody's level is known yet (a
        // room of publishers that send no RFC 6464 levels).
        let phones: Vec<(ConnId, String)> = self
            .followers
            .iter()
            .filter_map(|c| self.conns.get(c).map(|x| (*c, x)))
            .filter(|(_, c)| c.transport == TransportKind::Sip)
            .map(|(id, c)| (id, c.room.clone()))
            .collect();
        for (conn, room) in phones {
            let top = self
                .speakers
                .get(&room)
                .map(|rs| rs.last.clone())
                .unwrap_or_default();
            self.assign_speakers(conn, &top);
        }
        let rooms: Vec<String> = self.speakers.keys().cloned().collect();
        for room in rooms {
            if !self.rooms.contains_key(&room) {
                self.speakers.remove(&room);
                continue;
            }
            self.update_speakers(now, &room);
        }
    }

    /// `follow_speakers`: the connection's audio slots play the loudest
    /// speakers of its room (or stop following with `on: false`). Returns
    /// the mids of the slots the server manages; the slots are pointed
    /// with [`Directory::assign_current_speakers`] once the answer is out.
    pub(super) fn follow_speakers(&mut self, now: Instant, conn: ConnId, on: bool) -> Vec<String> {
        if !on {
            self.followers.remove(&conn);
            return Vec::new();
        }
        let Some(c) = self.conns.get(&conn) else {
            return Vec::new();
        };
        let mids = c
            .slots
            .iter()
            .filter(|s| s.kind == MediaKind::Audio)
            .map(|s| s.label.clone())
            .collect();
        self.followers.insert(conn);
        let _ = now;
        mids
    }

    /// Points a new follower's audio slots at its room's speakers now (after
    /// the answer to its `follow_speakers` went out).
    pub(super) fn assign_current_speakers(&mut self, now: Instant, conn: ConnId) {
        if !self.followers.contains(&conn) {
            return;
        }
        let Some(room) = self.conns.get(&conn).map(|c| c.room.clone()) else {
            return;
        };
        if let Some(rs) = self.speakers.get_mut(&room) {
            rs.speakers.update(now);
            let top = rs.speakers.top().to_vec();
            self.assign_speakers(conn, &top);
        }
    }

    /// The active speakers of a room, loudest first, as the SDK and the API
    /// show them.
    pub(super) fn speakers_json(&self, room: &str) -> Vec<Value> {
        let Some(rs) = self.speakers.get(room) else {
            return Vec::new();
        };
        rs.last
            .iter()
            .take(self.top_audio)
            .filter_map(|ch| {
                let (_, peer, track) = self.speaker_index.get(ch)?;
                let level = rs.speakers.level_db(*ch).map(|l| (l * 10.0).round() / 10.0);
                Some(json!({"peer": peer, "track": track, "level": level}))
            })
            .collect()
    }

    fn update_speakers(&mut self, now: Instant, room: &str) {
        let Some(rs) = self.speakers.get_mut(room) else {
            return;
        };
        rs.speakers.update(now);
        let top = rs.speakers.top().to_vec();
        if top == rs.last {
            return;
        }
        let shown = self.top_audio;
        let changed_shown = top.iter().take(shown).ne(rs.last.iter().take(shown));
        rs.last = top.clone();
        if changed_shown {
            // The one more tracked than shown (a follower's replacement for
            // itself) changes nothing anyone is told.
            self.speaker_changes += 1;
            let event = json!({"event": "active_speakers", "speakers": self.speakers_json(room)});
            self.peer_event(room, "", event);
        }
        let followers: Vec<ConnId> = self
            .followers
            .iter()
            .copied()
            .filter(|c| self.conns.get(c).is_some_and(|c| c.room == room))
            .collect();
        for conn in followers {
            self.assign_speakers(conn, &top);
        }
    }

    /// Points a follower's audio slots at the loudest speakers but itself:
    /// a slot that plays one of them keeps it; the others take an empty
    /// slot, else one that plays someone no longer among them.
    fn assign_speakers(&mut self, conn: ConnId, top: &[ChannelId]) {
        let Some(c) = self.conns.get(&conn) else {
            self.followers.remove(&conn);
            return;
        };
        if !matches!(c.transport, TransportKind::WebRtc | TransportKind::Sip) {
            return;
        }
        let me = c.peer.clone();
        let mut want: Vec<ChannelId> = top
            .iter()
            .copied()
            .filter(|ch| {
                self.speaker_index
                    .get(ch)
                    .is_some_and(|(_, peer, _)| *peer != me)
            })
            .take(self.top_audio)
            .collect();
        if c.transport == TransportKind::Sip {
            let room = c.room.clone();
            // A phone's mix-minus: with fewer speakers than slots, the
            // room's other audio tracks fill the rest (the mixer ranks
            // them by what it hears).
            self.fill_with_room_audio(&room, &me, &mut want);
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let playing: Vec<(SlotId, Option<ChannelId>)> = c
            .slots
            .iter()
            .filter(|s| s.kind == MediaKind::Audio)
            .map(|s| {
                let sub = c.subs.get(usize::from(s.id.0)).and_then(Option::as_ref);
                (s.id, sub.map(|sub| sub.channel))
            })
            .collect();
        let missing: Vec<ChannelId> = want
            .iter()
            .copied()
            .filter(|ch| !playing.iter().any(|(_, p)| *p == Some(*ch)))
            .collect();
        let mut free: Vec<SlotId> = playing
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(s, _)| *s)
            .collect();
        free.extend(
            playing
                .iter()
                .filter(|(_, p)| p.is_some_and(|ch| !want.contains(&ch)))
                .map(|(s, _)| *s),
        );
        for (channel, slot) in missing.into_iter().zip(free) {
            let Some((_, peer, track)) = self.speaker_index.get(&channel).cloned() else {
                continue;
            };
            self.clear_sub(conn, slot, Some("speaker_changed"));
            self.set_sub(
                conn,
                slot,
                Sub {
                    peer,
                    track,
                    channel,
                    state: SubState::Waiting,
                    sent: false,
                },
            );
            self.sub_event(conn, slot);
        }
    }

    /// Adds the room's other published audio tracks to `want`, up to
    /// `--top-audio`, and indexes them as speakers' tracks.
    fn fill_with_room_audio(&mut self, room: &str, me: &str, want: &mut Vec<ChannelId>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut more = Vec::new();
        for (peer, p) in &r.peers {
            if peer == me {
                continue;
            }
            for t in &p.tracks {
                if t.kind == MediaKind::Audio && t.published && !want.contains(&t.channel) {
                    more.push((t.channel, peer.clone(), t.name.clone()));
                }
            }
        }
        for (channel, peer, track) in more {
            if want.len() >= self.top_audio {
                break;
            }
            want.push(channel);
            if self.speaker_index.len() < 65_536 {
                self.speaker_index
                    .insert(channel, (room.to_string(), peer, track));
            }
        }
    }

    /// The room, peer and track of an audio channel published in a room
    /// this node knows (cached; looked up again when the cache is stale).
    fn speaker_track(&mut self, channel: ChannelId) -> Option<(String, String, String)> {
        if let Some((room, peer, track)) = self.speaker_index.get(&channel) {
            let still = self
                .rooms
                .get(room)
                .and_then(|r| r.peers.get(peer))
                .is_some_and(|p| p.tracks.iter().any(|t| t.channel == channel));
            if still {
                return Some((room.clone(), peer.clone(), track.clone()));
            }
            let _ = track;
            self.speaker_index.remove(&channel);
        }
        let found = self.rooms.iter().find_map(|(room, r)| {
            r.peers.iter().find_map(|(peer, p)| {
                p.tracks
                    .iter()
                    .find(|t| t.channel == channel && t.kind == MediaKind::Audio)
                    .map(|t| (room.clone(), peer.clone(), t.name.clone()))
            })
        })?;
        if self.speaker_index.len() < 65_536 {
            self.speaker_index.insert(channel, found.clone());
        }
        Some(found)
    }
}
