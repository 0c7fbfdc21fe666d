//! The state a connection's handles share: the quinn-proto connection and
//! who waits on what. The MoQ session polls streams through handles
//! ([`crate::transport`]); when quinn-proto says a stream can move, the
//! handle's waker is woken and the endpoint polls the session again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use quinn_proto::{Connection, ConnectionError, Dir, StreamId};

/// A connection or stream error, as the MoQ session sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("closed by the application with code {code}: {reason}")]
    Application { code: u32, reason: String },
    #[error("stream reset by the peer with code {0}")]
    Reset(u32),
    #[error("stream stopped by the peer with code {0}")]
    Stopped(u32),
    #[error("stream already closed")]
    ClosedStream,
    #[error("datagrams are off on this connection")]
    NoDatagrams,
}

impl From<ConnectionError> for QuicError {
    fn from(e: ConnectionError) -> QuicError {
        match e {
            ConnectionError::ApplicationClosed(a) => QuicError::Application {
                code: u32::try_from(a.error_code.into_inner()).unwrap_or(u32::MAX),
                reason: String::from_utf8_lossy(&a.reason).into_owned(),
            },
            other => QuicError::Closed(other.to_string()),
        }
    }
}

impl web_transport_trait::Error for QuicError {
    fn session_error(&self) -> Option<(u32, String)> {
        match self {
            QuicError::Application { code, reason } => Some((*code, reason.clone())),
            _ => None,
        }
    }

    fn stream_error(&self) -> Option<u32> {
        match self {
            QuicError::Reset(c) | QuicError::Stopped(c) => Some(*c),
            _ => None,
        }
    }
}

fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// Adds `waker` unless an equivalent one waits already.
fn push(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}

fn wake(list: &mut Vec<Waker>) {
    for w in list.drain(..) {
        w.wake();
    }
}

pub(crate) struct Shared {
    pub conn: Connection,
    /// The time of the latest input (quinn-proto's close needs one).
    pub now: Instant,
    pub drained: bool,
    pub error: Option<QuicError>,
    /// The WebTransport session, on an HTTP/3 connection once set up.
    pub wt: Option<crate::webtransport::WtState>,
    read: HashMap<StreamId, Vec<Waker>>,
    write: HashMap<StreamId, Vec<Waker>>,
    accept: [Vec<Waker>; 2],
    open: [Vec<Waker>; 2],
    datagram: Vec<Waker>,
    closed: Vec<Waker>,
}

impl Shared {
    pub fn new(conn: Connection, now: Instant) -> Shared {
        Shared {
            conn,
            now,
            drained: false,
            error: None,
            wt: None,
            read: HashMap::new(),
            write: HashMap::new(),
            accept: Default::default(),
            open: Default::default(),
            datagram: Vec::new(),
            closed: Vec::new(),
        }
    }

    pub fn wait_read(&mut self, id: StreamId, w: &Waker) {
        push(self.read.entry(id).or_default(), w);
    }

    pub fn wait_write(&mut self, id: StreamId, w: &Waker) {
        push(self.write.entry(id).or_default(), w);
    }

    pub fn wait_accept(&mut self, dir: Dir, w: &Waker) {
        push(&mut self.accept[dir_index(dir)], w);
    }

    pub fn wait_open(&mut self, dir: Dir, w: &Waker) {
        push(&mut self.open[dir_index(dir)], w);
    }

    pub fn wait_datagram(&mut self, w: &Waker) {
        push(&mut self.datagram, w);
    }

    pub fn wait_closed(&mut self, w: &Waker) {
        push(&mut self.closed, w);
    }

    pub fn wake_read(&mut self, id: StreamId) {
        if let Some(mut l) = self.read.remove(&id) {
            wake(&mut l);
        }
    }

    pub fn wake_write(&mut self, id: StreamId) {
        if let Some(mut l) = self.write.remove(&id) {
            wake(&mut l);
        }
    }

    pub fn wake_accept(&mut self, dir: Dir) {
        wake(&mut self.accept[dir_index(dir)]);
    }

    pub fn wake_open(&mut self, dir: Dir) {
        wake(&mut self.open[dir_index(dir)]);
    }

    pub fn wake_datagram(&mut self) {
        wake(&mut self.datagram);
    }

    /// The connection is gone: every waiter learns it.
    pub fn lost(&mut self, error: QuicError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        for (_, mut l) in self.read.drain().chain(self.write.drain()) {
            wake(&mut l);
        }
        for l in self.accept.iter_mut().chain(self.open.iter_mut()) {
            wake(l);
        }
        wake(&mut self.datagram);
        wake(&mut self.closed);
    }
}

/// Locks a connection's shared state. Only the shard's thread touches a
/// connection; a poisoned lock means a panic there already, and the state
/// is still the connection's.
pub(crate) fn lock(shared: &Arc<Mutex<Shared>>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}
