//! A WebTransport session's streams on an HTTP/3 connection (what browsers
//! connect with): every stream of the session starts with a header naming
//! it, 0x54 (unidirectional) or 0x41 (bidirectional) and the session id,
//! which is the id of the CONNECT request's stream. Streams with other
//! headers are HTTP/3's own (control, QPACK): left open and unread, as a
//! side that uses no dynamic table may; any other is refused. Stream error codes travel in HTTP/3's
//! space for WebTransport, and datagrams start with the session's quarter
//! stream id.
//!
//! [`h3`](crate::h3) sets the session up; from then on
//! [`transport`](crate::transport) reads its streams through
//! [`Shared::poll_wt_accept`].

use std::collections::VecDeque;
use std::task::Waker;

use bytes::{BufMut, Bytes, BytesMut};
use quinn_proto::{Dir, ReadError, ReadableError, StreamId, VarInt};

use crate::wakers::Shared;

/// The header type of a WebTransport unidirectional stream.
pub const UNI_STREAM: u64 = 0x54;
/// The header type of a WebTransport bidirectional stream.
pub const BI_STREAM: u64 = 0x41;
/// HTTP/3 stream types a peer opens for itself: control, QPACK encoder
/// and decoder.
const H3_OWN_STREAMS: [u64; 3] = [0x00, 0x02, 0x03];
/// H3_STREAM_CREATION_ERROR: a stream of a type this side does not take.
const STREAM_CREATION_ERROR: u32 = 0x103;
/// H3_ID_ERROR: a stream for a session that is not this one.
const ID_ERROR: u32 = 0x108;

/// What a stream's first bytes say it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// This many more bytes are needed to know.
    More(usize),
    /// A WebTransport stream of session `0`, its header `1` bytes long.
    Session(u64, usize),
    /// Some other stream type.
    Other(u64),
}

/// Reads a QUIC varint at the front of `buf`: its value and length, or
/// `Err(n)` when `n` more bytes are needed.
fn varint(buf: &[u8]) -> Result<(u64, usize), usize> {
    let Some(&first) = buf.first() else {
        return Err(1);
    };
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return Err(len - buf.len());
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    Ok((v, len))
}

/// Classifies a stream of direction `dir` by its first bytes.
pub fn header(buf: &[u8], dir: Dir) -> Header {
    let (kind, n) = match varint(buf) {
        Ok(v) => v,
        Err(more) => return Header::More(more),
    };
    let expected = match dir {
        Dir::Uni => UNI_STREAM,
        Dir::Bi => BI_STREAM,
    };
    if kind != expected {
        return Header::Other(kind);
    }
    match varint(&buf[n..]) {
        Ok((session, m)) => Header::Session(session, n + m),
        Err(more) => Header::More(more),
    }
}

/// The header that starts a stream this side opens in `session`.
pub fn stream_header(dir: Dir, session: StreamId) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    put_varint(
        &mut b,
        match dir {
            Dir::Uni => UNI_STREAM,
            Dir::Bi => BI_STREAM,
        },
    );
    put_varint(&mut b, session.into());
    b.freeze()
}

fn put_varint(b: &mut BytesMut, v: u64) {
    // Every value here is below 2^62: stream ids and quarter ids are varints.
    if let Ok(v) = VarInt::from_u64(v) {
        quinn_proto::coding::Codec::encode(&v, b);
    }
}

/// An application error code as it travels on a WebTransport stream.
pub fn code_to_wire(code: u32) -> VarInt {
    VarInt::from_u64(web_transport_proto::error_to_http3(code)).unwrap_or(VarInt::MAX)
}

/// The application error code a stream error on the wire carries.
pub fn code_from_wire(code: VarInt) -> u32 {
    let c = code.into_inner();
    web_transport_proto::error_from_http3(c).unwrap_or(u32::try_from(c).unwrap_or(u32::MAX))
}

/// A datagram of the session: its quarter stream id, then `payload`.
pub fn datagram_out(session: StreamId, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    put_varint(&mut b, u64::from(session) / 4);
    b.put_slice(payload);
    b.freeze()
}

/// The payload of a datagram for `session`; `None` for another session's
/// or a malformed one.
pub fn datagram_in(session: StreamId, mut d: Bytes) -> Option<Bytes> {
    let (quarter, n) = varint(&d).ok()?;
    if quarter != u64::from(session) / 4 {
        return None;
    }
    Some(d.split_off(n))
}

struct Incoming {
    id: StreamId,
    dir: Dir,
    head: Vec<u8>,
}

/// The WebTransport session on a connection.
pub(crate) struct WtState {
    /// The CONNECT request's stream: the session id.
    pub session: StreamId,
    /// The peer's streams whose header has not all arrived.
    incoming: Vec<Incoming>,
    /// The session's streams, header read, not accepted yet.
    ready: [VecDeque<StreamId>; 2],
}

impl WtState {
    pub fn new(session: StreamId) -> WtState {
        WtState {
            session,
            incoming: Vec::new(),
            ready: Default::default(),
        }
    }
}

fn index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// How reading a stream's header went.
enum Step {
    Waiting,
    Gone,
    Done(Header),
}

impl Shared {
    /// The next stream of direction `dir` in the WebTransport session, its
    /// header read; `None` (and `waker` registered) when none is there yet.
    pub(crate) fn poll_wt_accept(&mut self, dir: Dir, waker: &Waker) -> Option<StreamId> {
        let wt = self.wt.as_mut()?;
        while let Some(id) = self.conn.streams().accept(Dir::Uni) {
            wt.incoming.push(Incoming {
                id,
                dir: Dir::Uni,
                head: Vec::new(),
            });
        }
        while let Some(id) = self.conn.streams().accept(Dir::Bi) {
            wt.incoming.push(Incoming {
                id,
                dir: Dir::Bi,
                head: Vec::new(),
            });
        }
        let mut i = 0;
        let mut waiting = Vec::new();
        while i < wt.incoming.len() {
            let step = read_header(&mut self.conn, &mut wt.incoming[i]);
            match step {
                Step::Waiting => {
                    waiting.push(wt.incoming[i].id);
                    i += 1;
                    continue;
                }
                Step::Gone => {}
                Step::Done(Header::Session(s, _)) if s == u64::from(wt.session) => {
                    let it = &wt.incoming[i];
                    wt.ready[index(it.dir)].push_back(it.id);
                }
                Step::Done(Header::Session(..)) => {
                    refuse(&mut self.conn, &wt.incoming[i], ID_ERROR);
                }
                Step::Done(Header::Other(kind)) => {
                    // HTTP/3's own streams stay open, unread.
                    let it = &wt.incoming[i];
                    if !(it.dir == Dir::Uni && H3_OWN_STREAMS.contains(&kind)) {
                        refuse(&mut self.conn, it, STREAM_CREATION_ERROR);
                    }
                }
                Step::Done(Header::More(_)) => unreachable!("read_header reads the whole header"),
            }
            wt.incoming.swap_remove(i);
        }
        let next = wt.ready[index(dir)].pop_front();
        // A stream of the other direction this call read the header of is
        // ready too: whoever waits to accept it must hear of it, since its
        // Opened event was spent here.
        let other = match dir {
            Dir::Bi => Dir::Uni,
            Dir::Uni => Dir::Bi,
        };
        let other_ready = !wt.ready[index(other)].is_empty();
        if other_ready {
            self.wake_accept(other);
        }
        if next.is_none() {
            for id in waiting {
                self.wait_read(id, waker);
            }
            self.wait_accept(Dir::Uni, waker);
            self.wait_accept(Dir::Bi, waker);
        }
        next
    }
}

impl Shared {
    /// Reads what came on the CONNECT stream after the session started
    /// (capsules, which this side does not act on); whether the peer ended
    /// it, which ends the session.
    pub(crate) fn session_stream_ended(&mut self) -> bool {
        let Some(id) = self.wt.as_ref().map(|wt| wt.session) else {
            return false;
        };
        let mut stream = self.conn.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return true;
        };
        let ended = loop {
            match chunks.next(usize::MAX) {
                Ok(Some(_)) => {}
                Ok(None) | Err(ReadError::Reset(_)) => break true,
                Err(ReadError::Blocked) => break false,
            }
        };
        let _ = chunks.finalize();
        ended
    }
}

/// Reads what arrived of a stream's header, never past it.
fn read_header(conn: &mut quinn_proto::Connection, it: &mut Incoming) -> Step {
    loop {
        let need = match header(&it.head, it.dir) {
            Header::More(n) => n,
            done => return Step::Done(done),
        };
        let mut stream = conn.recv_stream(it.id);
        let mut chunks = match stream.read(true) {
            Ok(c) => c,
            Err(ReadableError::ClosedStream | ReadableError::IllegalOrderedRead) => {
                return Step::Gone
            }
        };
        let got = chunks.next(need);
        let _ = chunks.finalize();
        match got {
            Ok(Some(chunk)) => it.head.extend_from_slice(&chunk.bytes),
            Ok(None) | Err(ReadError::Reset(_)) => return Step::Gone,
            Err(ReadError::Blocked) => return Step::Waiting,
        }
    }
}

/// Turns a stream away: stops reading it, and resets our half of a
/// bidirectional one.
fn refuse(conn: &mut quinn_proto::Connection, it: &Incoming, code: u32) {
    let _ = conn.recv_stream(it.id).stop(VarInt::from_u32(code));
    if it.dir == Dir::Bi {
        let _ = conn.send_stream(it.id).reset(VarInt::from_u32(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_bi(index: u64) -> StreamId {
        StreamId::new(quinn_proto::Side::Client, Dir::Bi, index)
    }

    #[test]
    fn headers_name_the_session() {
        let s = client_bi(1);
        let uni = stream_header(Dir::Uni, s);
        assert_eq!(&uni[..], &[0x40, 0x54, 0x04]);
        assert_eq!(header(&uni, Dir::Uni), Header::Session(4, 3));
        let bi = stream_header(Dir::Bi, s);
        assert_eq!(&bi[..], &[0x40, 0x41, 0x04]);
        assert_eq!(header(&bi, Dir::Bi), Header::Session(4, 3));
        // A bidirectional header on a unidirectional stream is something else.
        assert_eq!(header(&bi, Dir::Uni), Header::Other(0x41));
    }

    #[test]
    fn a_header_in_pieces_asks_for_the_rest() {
        let h = stream_header(Dir::Uni, client_bi(250_000));
        assert_eq!(header(&[], Dir::Uni), Header::More(1));
        assert_eq!(header(&h[..1], Dir::Uni), Header::More(1));
        assert_eq!(header(&h[..2], Dir::Uni), Header::More(1));
        assert_eq!(header(&h[..3], Dir::Uni), Header::More(3));
        assert_eq!(header(&h, Dir::Uni), Header::Session(1_000_000, 6));
        // HTTP/3's control stream: type 0, one byte.
        assert_eq!(header(&[0x00], Dir::Uni), Header::Other(0));
    }

    #[test]
    fn error_codes_round_trip_through_http3_space() {
        for c in [0u32, 1, 0x1d, 0x1e, 0x1f, 0x403, u32::MAX] {
            assert_eq!(code_from_wire(code_to_wire(c)), c);
        }
        // A plain HTTP/3 code comes through as it is.
        assert_eq!(code_from_wire(VarInt::from_u32(0x10c)), 0x10c);
    }

    #[test]
    fn datagrams_carry_the_quarter_stream_id() {
        let s = client_bi(2);
        let d = datagram_out(s, b"abc");
        assert_eq!(&d[..], &[2, b'a', b'b', b'c']);
        assert_eq!(datagram_in(s, d.clone()).as_deref(), Some(&b"abc"[..]));
        assert_eq!(datagram_in(client_bi(0), d), None);
        assert_eq!(datagram_in(s, Bytes::new()), None);
    }
}
