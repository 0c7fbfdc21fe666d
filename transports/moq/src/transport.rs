//! The transport a MoQ session runs over: web-transport-trait's poll
//! interface on a quinn-proto connection (raw QUIC: the session's streams
//! are the connection's streams). Every handle holds the connection's
//! [`Shared`] state; an operation that cannot go on leaves its waker there,
//! and [`crate::quic::QuicConn::process`] wakes it when quinn-proto says the
//! stream, the stream budget or the connection moved.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn_proto::{Dir, ReadError, ReadableError, StreamId, VarInt, WriteError};
use web_transport_trait::{poll, StatsUnavailable};

use crate::wakers::{lock, QuicError, Shared};

fn code(v: VarInt) -> u32 {
    u32::try_from(v.into_inner()).unwrap_or(u32::MAX)
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
}

/// The sending half of a stream.
pub struct QuicSend {
    shared: Arc<Mutex<Shared>>,
    id: StreamId,
}

/// The receiving half of a stream.
pub struct QuicRecv {
    shared: Arc<Mutex<Shared>>,
    id: StreamId,
}

impl QuicSession {
    fn send(&self, id: StreamId) -> QuicSend {
        QuicSend {
            shared: self.shared.clone(),
            id,
        }
    }

    fn recv(&self, id: StreamId) -> QuicRecv {
        QuicRecv {
            shared: self.shared.clone(),
            id,
        }
    }

    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
        dir: Dir,
        open: bool,
    ) -> Poll<Result<StreamId, QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        let id = if open {
            s.conn.streams().open(dir)
        } else {
            s.conn.streams().accept(dir)
        };
        match id {
            Some(id) => Poll::Ready(Ok(id)),
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
            .map_ok(|id| self.recv(id))
    }

    fn poll_accept_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(QuicSend, QuicRecv), QuicError>> {
        self.poll_stream(cx, Dir::Bi, false)
            .map_ok(|id| (self.send(id), self.recv(id)))
    }

    fn poll_open_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<QuicSend, QuicError>> {
        self.poll_stream(cx, Dir::Uni, true)
            .map_ok(|id| self.send(id))
    }

    fn poll_open_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(QuicSend, QuicRecv), QuicError>> {
        self.poll_stream(cx, Dir::Bi, true)
            .map_ok(|id| (self.send(id), self.recv(id)))
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
        // Best effort, as datagrams are: when the send buffer is full the
        // oldest queued datagram gives way.
        let sent = s
            .conn
            .datagrams()
            .send(Bytes::copy_from_slice(payload), true);
        Poll::Ready(sent.map_err(|_| QuicError::NoDatagrams))
    }

    fn poll_recv_datagram(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(d) = s.conn.datagrams().recv() {
            return Poll::Ready(Ok(d));
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        s.wait_datagram(cx.waker());
        Poll::Pending
    }

    fn max_datagram_size(&self) -> usize {
        lock(&self.shared).conn.datagrams().max_size().unwrap_or(0)
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
        match s.conn.send_stream(self.id).write(buf) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(WriteError::Blocked) => {
                s.wait_write(self.id, cx.waker());
                Poll::Pending
            }
            Err(WriteError::Stopped(c)) => Poll::Ready(Err(QuicError::Stopped(code(c)))),
            Err(WriteError::ClosedStream) => Poll::Ready(Err(QuicError::ClosedStream)),
        }
    }

    fn set_priority(&mut self, order: u8) {
        let _ = lock(&self.shared)
            .conn
            .send_stream(self.id)
            .set_priority(i32::from(order));
    }

    fn finish(&mut self) -> Result<(), QuicError> {
        lock(&self.shared)
            .conn
            .send_stream(self.id)
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(c) => QuicError::Stopped(code(c)),
                quinn_proto::FinishError::ClosedStream => QuicError::ClosedStream,
            })
    }

    fn reset(&mut self, c: u32) {
        let _ = lock(&self.shared)
            .conn
            .send_stream(self.id)
            .reset(VarInt::from_u32(c));
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        match s.conn.send_stream(self.id).stopped() {
            Ok(Some(c)) => Poll::Ready(Err(QuicError::Stopped(code(c)))),
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
            Err(ReadError::Reset(c)) => Poll::Ready(Err(QuicError::Reset(code(c)))),
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
            .stop(VarInt::from_u32(c));
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone()));
        }
        match s.conn.recv_stream(self.id).received_reset() {
            Ok(Some(c)) => Poll::Ready(Err(QuicError::Reset(code(c)))),
            Err(_) => Poll::Ready(Ok(())),
            Ok(None) => {
                s.wait_read(self.id, cx.waker());
                Poll::Pending
            }
        }
    }
}
