//! Signalling off the generator's shards: a few plain threads do the HTTP
//! POSTs and DELETEs (or Janus's requests), so a slow server never stalls
//! a shard's media loop.

use super::janus;
use crate::url::{request, HttpUrl};

/// The answer and the session's URL, or why not.
pub type Answered = Result<(String, HttpUrl), String>;

/// A WHIP/WHEP POST or a DELETE for the signalling threads.
pub enum SignalRequest {
    Post {
        url: HttpUrl,
        offer: String,
        token: Option<String>,
        reply: flume::Sender<Answered>,
    },
    Delete {
        url: HttpUrl,
        token: Option<String>,
    },
    /// A publisher's offer to a Janus VideoRoom (`url`: Janus's API root).
    JanusPublish {
        url: HttpUrl,
        stream: String,
        offer: String,
        reply: flume::Sender<Answered>,
    },
    /// A viewer joins a Janus room: Janus makes the offer.
    JanusSubscribe {
        url: HttpUrl,
        stream: String,
        reply: flume::Sender<Result<(String, janus::Handle), String>>,
    },
    /// The viewer's answer to Janus's offer.
    JanusStart {
        handle: janus::Handle,
        answer: String,
        reply: flume::Sender<Result<(), String>>,
    },
    /// Ends a Janus session.
    JanusDestroy {
        session: HttpUrl,
    },
}

/// Starts `threads` signalling threads; they end when every sender is dropped.
pub fn start(threads: usize) -> flume::Sender<SignalRequest> {
    let (tx, rx) = flume::bounded::<SignalRequest>(4096);
    for i in 0..threads.max(1) {
        let rx = rx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("signal-{i}"))
            .spawn(move || {
                while let Ok(req) = rx.recv() {
                    handle(req);
                }
            });
    }
    tx
}

/// Redirects (307/308, e.g. from a corecast gateway) followed per POST.
const MAX_REDIRECTS: usize = 3;

/// POSTs an offer, following redirects; returns the answer and the session
/// URL (its Location resolved against the URL that answered).
fn post_offer(
    mut url: HttpUrl,
    offer: &str,
    token: Option<&str>,
) -> Result<(String, HttpUrl), String> {
    for _ in 0..=MAX_REDIRECTS {
        let r = request(
            &url,
            "POST",
            Some("application/sdp"),
            token,
            offer.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        match (r.status, r.location) {
            (201, Some(loc)) => return Ok((r.body, url.join(&loc))),
            (201, None) => return Err("201 without Location".to_string()),
            (307 | 308, Some(loc)) => url = url.join(&loc),
            (status, _) => return Err(format!("{status} {}", r.body.trim())),
        }
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

fn handle(req: SignalRequest) {
    match req {
        SignalRequest::Post {
            url,
            offer,
            token,
            reply,
        } => {
            let _ = reply.send(post_offer(url, &offer, token.as_deref()));
        }
        SignalRequest::Delete { url, token } => {
            let _ = request(&url, "DELETE", None, token.as_deref(), b"");
        }
        SignalRequest::JanusPublish {
            url,
            stream,
            offer,
            reply,
        } => {
            let _ = reply.send(janus::publish(&url, &stream, &offer));
        }
        SignalRequest::JanusSubscribe { url, stream, reply } => {
            let _ = reply.send(janus::subscribe(&url, &stream));
        }
        SignalRequest::JanusStart {
            handle,
            answer,
            reply,
        } => {
            let _ = reply.send(janus::start(&handle, &answer));
        }
        SignalRequest::JanusDestroy { session } => janus::destroy(&session),
    }
}
