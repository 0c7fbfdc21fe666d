//! A publishing RTMP client, sans-IO: what corecast's tests and load
//! generator use to publish generated FLV streams (real encoders are tested
//! end to end with ffmpeg and GStreamer).
//!
//! It does the simple handshake, `connect` to the application,
//! `createStream`, `publish` of the key, and reports the server's answer;
//! then [`PublishClient::video`] and [`PublishClient::audio`] cut FLV tag
//! bodies into chunks.

use crate::amf0::{self, Value};
use crate::chunk::{types, write_message, ChunkReader, Limits};
use crate::handshake::{PACKET, VERSION};
use crate::session::SessionError;

/// The chunk size the client sends with (announced with Set Chunk Size).
pub const CLIENT_CHUNK_SIZE: u32 = 4096;
const CS_COMMAND: u32 = 3;
const CS_AUDIO: u32 = 4;
const CS_VIDEO: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for S0, S1, S2.
    Handshake,
    /// `connect` sent.
    Connecting,
    /// `createStream` sent.
    Creating,
    /// `publish` sent.
    Publishing,
    Published,
    Refused,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// `NetStream.Publish.Start`: media may flow.
    Published,
    /// An error status (`NetConnection.Connect.Rejected`,
    /// `NetStream.Publish.BadName`, …) and its description.
    Refused { code: String, description: String },
}

/// One publishing connection.
#[derive(Debug)]
pub struct PublishClient {
    stage: Stage,
    app: String,
    key: String,
    handshake: Vec<u8>,
    reader: ChunkReader,
    stream_id: u32,
}

impl PublishClient {
    /// A client that will publish `key` to `app`; returns it and the first
    /// bytes to send (C0 and C1).
    pub fn new(app: &str, key: &str) -> (PublishClient, Vec<u8>) {
        let mut c0c1 = vec![VERSION];
        c0c1.extend_from_slice(&[0; 8]);
        c0c1.extend((0..PACKET - 8).map(|i| (i * 13 + 7) as u8));
        (
            PublishClient {
                stage: Stage::Handshake,
                app: app.to_string(),
                key: key.to_string(),
                handshake: Vec::new(),
                reader: ChunkReader::new(Limits::default()),
                stream_id: 0,
            },
            c0c1,
        )
    }

    pub fn is_published(&self) -> bool {
        self.stage == Stage::Published
    }

    /// Bytes from the server; appends what to send to `out`.
    pub fn push(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<ClientEvent>, SessionError> {
        let mut input = input;
        if self.stage == Stage::Handshake {
            let need = 1 + 2 * PACKET - self.handshake.len();
            let take = need.min(input.len());
            self.handshake.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.handshake.len() < 1 + 2 * PACKET {
                return Ok(None);
            }
            // C2: S1 echoed.
            out.extend_from_slice(&self.handshake[1..1 + PACKET]);
            write_message(
                out,
                128,
                2,
                0,
                types::SET_CHUNK_SIZE,
                0,
                &CLIENT_CHUNK_SIZE.to_be_bytes(),
            );
            self.command(
                out,
                0,
                &[
                    amf0::string("connect"),
                    Value::Number(1.0),
                    amf0::object(&[
                        ("app", amf0::string(&self.app)),
                        ("type", amf0::string("nonprivate")),
                        (
                            "tcUrl",
                            amf0::string(&format!("rtmp://localhost/{}", self.app)),
                        ),
                    ]),
                ],
            );
            self.stage = Stage::Connecting;
        }
        self.reader.push(input);
        let mut event = None;
        while let Some(m) = self.reader.next_message().map_err(SessionError::Chunk)? {
            if m.type_id != types::COMMAND_AMF0 {
                continue;
            }
            let v = amf0::decode_all(&m.payload).map_err(SessionError::Amf)?;
            let name = v.first().and_then(Value::as_str).unwrap_or("");
            let info = v.get(3);
            let code = info
                .and_then(|i| i.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let level = info
                .and_then(|i| i.get("level"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if name == "_error" || level == "error" {
                let description = info
                    .and_then(|i| i.get("description"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.stage = Stage::Refused;
                event = Some(ClientEvent::Refused { code, description });
                continue;
            }
            match (self.stage, name) {
                (Stage::Connecting, "_result") => {
                    self.command(
                        out,
                        0,
                        &[
                            amf0::string("createStream"),
                            Value::Number(2.0),
                            Value::Null,
                        ],
                    );
                    self.stage = Stage::Creating;
                }
                (Stage::Creating, "_result") => {
                    self.stream_id = v.get(3).and_then(Value::as_number).unwrap_or(1.0) as u32;
                    let key = self.key.clone();
                    self.command(
                        out,
                        self.stream_id,
                        &[
                            amf0::string("publish"),
                            Value::Number(3.0),
                            Value::Null,
                            amf0::string(&key),
                            amf0::string("live"),
                        ],
                    );
                    self.stage = Stage::Publishing;
                }
                (Stage::Publishing, "onStatus") if code == "NetStream.Publish.Start" => {
                    self.stage = Stage::Published;
                    event = Some(ClientEvent::Published);
                }
                _ => {}
            }
        }
        Ok(event)
    }

    /// A video message (an FLV video tag body) at `timestamp` ms.
    pub fn video(&self, out: &mut Vec<u8>, timestamp: u32, body: &[u8]) {
        write_message(
            out,
            CLIENT_CHUNK_SIZE,
            CS_VIDEO,
            timestamp,
            types::VIDEO,
            self.stream_id,
            body,
        );
    }

    /// An audio message (an FLV audio tag body) at `timestamp` ms.
    pub fn audio(&self, out: &mut Vec<u8>, timestamp: u32, body: &[u8]) {
        write_message(
            out,
            CLIENT_CHUNK_SIZE,
            CS_AUDIO,
            timestamp,
            types::AUDIO,
            self.stream_id,
            body,
        );
    }

    /// `deleteStream`: the publisher stops.
    pub fn unpublish(&self, out: &mut Vec<u8>) {
        self.command(
            out,
            0,
            &[
                amf0::string("deleteStream"),
                Value::Number(4.0),
                Value::Null,
                Value::Number(f64::from(self.stream_id)),
            ],
        );
    }

    fn command(&self, out: &mut Vec<u8>, stream_id: u32, values: &[Value]) {
        let mut p = Vec::new();
        for v in values {
            amf0::encode(v, &mut p);
        }
        // Set Chunk Size went out before the first command.
        write_message(
            out,
            CLIENT_CHUNK_SIZE,
            CS_COMMAND,
            0,
            types::COMMAND_AMF0,
            stream_id,
            &p,
        );
    }
}

/// What a publisher sends when it does not wait for answers: C0, C1 and
/// C2, then `connect` to `app`, `createStream` and `publish` of `key`, at
/// the default chunk size. For tests and fuzzing, where the server's
/// answers are known.
pub fn scripted_publish(app: &str, key: &str) -> Vec<u8> {
    let mut b = scripted_handshake();
    let command = |b: &mut Vec<u8>, stream_id: u32, values: &[Value]| {
        let mut p = Vec::new();
        for v in values {
            amf0::encode(v, &mut p);
        }
        write_message(b, 128, CS_COMMAND, 0, types::COMMAND_AMF0, stream_id, &p);
    };
    command(
        &mut b,
        0,
        &[
            amf0::string("connect"),
            Value::Number(1.0),
            amf0::object(&[("app", amf0::string(app))]),
        ],
    );
    command(
        &mut b,
        0,
        &[
            amf0::string("createStream"),
            Value::Number(2.0),
            Value::Null,
        ],
    );
    command(
        &mut b,
        1,
        &[
            amf0::string("publish"),
            Value::Number(3.0),
            Value::Null,
            amf0::string(key),
            amf0::string("live"),
        ],
    );
    b
}

/// C0, C1 and C2 of a client that does not wait for S1 (servers do not
/// check C2 against it).
pub fn scripted_handshake() -> Vec<u8> {
    let mut b = vec![VERSION];
    b.extend((0..PACKET).map(|i| (i * 7) as u8));
    b.extend(std::iter::repeat_n(0u8, PACKET));
    b
}

/// FLV tag bodies for generated streams.
pub mod tags {
    /// An AVC sequence header (AVCDecoderConfigurationRecord) of one SPS
    /// and one PPS, with 4-byte NAL lengths.
    pub fn avc_sequence(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut b = vec![0x17, 0, 0, 0, 0];
        b.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xff, 0xe1]);
        b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        b.extend_from_slice(sps);
        b.push(1);
        b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        b.extend_from_slice(pps);
        b
    }

    /// An AVC frame of `nals` (4-byte lengths), with a composition time.
    pub fn avc_frame(keyframe: bool, composition_ms: i32, nals: &[&[u8]]) -> Vec<u8> {
        let c = composition_ms.to_be_bytes();
        let mut b = vec![if keyframe { 0x17 } else { 0x27 }, 1, c[1], c[2], c[3]];
        for n in nals {
            b.extend_from_slice(&(n.len() as u32).to_be_bytes());
            b.extend_from_slice(n);
        }
        b
    }

    /// An AAC sequence header of an AudioSpecificConfig.
    pub fn aac_sequence(asc: &[u8]) -> Vec<u8> {
        let mut b = vec![0xaf, 0];
        b.extend_from_slice(asc);
        b
    }

    /// An AAC frame (a raw access unit).
    pub fn aac_frame(unit: &[u8]) -> Vec<u8> {
        let mut b = vec![0xaf, 1];
        b.extend_from_slice(unit);
        b
    }

    /// The raw access units of an ADTS stream.
    pub fn adts_units(mut adts: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while adts.len() >= 7 && adts[0] == 0xff && adts[1] & 0xf0 == 0xf0 {
            let header = if adts[1] & 1 == 1 { 7 } else { 9 };
            let len = ((usize::from(adts[3]) & 3) << 11)
                | (usize::from(adts[4]) << 3)
                | (usize::from(adts[5]) >> 5);
            if len < header || len > adts.len() {
                break;
            }
            out.push(&adts[header..len]);
            adts = &adts[len..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ServerSession, SessionConfig, SessionEvent};

    #[test]
    fn the_client_publishes_to_the_server_session() {
        let (mut c, hello) = PublishClient::new("live", "cam?token=t");
        let mut s = ServerSession::new(SessionConfig::default(), &[5]);
        let (mut to_server, mut to_client, mut events) = (hello, Vec::new(), Vec::new());
        let mut got = None;
        for _ in 0..10 {
            s.push(&std::mem::take(&mut to_server), &mut to_client, &mut events)
                .unwrap();
            if events
                .iter()
                .any(|e| matches!(e, SessionEvent::PublishRequested { .. }))
                && !s.is_publishing()
            {
                s.accept_publish(&mut to_client);
            }
            if let Some(e) = c
                .push(&std::mem::take(&mut to_client), &mut to_server)
                .unwrap()
            {
                got = Some(e);
            }
        }
        assert_eq!(got, Some(ClientEvent::Published));
        assert_eq!(
            events[0],
            SessionEvent::PublishRequested {
                stream: "cam".into(),
                token: Some("t".into())
            }
        );
        let mut b = Vec::new();
        let body = tags::avc_frame(true, 0, &[&[0x65; 10_000]]);
        c.video(&mut b, 33, &body);
        events.clear();
        s.push(&b, &mut Vec::new(), &mut events).unwrap();
        assert_eq!(
            events,
            vec![SessionEvent::Video {
                timestamp: 33,
                body
            }]
        );
    }

    #[test]
    fn adts_frames_split() {
        let mut adts = Vec::new();
        for len in [10usize, 20] {
            let total = 7 + len;
            adts.extend_from_slice(&[
                0xff,
                0xf1,
                0x50,
                0x80 | ((total >> 11) & 3) as u8,
                ((total >> 3) & 0xff) as u8,
                (((total & 7) << 5) as u8) | 0x1f,
                0xfc,
            ]);
            adts.extend(std::iter::repeat_n(len as u8, len));
        }
        let units = tags::adts_units(&adts);
        assert_eq!(units.len(), 2);
        assert_eq!(units[1], &[20u8; 20][..]);
    }
}
