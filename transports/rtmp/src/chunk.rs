//! The RTMP chunk stream: messages cut into chunks of at most the peer's
//! chunk size, interleaved across chunk streams, with compressed headers.
//!
//! [`ChunkReader`] reassembles messages per chunk stream (so audio and video
//! chunks may interleave freely) and is bounded everywhere a peer could make
//! it grow: the message length ([`Limits::max_message`]), the bytes of
//! partial messages across all chunk streams ([`Limits::max_partial`]), the
//! number of chunk streams ([`Limits::max_chunk_streams`]). Set Chunk Size
//! and Abort are applied by the reader itself, before the next chunk is
//! parsed, as the protocol requires. [`write_message`] cuts outgoing
//! messages.

use std::collections::HashMap;
use std::fmt;

/// Protocol control message types (RTMP 1.0 §5.4) and the others corecast reads.
pub mod types {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// The chunk size every connection starts with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size the protocol allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;
/// A 24-bit timestamp field with this value means a 32-bit extended
/// timestamp follows.
const EXTENDED: u32 = 0x00ff_ffff;

/// Bounds of one reader.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest message accepted.
    pub max_message: u32,
    /// Bytes of incomplete messages held across all chunk streams.
    pub max_partial: usize,
    /// Chunk streams with state, at most.
    pub max_chunk_streams: usize,
}

impl Limits {
    /// Before a publish is admitted: commands only, no media.
    pub fn before_publish() -> Limits {
        Limits {
            max_message: 64 << 10,
            max_partial: 256 << 10,
            max_chunk_streams: 16,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // An I-frame of a 4K stream at a high bitrate fits.
            max_message: 8 << 20,
            max_partial: 16 << 20,
            max_chunk_streams: 64,
        }
    }
}

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub chunk_stream: u32,
    /// Milliseconds (32 bits, wrapping).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

/// Why the chunk stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk continues (or compresses its header against) a chunk stream
    /// that has no earlier message.
    NoPreviousHeader(u32),
    /// A message longer than [`Limits::max_message`].
    MessageTooLong(u32),
    /// Partial messages would hold more than [`Limits::max_partial`].
    TooMuchPartial,
    /// More chunk streams than [`Limits::max_chunk_streams`].
    TooManyChunkStreams,
    /// Set Chunk Size of 0 or with the top bit set.
    BadChunkSize(u32),
    /// A new message header on a chunk stream whose message is incomplete.
    Interrupted(u32),
    /// A protocol control message of the wrong length.
    BadControl(u8),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::NoPreviousHeader(cs) => {
                write!(f, "chunk stream {cs} continues a message it never started")
            }
            ChunkError::MessageTooLong(n) => write!(f, "message of {n} bytes is over the limit"),
            ChunkError::TooMuchPartial => f.write_str("too many bytes of incomplete messages"),
            ChunkError::TooManyChunkStreams => f.write_str("too many chunk streams"),
            ChunkError::BadChunkSize(n) => write!(f, "invalid chunk size {n}"),
            ChunkError::Interrupted(cs) => {
                write!(
                    f,
                    "chunk stream {cs} started a message before ending the last"
                )
            }
            ChunkError::BadControl(t) => write!(f, "protocol control message {t} malformed"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// What a chunk stream remembers for header compression.
#[derive(Debug, Default, Clone, Copy)]
struct Header {
    timestamp: u32,
    /// The last timestamp field (a delta, or the absolute time of a type 0
    /// header): a type 3 header that starts a message adds it again.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last header carried an extended timestamp.
    extended: bool,
    /// Whether any header was seen (type 1-3 need one).
    started: bool,
}

/// One chunk stream: its last header and the message being reassembled
/// (extended in place, chunk by chunk: never copied).
#[derive(Debug, Default)]
struct StreamState {
    header: Header,
    partial: Vec<u8>,
}

/// Reads chunks into messages. Sans-IO: give it bytes with
/// [`ChunkReader::push`], take messages with [`ChunkReader::next_message`].
#[derive(Debug)]
pub struct ChunkReader {
    limits: Limits,
    chunk_size: u32,
    buf: Vec<u8>,
    pos: usize,
    streams: HashMap<u32, StreamState>,
    partial_bytes: usize,
}

impl ChunkReader {
    pub fn new(limits: Limits) -> ChunkReader {
        ChunkReader {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            buf: Vec::new(),
            pos: 0,
            streams: HashMap::new(),
            partial_bytes: 0,
        }
    }

    /// Other bounds from now on (tighter ones apply to what arrives next;
    /// what is held already stays).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes received and not parsed yet (at most one chunk's worth plus
    /// the last push).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    /// After an error the connection cannot be read on.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some((consumed, done)) = self.chunk()? else {
                return Ok(None);
            };
            self.pos += consumed;
            if let Some(m) = done {
                self.control(&m)?;
                return Ok(Some(m));
            }
        }
    }

    /// Applies Set Chunk Size and Abort.
    fn control(&mut self, m: &Message) -> Result<(), ChunkError> {
        match m.type_id {
            types::SET_CHUNK_SIZE => {
                let v = be32(&m.payload).ok_or(ChunkError::BadControl(m.type_id))?;
                if v == 0 || v > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(v));
                }
                self.chunk_size = v;
            }
            types::ABORT => {
                let cs = be32(&m.payload).ok_or(ChunkError::BadControl(m.type_id))?;
                if let Some(s) = self.streams.get_mut(&cs) {
                    if !s.partial.is_empty() {
                        self.partial_bytes =
                            self.partial_bytes.saturating_sub(s.header.length as usize);
                        s.partial = Vec::new();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Parses one chunk at `pos`: `None` when it is not all here yet, else
    /// its length and the message it completes.
    fn chunk(&mut self) -> Result<Option<(usize, Option<Message>)>, ChunkError> {
        let b = &self.buf[self.pos..];
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (cs, mut at) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&lo), Some(&hi)) => (64 + u32::from(lo) + 256 * u32::from(hi), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(h) = b.get(at..at + header_len) else {
            return Ok(None);
        };
        at += header_len;
        if !self.streams.contains_key(&cs) {
            if fmt != 0 {
                return Err(ChunkError::NoPreviousHeader(cs));
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(ChunkError::TooManyChunkStreams);
            }
        }
        let (prev, have) = self
            .streams
            .get(&cs)
            .map(|s| (s.header, s.partial.len()))
            .unwrap_or_default();
        if fmt != 0 && !prev.started {
            return Err(ChunkError::NoPreviousHeader(cs));
        }
        let continuing = have > 0;
        if continuing && fmt != 3 {
            return Err(ChunkError::Interrupted(cs));
        }
        let mut next = Header {
            started: true,
            ..prev
        };
        // The 24-bit timestamp (or delta) field, where the header has one.
        let field = if fmt <= 2 { Some(be24(&h[0..3])) } else { None };
        if fmt <= 1 {
            next.length = be24(&h[3..6]);
            next.type_id = h[6];
            if next.length > self.limits.max_message {
                return Err(ChunkError::MessageTooLong(next.length));
            }
        }
        if fmt == 0 {
            next.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        }
        let extended = match field {
            Some(f) => f == EXTENDED,
            // Type 3 repeats the extended field if the stream's last
            // header had one.
            None => prev.extended,
        };
        let ext_value = if extended {
            let Some(e) = b.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some(be32(e).unwrap_or(0))
        } else {
            None
        };
        next.extended = extended;
        if !continuing {
            // A new message: its timestamp.
            let value = ext_value.or(field).unwrap_or(prev.delta);
            match fmt {
                0 => {
                    next.timestamp = value;
                    next.delta = value;
                }
                1 | 2 => {
                    next.timestamp = prev.timestamp.wrapping_add(value);
                    next.delta = value;
                }
                _ => {
                    let d = ext_value.unwrap_or(prev.delta);
                    next.timestamp = prev.timestamp.wrapping_add(d);
                }
            }
        }
        let remaining = next.length as usize - have.min(next.length as usize);
        let take = remaining.min(self.chunk_size as usize);
        let Some(data) = b.get(at..at + take) else {
            return Ok(None);
        };
        at += take;
        // Only now is the chunk all here: commit.
        if have == 0 && take < remaining {
            if self.partial_bytes + next.length as usize > self.limits.max_partial {
                return Err(ChunkError::TooMuchPartial);
            }
            self.partial_bytes += next.length as usize;
        }
        let stream = self.streams.entry(cs).or_default();
        stream.header = next;
        if have == 0 && take < remaining {
            stream.partial.reserve_exact(next.length as usize);
        }
        stream.partial.extend_from_slice(data);
        let done = if stream.partial.len() >= next.length as usize {
            if have > 0 || take < remaining {
                self.partial_bytes = self.partial_bytes.saturating_sub(next.length as usize);
            }
            Some(Message {
                chunk_stream: cs,
                timestamp: next.timestamp,
                type_id: next.type_id,
                stream_id: next.stream_id,
                payload: std::mem::take(&mut stream.partial),
            })
        } else {
            None
        };
        Ok(Some((at, done)))
    }
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

fn be32(b: &[u8]) -> Option<u32> {
    let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Appends `payload` as one message on chunk stream `cs` (3..=65599), cut
/// into chunks of `chunk_size`: a type 0 header, then type 3 headers.
pub fn write_message(
    out: &mut Vec<u8>,
    chunk_size: u32,
    cs: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
) {
    let chunk_size = chunk_size.max(1) as usize;
    let extended = timestamp >= EXTENDED;
    let basic = |out: &mut Vec<u8>, fmt: u8| match cs {
        2..=63 => out.push((fmt << 6) | cs as u8),
        64..=319 => out.extend_from_slice(&[fmt << 6, (cs - 64) as u8]),
        _ => {
            let v = cs.saturating_sub(64).min(0xffff) as u16;
            out.push((fmt << 6) | 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    basic(out, 0);
    let field = if extended { EXTENDED } else { timestamp };
    out.extend_from_slice(&field.to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    let mut chunks = payload.chunks(chunk_size);
    if let Some(c) = chunks.next() {
        out.extend_from_slice(c);
    }
    for c in chunks {
        basic(out, 3);
        if extended {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        out.extend_from_slice(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(cs: u32, ts: u32, type_id: u8, len: usize, seed: u8) -> Message {
        Message {
            chunk_stream: cs,
            timestamp: ts,
            type_id,
            stream_id: 1,
            payload: (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect(),
        }
    }

    fn write(out: &mut Vec<u8>, chunk_size: u32, m: &Message) {
        write_message(
            out,
            chunk_size,
            m.chunk_stream,
            m.timestamp,
            m.type_id,
            m.stream_id,
            &m.payload,
        );
    }

    fn read_all(r: &mut ChunkReader, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut got = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            r.push(piece);
            while let Some(m) = r.next_message().unwrap() {
                got.push(m);
            }
        }
        got
    }

    fn set_chunk_size(n: u32) -> Message {
        Message {
            chunk_stream: 2,
            timestamp: 0,
            type_id: types::SET_CHUNK_SIZE,
            stream_id: 0,
            payload: n.to_be_bytes().to_vec(),
        }
    }

    #[test]
    fn messages_round_trip_at_every_chunk_size_and_any_read_size() {
        let sizes = [
            1u32,
            2,
            3,
            127,
            128,
            129,
            1000,
            4096,
            65_536,
            MAX_CHUNK_SIZE,
        ];
        for &cs in &sizes {
            let mut bytes = Vec::new();
            let mut sent = Vec::new();
            if cs != DEFAULT_CHUNK_SIZE {
                let m = set_chunk_size(cs);
                write(&mut bytes, DEFAULT_CHUNK_SIZE, &m);
                sent.push(m);
            }
            for (i, len) in [0usize, 1, 127, 128, 129, 5000, 70_000].iter().enumerate() {
                let m = msg(6, 1000 + i as u32 * 33, types::VIDEO, *len, i as u8);
                write(&mut bytes, cs, &m);
                sent.push(m);
            }
            for step in [1, 7, 4096, usize::MAX] {
                let mut r = ChunkReader::new(Limits::default());
                assert_eq!(
                    read_all(&mut r, &bytes, step),
                    sent,
                    "chunk size {cs}, step {step}"
                );
                assert_eq!(r.buffered(), 0);
            }
        }
    }

    #[test]
    fn interleaved_chunk_streams_reassemble_separately() {
        // Audio (cs 4) and video (cs 6) messages cut into 128-byte chunks
        // and interleaved chunk by chunk, as the protocol allows.
        let a = msg(4, 20, types::AUDIO, 300, 1);
        let v = msg(6, 33, types::VIDEO, 1000, 2);
        let (mut ab, mut vb) = (Vec::new(), Vec::new());
        write(&mut ab, 128, &a);
        write(&mut vb, 128, &v);
        // Split each into its chunks: first 12 + 128 bytes, then 1 + 128.
        let split = |b: &[u8]| {
            let mut out = vec![b[..140.min(b.len())].to_vec()];
            let mut rest = &b[140.min(b.len())..];
            while !rest.is_empty() {
                let n = 129.min(rest.len());
                out.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            out
        };
        let (ac, vc) = (split(&ab), split(&vb));
        let mut bytes = Vec::new();
        for i in 0..ac.len().max(vc.len()) {
            if let Some(c) = vc.get(i) {
                bytes.extend_from_slice(c);
            }
            if let Some(c) = ac.get(i) {
                bytes.extend_from_slice(c);
            }
        }
        let mut r = ChunkReader::new(Limits::default());
        let got = read_all(&mut r, &bytes, 50);
        assert_eq!(got, vec![a, v]);
    }

    #[test]
    fn compressed_headers_carry_deltas() {
        // Type 0 at 1000, type 2 delta 40, type 3 (same delta) for the next.
        let mut b = Vec::new();
        b.extend_from_slice(&[0x04, 0, 3, 0xe8, 0, 0, 2, 8, 1, 0, 0, 0, 0xaa, 0xbb]);
        b.extend_from_slice(&[0x84, 0, 0, 40, 0xcc, 0xdd]);
        b.extend_from_slice(&[0xc4, 0xee, 0xff]);
        // Type 1: new length and type, delta 10.
        b.extend_from_slice(&[0x44, 0, 0, 10, 0, 0, 1, 9, 0x11]);
        let mut r = ChunkReader::new(Limits::default());
        let got = read_all(&mut r, &b, 1);
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![1000, 1040, 1080, 1090]);
        assert_eq!(got[3].type_id, types::VIDEO);
        assert_eq!(got[3].payload, vec![0x11]);
        assert!(got.iter().all(|m| m.stream_id == 1));
    }

    #[test]
    fn extended_timestamps_round_trip_and_repeat_on_continuations() {
        let m = msg(5, 0x0100_0000, types::AUDIO, 300, 3);
        let mut b = Vec::new();
        write(&mut b, 128, &m);
        let mut r = ChunkReader::new(Limits::default());
        assert_eq!(read_all(&mut r, &b, 3), vec![m]);
    }

    #[test]
    fn bad_chunk_sizes_and_limits_are_errors() {
        for bad in [0u32, 0x8000_0000] {
            let mut b = Vec::new();
            write(&mut b, 128, &set_chunk_size(bad));
            let mut r = ChunkReader::new(Limits::default());
            r.push(&b);
            assert_eq!(r.next_message(), Err(ChunkError::BadChunkSize(bad)));
        }
        // A message length beyond the limit is refused at its header.
        let mut r = ChunkReader::new(Limits {
            max_message: 1000,
            ..Limits::default()
        });
        r.push(&[0x06, 0, 0, 0, 0, 0x10, 0, 9, 1, 0, 0, 0]);
        assert_eq!(r.next_message(), Err(ChunkError::MessageTooLong(4096)));
        // A continuation on a chunk stream never started.
        let mut r = ChunkReader::new(Limits::default());
        r.push(&[0xc7, 1, 2, 3]);
        assert_eq!(r.next_message(), Err(ChunkError::NoPreviousHeader(7)));
        // Many chunk streams each holding a partial message.
        let mut r = ChunkReader::new(Limits {
            max_partial: 10_000,
            ..Limits::default()
        });
        let mut b = Vec::new();
        for cs in 3..40u8 {
            b.extend_from_slice(&[cs, 0, 0, 0, 0, 0x0f, 0xff, 9, 1, 0, 0, 0]);
            b.extend_from_slice(&[0u8; 128]);
        }
        r.push(&b);
        assert_eq!(r.next_message(), Err(ChunkError::TooMuchPartial));
        let mut r = ChunkReader::new(Limits::default());
        let mut b = Vec::new();
        for cs in 3..63u8 {
            b.extend_from_slice(&[cs, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0]);
        }
        for i in 0..10u8 {
            b.extend_from_slice(&[0, i, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0]);
        }
        r.push(&b);
        let mut err = None;
        loop {
            match r.next_message() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(ChunkError::TooManyChunkStreams));
    }

    #[test]
    fn a_large_message_in_one_byte_chunks_is_assembled_in_place() {
        // 8 MiB at chunk size 1: 8 Mi chunks. Copying the partial message
        // per chunk (as a reader that clones its state would) makes this
        // 32 TiB of memcpy; assembling in place makes it linear.
        let mut b = Vec::new();
        write(&mut b, 128, &set_chunk_size(1));
        let m = msg(6, 7, types::VIDEO, 8 << 20, 5);
        write(&mut b, 1, &m);
        let mut r = ChunkReader::new(Limits::default());
        let got = read_all(&mut r, &b, 16 * 1024);
        assert_eq!(got.len(), 2);
        assert!(got[1] == m);
        assert_eq!(r.partial_bytes, 0);
    }

    #[test]
    fn abort_drops_a_partial_message() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x06, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]);
        b.extend_from_slice(&[7u8; 128]);
        let abort = Message {
            chunk_stream: 2,
            timestamp: 0,
            type_id: types::ABORT,
            stream_id: 0,
            payload: 6u32.to_be_bytes().to_vec(),
        };
        write(&mut b, 128, &abort);
        let m = msg(6, 5, types::VIDEO, 10, 9);
        write(&mut b, 128, &m);
        let mut r = ChunkReader::new(Limits::default());
        let got = read_all(&mut r, &b, 1000);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], m);
        assert_eq!(r.partial_bytes, 0);
    }
}
