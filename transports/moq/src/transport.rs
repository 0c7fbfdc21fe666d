//! The transport a MoQ session runs over: web-transport-trait's poll
//! interface on a quinn-proto connection. On raw QUIC the session's streams
//! are the connection's streams; in a WebTransport session (HTTP/3, what
//! browsers speak) each stream carries a header first and error codes are
//! mapped ([`crate::webtransport`]). Every handle holds the connection's
//! [`Shared`] state; an operation that cannot go on leaves its waker there,
//! and [`crate::quic::QuicConn::process`] wakes it when quinn-proto says the
//! stream, the stream budget or the connection moved.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use quinn_proto::{Dir, ReadError, ReadableError, StreamId, VarInt, WriteError};
use web_transport_trait::{poll, StatsUnavailable};

use crate::wakers::{lock, QuicError, Shared};
use crate::webtransport;

/// A stream error code as the application sees it.
fn code(v: VarInt, wt: bool) -> u32 {
    if wt {
        webtransport::code_from_wire(v)
    } else {
        u32::try_from(v.into_inner()).unwrap_or(u32::MAX)
    }
}

/// A stream error code as it goes on the wire.
fn wire(c: u32, wt: bool) -> VarInt {
    if wt {
        webtransport::code_to_wire(c)
    } else {
        VarInt::from_u32(c)
    }
}

/// A MoQ session's view of its QUIC connection.
#[derive(Clone)]
pub struct QuicSession {
    shared: Arc<Mutex<Shared>>,
    alpn: Option<String>,
}

impl QuicSession {
    pub(crate) fn new(shared: Arc<Mutex<Shared>>, alpn: Option<String>) -> QuicSession {
        QuicSession { shared, alpn }
    }

    /// This connection as the WebTransport session of the CONNECT request
    /// on stream `session`, speaking `protocol`.
    pub(crate) fn into_webtransport(self, session: StreamId, protocol: String) -> QuicSession {
        lock(&self.shared).wt = Some(webtransport::WtState::new(session));
        QuicSession {
            shared: self.shared,
            alpn: Some(protocol),
        }
    }
}

impl QuicRecv {
    pub(crate) fn id(&self) -> StreamId {
        self.id
    }
}

/// The sending half of a stream.
pub struct QuicSend {
    shared: Arc<Mutex<Shared>>,
    id: StreamId,
    /// In a WebTransport session, whether codes are mapped.
    wt: bool,
    /// The stream's WebTransport header, until it is written.
    header: Option<Bytes>,
}

/// The receiving half of a stream.
pub struct QuicRecv {
    shared: Arc<Mutex<Shared>>,
    id: StreamId,
    wt: bool,
}

/// A stream: what the session accepted or opened, and whether it is in a
/// WebTransport session (`Some(session id)`).
type Opened = (StreamId, Option<StreamId>);

impl QuicSession {
    /// The sending half of `id`; one this side opened in a WebTransport
    /// session writes its header first.
    fn send(&self, (id, wt): Opened, opened: bool) -> QuicSend {
        QuicSend {
            shared: self.shared.clone(),
            id,
            wt: wt.is_some(),
            header: wt
                .filter(|_| opened)
                .map(|session| webtransport::stream_header(id.dir(), session)),
        }
    }

    fn recv(&self, (id, wt): Opened) -> QuicRecv {
        QuicRecv {
            shared: self.shared.clone(),
            id,
            wt: wt.is_some(),
        }
    }

    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
        dir: Dir,
        open: bool,
    ) -> Poll<Result<Opened, QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        let session = s.wt.as_ref().map(|wt| wt.session);
        let id = match (open, session) {
            (true, _) => s.conn.streams().open(dir),
            (false, None) => s.conn.streams().accept(dir),
            // Registers the waker itself when nothing is there.
            (false, Some(_)) => {
                return match s.poll_wt_accept(dir, cx.waker()) {
                    Some(id) => Poll::Ready(Ok((id, session))),
                    None => Poll::Pending,
                }
            }
        };
        match id {
            Some(id) => Poll::Ready(Ok((id, session))),
            None => {
                if open {
                    s.wait_open(dir, cx.waker());
                } else {
                    s.wait_accept(dir, cx.waker());
                }
                Poll::Pending
            }
        }
    }
}

impl poll::Session for QuicSession {
    type SendStream = QuicSend;
    type RecvStream = QuicRecv;
    type Error = QuicError;

    fn poll_accept_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<QuicRecv, QuicError>> {
        self.poll_stream(cx, Dir::Uni, false)
            .map_ok(|o| self.recv(o))
    }

    fn poll_accept_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(QuicSend, QuicRecv), QuicError>> {
        self.poll_stream(cx, Dir::Bi, false)
            .map_ok(|o| (self.send(o, false), self.recv(o)))
    }

    fn poll_open_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<QuicSend, QuicError>> {
        self.poll_stream(cx, Dir::Uni, true)
            .map_ok(|o| self.send(o, true))
    }

    fn poll_open_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(QuicSend, QuicRecv), QuicError>> {
        self.poll_stream(cx, Dir::Bi, true)
            .map_ok(|o| (self.send(o, true), self.recv(o)))
    }

    fn poll_send_datagram(
        &mut self,
        _cx: &mut Context<'_>,
        payload: &[u8],
    ) -> Poll<Result<(), QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        let d = match s.wt.as_ref() {
            Some(wt) => webtransport::datagram_out(wt.session, payload),
            None => Bytes::copy_from_slice(payload),
        };
        // Best effort, as datagrams are: when the send buffer is full the
        // oldest queued datagram gives way.
        let sent = s.conn.datagrams().send(d, true);
        Poll::Ready(sent.map_err(|_| QuicError::NoDatagrams))
    }

    fn poll_recv_datagram(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, QuicError>> {
        let mut s = lock(&self.shared);
        while let Some(d) = s.conn.datagrams().recv() {
            match s.wt.as_ref() {
                None => return Poll::Ready(Ok(d)),
                // Another session's or a malformed one: dropped.
                Some(wt) => {
                    if let Some(d) = webtransport::datagram_in(wt.session, d) {
                        return Poll::Ready(Ok(d));
                    }
                }
            }
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        s.wait_datagram(cx.waker());
        Poll::Pending
    }

    fn max_datagram_size(&self) -> usize {
        let mut s = lock(&self.shared);
        // A WebTransport datagram spends up to 8 bytes on the session id.
        let header = if s.wt.is_some() { 8 } else { 0 };
        s.conn
            .datagrams()
            .max_size()
            .map_or(0, |m| m.saturating_sub(header))
    }

    fn protocol(&self) -> Option<&str> {
        self.alpn.as_deref()
    }

    fn close(&mut self, code: u32, reason: &str) {
        let mut s = lock(&self.shared);
        let now = s.now;
        s.conn
            .close(now, code.into(), Bytes::copy_from_slice(reason.as_bytes()));
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<QuicError> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(e.clone());
        }
        s.wait_closed(cx.waker());
        Poll::Pending
    }

    fn stats(&self) -> impl web_transport_trait::Stats {
        StatsUnavailable
    }
}

impl poll::SendStream for QuicSend {
    type Error = QuicError;

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        while let Some(header) = self.header.as_mut() {
            match write(&mut s, self.id, header, self.wt) {
                Ok(0) | Err(None) => {
                    s.wait_write(self.id, cx.waker());
                    return Poll::Pending;
                }
                Ok(n) if n == header.len() => self.header = None,
                Ok(n) => header.advance(n),
                Err(Some(e)) => return Poll::Ready(Err(e)),
            }
        }
        match write(&mut s, self.id, buf, self.wt) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(Some(e)) => Poll::Ready(Err(e)),
            Err(None) => {
                s.wait_write(self.id, cx.waker());
                Poll::Pending
            }
        }
    }

    fn set_priority(&mut self, order: u8) {
        let _ = lock(&self.shared)
            .conn
            .send_stream(self.id)
            .set_priority(i32::from(order));
    }

    fn finish(&mut self) -> Result<(), QuicError> {
        let mut s = lock(&self.shared);
        if let Some(header) = self.header.take() {
            // A stream finished before anything was written: its header
            // goes now, or the stream cannot be finished.
            match write(&mut s, self.id, &header, self.wt) {
                Ok(n) if n == header.len() => {}
                Ok(_) | Err(None) => return Err(QuicError::Closed("stream header blocked".into())),
                Err(Some(e)) => return Err(e),
            }
        }
        s.conn.send_stream(self.id).finish().map_err(|e| match e {
            quinn_proto::FinishError::Stopped(c) => QuicError::Stopped(code(c, self.wt)),
            quinn_proto::FinishError::ClosedStream => QuicError::ClosedStream,
        })
    }

    fn reset(&mut self, c: u32) {
        let _ = lock(&self.shared)
            .conn
            .send_stream(self.id)
            .reset(wire(c, self.wt));
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        match s.conn.send_stream(self.id).stopped() {
            Ok(Some(c)) => Poll::Ready(Err(QuicError::Stopped(code(c, self.wt)))),
            // Finished and acknowledged, or reset by us: gone.
            Err(_) => Poll::Ready(Ok(())),
            Ok(None) => {
                s.wait_write(self.id, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl poll::RecvStream for QuicRecv {
    type Error = QuicError;

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<Result<Option<usize>, QuicError>> {
        let mut s = lock(&self.shared);
        let mut stream = s.conn.recv_stream(self.id);
        let mut chunks = match stream.read(true) {
            Ok(c) => c,
            // Read to its end before, or never known: nothing more comes.
            Err(ReadableError::ClosedStream) => return Poll::Ready(Ok(None)),
            Err(ReadableError::IllegalOrderedRead) => {
                return Poll::Ready(Err(QuicError::ClosedStream))
            }
        };
        let got = chunks.next(dst.len());
        // Credit for the peer goes out with the next transmit.
        let _ = chunks.finalize();
        match got {
            Ok(Some(chunk)) => {
                dst[..chunk.bytes.len()].copy_from_slice(&chunk.bytes);
                Poll::Ready(Ok(Some(chunk.bytes.len())))
            }
            Ok(None) => Poll::Ready(Ok(None)),
            Err(ReadError::Reset(c)) => Poll::Ready(Err(QuicError::Reset(code(c, self.wt)))),
            Err(ReadError::Blocked) => {
                if let Some(e) = &s.error {
                    return Poll::Ready(Err(e.clone()));
                }
                s.wait_read(self.id, cx.waker());
                Poll::Pending
            }
        }
    }

    fn stop(&mut self, c: u32) {
        let _ = lock(&self.shared)
            .conn
            .recv_stream(self.id)
            .stop(wire(c, self.wt));
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        match s.conn.recv_stream(self.id).received_reset() {
            Ok(Some(c)) => Poll::Ready(Err(QuicError::Reset(code(c, self.wt)))),
            Err(_) => Poll::Ready(Ok(())),
            Ok(None) => {
                s.wait_read(self.id, cx.waker());
                Poll::Pending
            }
        }
    }
}

/// Writes what the stream takes of `buf`; `Err(None)` when it takes
/// nothing now (flow control).
fn write(s: &mut Shared, id: StreamId, buf: &[u8], wt: bool) -> Result<usize, Option<QuicError>> {
    match s.conn.send_stream(id).write(buf) {
        Ok(n) => Ok(n),
        Err(WriteError::Blocked) => Err(None),
        Err(WriteError::Stopped(c)) => Err(Some(QuicError::Stopped(code(c, wt)))),
        Err(WriteError::ClosedStream) => Err(Some(QuicError::ClosedStream)),
    }
}
