//! SIP over TCP on the SIP port (RFC 3261 §18): a listener task accepts
//! connections; each has a reader task that cuts the stream into messages
//! ([`frame_len`]: head, empty line, `Content-Length` bytes; at most 64 KiB
//! each) and a writer task fed by the service. The service answers a
//! request on the connection it came on, and sends its in-dialog requests
//! (our BYE) on the connection of the call's INVITE: corecast does not open
//! TCP connections itself.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections; one that sends a
//! message that does not frame, or nothing for [`IDLE`], is closed; a
//! writer that falls [`WRITE_QUEUE`] messages behind loses the message (the
//! transaction layer hears of it as a transport error).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use corecast_sip::message::{frame_len, MAX_STREAM_MESSAGE_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Connections held at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection with nothing received for this long is closed (phones
/// refresh registrations or send keep-alives more often).
pub const IDLE: Duration = Duration::from_secs(600);
/// Messages queued toward one connection.
pub const WRITE_QUEUE: usize = 64;

/// What the connections tell the service.
pub enum NetEvent {
    /// A connection from `peer`; send on it through `writer`.
    Open {
        peer: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    /// One framed message.
    Message { peer: SocketAddr, data: Vec<u8> },
    /// The connection closed (or was closed for bad input).
    Closed { peer: SocketAddr, bad_input: bool },
}

/// Accepts connections on `listener` until the service goes away.
pub fn spawn_listener(listener: std::net::TcpListener, events: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let open = Arc::new(AtomicUsize::new(0));
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if events.is_closed() {
                return;
            }
            if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                tracing::debug!("sip tcp: refused {peer}: {MAX_CONNECTIONS} connections");
                continue;
            }
            open.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let events = events.clone();
            let open = open.clone();
            tokio::spawn(async move {
                serve(stream, peer, events).await;
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
}

async fn serve(stream: tokio::net::TcpStream, peer: SocketAddr, events: mpsc::Sender<NetEvent>) {
    let (mut rd, mut wr) = stream.into_split();
    let (writer, mut queue) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if events.send(NetEvent::Open { peer, writer }).await.is_err() {
        return;
    }
    let write = tokio::spawn(async move {
        while let Some(data) = queue.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let bad_input = 'read: loop {
        let n = match tokio::time::timeout(IDLE, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break false,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame_len(&buf) {
                Ok(Some(len)) => {
                    let data: Vec<u8> = buf.drain(..len).collect();
                    if events.send(NetEvent::Message { peer, data }).await.is_err() {
                        break 'read false;
                    }
                }
                Ok(None) if buf.len() > MAX_STREAM_MESSAGE_LEN => break 'read true,
                Ok(None) => break,
                Err(_) => break 'read true,
            }
        }
    };
    write.abort();
    let _ = events.send(NetEvent::Closed { peer, bad_input }).await;
}
