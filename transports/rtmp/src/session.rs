//! The server side of an RTMP connection that publishes: the handshake,
//! the chunk stream, and the NetConnection/NetStream commands of a
//! publisher (`connect`, `releaseStream`, `FCPublish`, `createStream`,
//! `publish`, `FCUnpublish`, `deleteStream`), with acknowledgements and
//! pings. Sans-IO: bytes in, bytes out, [`SessionEvent`]s up.
//!
//! A `publish` is not accepted here: it becomes
//! [`SessionEvent::PublishRequested`] and waits until the caller decides
//! ([`ServerSession::accept_publish`] or [`ServerSession::refuse_publish`]),
//! so that authorization can happen elsewhere. `play` is refused: corecast
//! ingests RTMP, it does not serve it.

use std::fmt;

use crate::amf0::{self, AmfError, Value};
use crate::chunk::{types, write_message, ChunkError, ChunkReader, Limits, Message};
use crate::handshake::{Handshake, HandshakeError};

/// Chunk stream ids corecast sends on.
const CS_CONTROL: u32 = 2;
const CS_COMMAND: u32 = 3;
const CS_STREAM: u32 = 5;

/// User control events (RTMP 1.0 §7.1.7).
const STREAM_BEGIN: u16 = 0;
const PING_REQUEST: u16 = 6;
const PING_RESPONSE: u16 = 7;

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The chunk stream's bounds once a publish is accepted (before:
    /// [`Limits::before_publish`]).
    pub limits: Limits,
    /// The application name publishers connect to (`rtmp://host/APP/key`).
    pub app: String,
    /// The chunk size corecast sends with.
    pub out_chunk_size: u32,
    /// The acknowledgement window corecast asks the client for.
    pub window: u32,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            limits: Limits::default(),
            app: "live".to_string(),
            out_chunk_size: 4096,
            window: 2_500_000,
        }
    }
}

/// What a session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// `publish` of `stream` (the key without its query); `token` from a
    /// `?token=` query of the key (or of the app). Answer with
    /// [`ServerSession::accept_publish`] or [`ServerSession::refuse_publish`].
    PublishRequested {
        stream: String,
        token: Option<String>,
    },
    /// A `play` request, refused with `NetStream.Play.Failed`.
    PlayRefused { stream: String },
    /// A video message of the published stream (an FLV video tag body).
    Video { timestamp: u32, body: Vec<u8> },
    /// An audio message of the published stream.
    Audio { timestamp: u32, body: Vec<u8> },
    /// `@setDataFrame onMetaData`.
    Metadata(Value),
    /// The publisher stopped (`FCUnpublish`, `deleteStream`, `closeStream`).
    Unpublished,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionError {
    Handshake(HandshakeError),
    Chunk(ChunkError),
    Amf(AmfError),
    /// `connect` to another application.
    WrongApp(String),
    /// Something the protocol does not allow at this point.
    Protocol(&'static str),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Handshake(e) => write!(f, "handshake: {e}"),
            SessionError::Chunk(e) => write!(f, "chunk stream: {e}"),
            SessionError::Amf(e) => write!(f, "command: {e}"),
            SessionError::WrongApp(a) => write!(f, "application {a:?} does not exist"),
            SessionError::Protocol(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SessionError {}

impl SessionError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SessionError::Handshake(_) => "handshake",
            SessionError::Chunk(ChunkError::MessageTooLong(_)) => "message_too_long",
            SessionError::Chunk(ChunkError::BadChunkSize(_)) => "chunk_size",
            SessionError::Chunk(_) => "chunk_stream",
            SessionError::Amf(_) => "amf",
            SessionError::WrongApp(_) => "app",
            SessionError::Protocol(_) => "protocol",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Before `connect`.
    Connecting,
    Connected,
    /// `publish` asked on message stream `stream_id`; waiting for the caller.
    PublishPending {
        stream_id: u32,
        name: String,
    },
    Publishing {
        stream_id: u32,
    },
    /// Refused or unpublished: nothing more is read.
    Ended,
}

/// Counters of one session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes received, handshake included.
    pub bytes_in: u64,
    /// Messages that were not for the published stream or of a type
    /// corecast does not read (shared objects, AMF3 data, aggregates).
    pub messages_ignored: u64,
}

/// One RTMP connection, server side.
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    handshake: Handshake,
    reader: ChunkReader,
    state: State,
    /// Token given in the app's query (`rtmp://h/live?token=…/key`).
    app_token: Option<String>,
    /// The client's acknowledgement window (it sets it); 0 until it does.
    peer_window: u32,
    acked: u64,
    /// The chunk size the client knows corecast sends with.
    chunk_size: u32,
    stats: SessionStats,
}

impl ServerSession {
    /// `random` fills the handshake's S1.
    pub fn new(config: SessionConfig, random: &[u8]) -> ServerSession {
        // Media limits only once a publish is accepted.
        let reader = ChunkReader::new(Limits::before_publish());
        ServerSession {
            config,
            handshake: Handshake::new(random),
            reader,
            state: State::Connecting,
            app_token: None,
            peer_window: 0,
            acked: 0,
            chunk_size: crate::chunk::DEFAULT_CHUNK_SIZE,
            stats: SessionStats::default(),
        }
    }

    pub fn handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing { .. })
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Bytes from the connection. Appends what to send to `out` and what
    /// happened to `events`. After an error the connection must be closed
    /// (what is in `out` may still be sent first: it explains the refusal).
    pub fn push(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        self.stats.bytes_in += input.len() as u64;
        let mut input = input;
        if !self.handshake.is_done() {
            let used = self
                .handshake
                .push(input, out)
                .map_err(SessionError::Handshake)?;
            input = &input[used..];
            if !self.handshake.is_done() {
                return Ok(());
            }
        }
        self.reader.push(input);
        while let Some(m) = self.reader.next_message().map_err(SessionError::Chunk)? {
            if self.state == State::Ended {
                break;
            }
            self.message(m, out, events)?;
        }
        self.acknowledge(out);
        Ok(())
    }

    /// Accepts the pending `publish`: media flows from now on.
    pub fn accept_publish(&mut self, out: &mut Vec<u8>) {
        let State::PublishPending { stream_id, name } = &self.state else {
            return;
        };
        let (stream_id, name) = (*stream_id, name.clone());
        self.reader.set_limits(self.config.limits);
        self.user_control(out, STREAM_BEGIN, stream_id);
        self.on_status(
            out,
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published"),
        );
        self.state = State::Publishing { stream_id };
    }

    /// Refuses the pending `publish` with a NetStream status `code`
    /// (`NetStream.Publish.BadName`, `NetStream.Publish.Denied`, …); the
    /// caller closes the connection once `out` is sent.
    pub fn refuse_publish(&mut self, code: &str, description: &str, out: &mut Vec<u8>) {
        let State::PublishPending { stream_id, .. } = self.state else {
            return;
        };
        self.on_status(out, stream_id, "error", code, description);
        self.state = State::Ended;
    }

    /// Ends a publishing stream with an error status (`NetStream.Publish.Failed`
    /// and why: a codec corecast cannot forward); the caller closes the
    /// connection once `out` is sent.
    pub fn fail_publish(&mut self, code: &str, description: &str, out: &mut Vec<u8>) {
        let State::Publishing { stream_id } = self.state else {
            return;
        };
        self.on_status(out, stream_id, "error", code, description);
        self.state = State::Ended;
    }

    fn message(
        &mut self,
        m: Message,
        out: &mut Vec<u8>,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        match m.type_id {
            types::SET_CHUNK_SIZE | types::ABORT | types::ACKNOWLEDGEMENT => {}
            types::SET_PEER_BANDWIDTH => {}
            types::WINDOW_ACK_SIZE => {
                let v = m.payload.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
                if let Some(v) = v {
                    self.peer_window = u32::from_be_bytes(v);
                }
            }
            types::USER_CONTROL => {
                if let (Some(e), Some(t)) = (m.payload.get(..2), m.payload.get(2..6)) {
                    if u16::from_be_bytes([e[0], e[1]]) == PING_REQUEST {
                        let t = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
                        self.user_control(out, PING_RESPONSE, t);
                    }
                }
            }
            types::COMMAND_AMF0 => self.command(&m, &m.payload, out, events)?,
            // An AMF3 command message starts with a format byte, then AMF0.
            types::COMMAND_AMF3 => {
                let body = m.payload.get(1..).unwrap_or(&[]);
                self.command(&m, body, out, events)?
            }
            types::AUDIO | types::VIDEO | types::DATA_AMF0 => {
                let publishing = match self.state {
                    State::Publishing { stream_id } => stream_id == m.stream_id,
                    _ => false,
                };
                if !publishing {
                    self.stats.messages_ignored += 1;
                    return Ok(());
                }
                match m.type_id {
                    types::AUDIO => events.push(SessionEvent::Audio {
                        timestamp: m.timestamp,
                        body: m.payload,
                    }),
                    types::VIDEO => events.push(SessionEvent::Video {
                        timestamp: m.timestamp,
                        body: m.payload,
                    }),
                    _ => self.data(&m.payload, events),
                }
            }
            _ => self.stats.messages_ignored += 1,
        }
        Ok(())
    }

    fn data(&mut self, payload: &[u8], events: &mut Vec<SessionEvent>) {
        let Ok(values) = amf0::decode_all(payload) else {
            self.stats.messages_ignored += 1;
            return;
        };
        let mut it = values.into_iter();
        let mut name = it.next();
        if name.as_ref().and_then(Value::as_str) == Some("@setDataFrame") {
            name = it.next();
        }
        if name.as_ref().and_then(Value::as_str) == Some("onMetaData") {
            if let Some(v) = it.next() {
                events.push(SessionEvent::Metadata(v));
            }
        }
    }

    fn command(
        &mut self,
        m: &Message,
        body: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        let values = amf0::decode_all(body).map_err(SessionError::Amf)?;
        let Some(name) = values.first().and_then(Value::as_str) else {
            return Err(SessionError::Protocol("a command without a name"));
        };
        let txn = values.get(1).and_then(Value::as_number).unwrap_or(0.0);
        let arg = |i: usize| values.get(i);
        match name {
            "connect" => {
                if self.state != State::Connecting {
                    return Err(SessionError::Protocol("connect sent twice"));
                }
                let app = arg(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if app.len() > MAX_NAME {
                    return Err(SessionError::Protocol("application name too long"));
                }
                let (app, query) = split_query(app);
                let app = app.trim_end_matches('/');
                if app != self.config.app {
                    self.command_reply(
                        out,
                        "_error",
                        txn,
                        Value::Null,
                        status(
                            "error",
                            "NetConnection.Connect.Rejected",
                            &format!(
                                "no application {:?}: publish to /{}/",
                                shown(app),
                                self.config.app
                            ),
                        ),
                    );
                    return Err(SessionError::WrongApp(shown(app).to_string()));
                }
                self.app_token = query.and_then(token_of);
                self.window_ack_size(out);
                self.set_peer_bandwidth(out);
                let size = self.config.out_chunk_size;
                let mut p = Vec::new();
                p.extend_from_slice(&size.to_be_bytes());
                self.send(out, CS_CONTROL, 0, types::SET_CHUNK_SIZE, &p);
                self.chunk_size = size.clamp(1, crate::chunk::MAX_CHUNK_SIZE);
                let props = amf0::object(&[
                    ("fmsVer", amf0::string("FMS/3,0,1,123")),
                    ("capabilities", Value::Number(31.0)),
                ]);
                let mut info = status(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                );
                if let Value::Object(o) = &mut info {
                    o.push(("objectEncoding".into(), Value::Number(0.0)));
                }
                self.command_reply(out, "_result", txn, props, info);
                self.state = State::Connected;
            }
            "createStream" => {
                self.require_connected()?;
                self.command_reply(out, "_result", txn, Value::Null, Value::Number(1.0));
            }
            "releaseStream" | "FCPublish" | "getStreamLength" => {
                self.require_connected()?;
                self.command_reply(out, "_result", txn, Value::Null, Value::Undefined);
            }
            "publish" => {
                self.require_connected()?;
                if self.state != State::Connected {
                    return Err(SessionError::Protocol("publish sent twice"));
                }
                let key = arg(3).and_then(Value::as_str).unwrap_or("");
                if key.len() > MAX_NAME {
                    return Err(SessionError::Protocol("stream key too long"));
                }
                let (stream, query) = split_query(key);
                let token = query.and_then(token_of).or_else(|| self.app_token.clone());
                self.state = State::PublishPending {
                    stream_id: m.stream_id,
                    name: stream.to_string(),
                };
                events.push(SessionEvent::PublishRequested {
                    stream: stream.to_string(),
                    token,
                });
            }
            "play" => {
                self.require_connected()?;
                let key = arg(3).and_then(Value::as_str).unwrap_or("");
                let (stream, _) = split_query(shown(key));
                self.on_status(
                    out,
                    m.stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    &format!("corecast does not play RTMP: watch {stream} over WHEP"),
                );
                events.push(SessionEvent::PlayRefused {
                    stream: stream.to_string(),
                });
                self.state = State::Ended;
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if self.is_publishing() {
                    events.push(SessionEvent::Unpublished);
                    self.state = State::Ended;
                }
            }
            _ => self.stats.messages_ignored += 1,
        }
        Ok(())
    }

    fn require_connected(&self) -> Result<(), SessionError> {
        if self.state == State::Connecting {
            return Err(SessionError::Protocol("a command before connect"));
        }
        Ok(())
    }

    /// Acknowledges what was received once a window's worth arrived.
    fn acknowledge(&mut self, out: &mut Vec<u8>) {
        let w = u64::from(self.peer_window);
        if w == 0 || self.stats.bytes_in - self.acked < w {
            return;
        }
        self.acked = self.stats.bytes_in;
        let seq = (self.stats.bytes_in as u32).to_be_bytes();
        self.send(out, CS_CONTROL, 0, types::ACKNOWLEDGEMENT, &seq);
    }

    fn window_ack_size(&self, out: &mut Vec<u8>) {
        let w = self.config.window.to_be_bytes();
        self.send(out, CS_CONTROL, 0, types::WINDOW_ACK_SIZE, &w);
    }

    fn set_peer_bandwidth(&self, out: &mut Vec<u8>) {
        let mut p = self.config.window.to_be_bytes().to_vec();
        // Dynamic limit.
        p.push(2);
        self.send(out, CS_CONTROL, 0, types::SET_PEER_BANDWIDTH, &p);
    }

    fn user_control(&self, out: &mut Vec<u8>, event: u16, value: u32) {
        let mut p = event.to_be_bytes().to_vec();
        p.extend_from_slice(&value.to_be_bytes());
        self.send(out, CS_CONTROL, 0, types::USER_CONTROL, &p);
    }

    fn command_reply(&self, out: &mut Vec<u8>, name: &str, txn: f64, a: Value, b: Value) {
        let mut p = Vec::new();
        for v in [amf0::string(name), Value::Number(txn), a, b] {
            amf0::encode(&v, &mut p);
        }
        self.send(out, CS_COMMAND, 0, types::COMMAND_AMF0, &p);
    }

    fn on_status(&self, out: &mut Vec<u8>, stream_id: u32, level: &str, code: &str, desc: &str) {
        let mut p = Vec::new();
        for v in [
            amf0::string("onStatus"),
            Value::Number(0.0),
            Value::Null,
            status(level, code, desc),
        ] {
            amf0::encode(&v, &mut p);
        }
        self.send(out, CS_STREAM, stream_id, types::COMMAND_AMF0, &p);
    }

    fn send(&self, out: &mut Vec<u8>, cs: u32, stream_id: u32, type_id: u8, payload: &[u8]) {
        write_message(out, self.chunk_size, cs, 0, type_id, stream_id, payload);
    }
}

fn status(level: &str, code: &str, description: &str) -> Value {
    amf0::object(&[
        ("level", amf0::string(level)),
        ("code", amf0::string(code)),
        ("description", amf0::string(description)),
    ])
}

/// The longest application name or stream key read (a key carries its
/// token: a JWT of a few hundred bytes); longer ones end the connection.
pub const MAX_NAME: usize = 4096;

/// At most the first 64 characters of a peer's string, for replies and
/// logs.
fn shown(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `name?query` → (`name`, `query`).
fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (s, None),
    }
}

/// The `token` parameter of a query.
fn token_of(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunk::DEFAULT_CHUNK_SIZE;
    use crate::handshake::PACKET;

    /// A minimal publishing client, for tests: bytes it sends.
    pub(crate) struct TestClient {
        pub chunk_size: u32,
    }

    impl TestClient {
        pub fn handshake() -> Vec<u8> {
            crate::client::scripted_handshake()
        }

        pub fn command(&self, out: &mut Vec<u8>, stream_id: u32, values: &[Value]) {
            let mut p = Vec::new();
            for v in values {
                amf0::encode(v, &mut p);
            }
            let size = self.chunk_size;
            write_message(out, size, 3, 0, types::COMMAND_AMF0, stream_id, &p);
        }

        /// Handshake, connect, createStream, publish `key`.
        pub fn publish(&self, app: &str, key: &str) -> Vec<u8> {
            crate::client::scripted_publish(app, key)
        }
    }

    /// Reads the messages a server sent (after its 3073 handshake bytes).
    pub(crate) fn server_messages(bytes: &[u8]) -> Vec<Message> {
        let mut r = ChunkReader::new(Limits::default());
        r.push(&bytes[1 + 2 * PACKET..]);
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    fn command_names(msgs: &[Message]) -> Vec<String> {
        msgs.iter()
            .filter(|m| m.type_id == types::COMMAND_AMF0)
            .map(|m| {
                let v = amf0::decode_all(&m.payload).unwrap();
                let code = v
                    .get(3)
                    .and_then(|o| o.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                format!("{} {code}", v[0].as_str().unwrap_or("?"))
            })
            .collect()
    }

    #[test]
    fn a_publisher_connects_publishes_and_sends_media() {
        let c = TestClient {
            chunk_size: DEFAULT_CHUNK_SIZE,
        };
        let mut s = ServerSession::new(SessionConfig::default(), &[1, 2, 3]);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        let bytes = c.publish("live", "cam1?token=abc&x=1");
        // In small pieces, as TCP may deliver them.
        for piece in bytes.chunks(100) {
            s.push(piece, &mut out, &mut ev).unwrap();
        }
        assert_eq!(
            ev,
            vec![SessionEvent::PublishRequested {
                stream: "cam1".into(),
                token: Some("abc".into())
            }]
        );
        assert!(!s.is_publishing());
        s.accept_publish(&mut out);
        assert!(s.is_publishing());
        let msgs = server_messages(&out);
        assert_eq!(
            command_names(&msgs),
            vec![
                "_result NetConnection.Connect.Success",
                "_result ",
                "onStatus NetStream.Publish.Start"
            ]
        );
        // Window, bandwidth, chunk size, then user control StreamBegin 1.
        let types: Vec<u8> = msgs.iter().map(|m| m.type_id).collect();
        assert_eq!(&types[..3], &[5, 6, 1]);
        assert!(msgs
            .iter()
            .any(|m| m.type_id == 4 && m.payload == [0, 0, 0, 0, 0, 1]));
        // Media on the published stream comes up; on another stream not.
        let mut b = Vec::new();
        write_message(&mut b, 128, 6, 40, types::VIDEO, 1, &[0x17, 1, 0, 0, 0]);
        write_message(&mut b, 128, 4, 42, types::AUDIO, 1, &[0xaf, 1, 9]);
        write_message(&mut b, 128, 4, 43, types::AUDIO, 7, &[0xaf, 1, 9]);
        ev.clear();
        s.push(&b, &mut out, &mut ev).unwrap();
        assert_eq!(
            ev,
            vec![
                SessionEvent::Video {
                    timestamp: 40,
                    body: vec![0x17, 1, 0, 0, 0]
                },
                SessionEvent::Audio {
                    timestamp: 42,
                    body: vec![0xaf, 1, 9]
                }
            ]
        );
        assert_eq!(s.stats().messages_ignored, 1);
        // Unpublish.
        let mut b = Vec::new();
        c.command(
            &mut b,
            0,
            &[
                amf0::string("deleteStream"),
                Value::Number(4.0),
                Value::Null,
                Value::Number(1.0),
            ],
        );
        ev.clear();
        s.push(&b, &mut out, &mut ev).unwrap();
        assert_eq!(ev, vec![SessionEvent::Unpublished]);
    }

    #[test]
    fn media_limits_apply_only_once_a_publish_is_accepted() {
        let c = TestClient { chunk_size: 128 };
        let big = vec![0u8; 100_000];
        // Before: a 100 kB message (more than a command needs) is refused.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let mut b = TestClient::handshake();
        write_message(&mut b, 128, 6, 0, types::VIDEO, 1, &big);
        let r = s.push(&b, &mut Vec::new(), &mut Vec::new());
        assert!(matches!(
            r,
            Err(SessionError::Chunk(
                crate::chunk::ChunkError::MessageTooLong(_)
            ))
        ));
        // After: it is media.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        s.push(&c.publish("live", "k"), &mut out, &mut ev).unwrap();
        s.accept_publish(&mut out);
        let mut b = Vec::new();
        write_message(&mut b, 128, 6, 0, types::VIDEO, 1, &big);
        ev.clear();
        s.push(&b, &mut out, &mut ev).unwrap();
        assert!(matches!(&ev[..], [SessionEvent::Video { body, .. }] if body.len() == big.len()));
        // Names longer than MAX_NAME end the connection, unechoed.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let long = "a".repeat(MAX_NAME + 1);
        let r = s.push(&c.publish(&long, "k"), &mut Vec::new(), &mut Vec::new());
        assert_eq!(r, Err(SessionError::Protocol("application name too long")));
    }

    #[test]
    fn refusals_say_why() {
        let c = TestClient { chunk_size: 128 };
        // Wrong app: _error, then an error.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        let r = s.push(&c.publish("vod", "k"), &mut out, &mut ev);
        assert_eq!(r, Err(SessionError::WrongApp("vod".into())));
        assert_eq!(
            command_names(&server_messages(&out)),
            vec!["_error NetConnection.Connect.Rejected"]
        );
        // A refused publish.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let mut out = Vec::new();
        s.push(&c.publish("live/", "k"), &mut out, &mut ev).unwrap();
        s.refuse_publish("NetStream.Publish.Denied", "no", &mut out);
        assert!(command_names(&server_messages(&out))
            .last()
            .unwrap()
            .ends_with("NetStream.Publish.Denied"));
        // Play.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        let mut b = TestClient::handshake();
        c.command(
            &mut b,
            0,
            &[
                amf0::string("connect"),
                Value::Number(1.0),
                amf0::object(&[("app", amf0::string("live"))]),
            ],
        );
        c.command(
            &mut b,
            1,
            &[
                amf0::string("play"),
                Value::Number(0.0),
                Value::Null,
                amf0::string("s"),
            ],
        );
        s.push(&b, &mut out, &mut ev).unwrap();
        assert_eq!(ev, vec![SessionEvent::PlayRefused { stream: "s".into() }]);
        assert!(command_names(&server_messages(&out))
            .last()
            .unwrap()
            .ends_with("NetStream.Play.Failed"));
        // Commands before connect.
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let mut b = TestClient::handshake();
        c.command(
            &mut b,
            0,
            &[amf0::string("createStream"), Value::Number(2.0)],
        );
        assert!(s.push(&b, &mut Vec::new(), &mut ev).is_err());
    }

    #[test]
    fn pings_are_answered_and_windows_acknowledged() {
        let c = TestClient { chunk_size: 128 };
        let mut s = ServerSession::new(SessionConfig::default(), &[]);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        let mut b = c.publish("live", "k");
        write_message(
            &mut b,
            128,
            2,
            0,
            types::WINDOW_ACK_SIZE,
            0,
            &5000u32.to_be_bytes(),
        );
        write_message(
            &mut b,
            128,
            2,
            0,
            types::USER_CONTROL,
            0,
            &[0, 6, 0, 0, 1, 2],
        );
        s.push(&b, &mut out, &mut ev).unwrap();
        let msgs = server_messages(&out);
        assert!(msgs
            .iter()
            .any(|m| m.type_id == 4 && m.payload == [0, 7, 0, 0, 1, 2]));
        // 3073 handshake bytes and the commands exceed 5000? Not yet:
        // push more until a window's worth arrived.
        s.accept_publish(&mut out);
        let mut b = Vec::new();
        write_message(&mut b, 128, 6, 0, types::VIDEO, 1, &[0u8; 3000]);
        s.push(&b, &mut out, &mut ev).unwrap();
        let acks: Vec<Message> = server_messages(&out)
            .into_iter()
            .filter(|m| m.type_id == types::ACKNOWLEDGEMENT)
            .collect();
        assert_eq!(acks.len(), 1);
        let n = u32::from_be_bytes(acks[0].payload[..4].try_into().unwrap());
        assert_eq!(u64::from(n), s.stats().bytes_in);
    }
}
