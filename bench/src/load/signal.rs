//! Signalling off the generator's shards: a few plain threads do the HTTP
//! POSTs and DELETEs, so a slow server never stalls a shard's media loop.

use crate::url::{request, HttpUrl};

/// A WHIP/WHEP POST or a DELETE for the signalling threads.
pub enum SignalRequest {
    Post {
        url: HttpUrl,
        offer: String,
        token: Option<String>,
        reply: flume::Sender<Result<(String, HttpUrl), String>>,
    },
    Delete {
        url: HttpUrl,
        token: Option<String>,
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

fn handle(req: SignalRequest) {
    match req {
        SignalRequest::Post {
            url,
            offer,
            token,
            reply,
        } => {
            let result = match request(
                &url,
                "POST",
                Some("application/sdp"),
                token.as_deref(),
                offer.as_bytes(),
            ) {
                Ok(r) if r.status == 201 => match r.location {
                    Some(loc) => Ok((r.body, url.join(&loc))),
                    None => Err("201 without Location".to_string()),
                },
                Ok(r) => Err(format!("{} {}", r.status, r.body.trim())),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send(result);
        }
        SignalRequest::Delete { url, token } => {
            let _ = request(&url, "DELETE", None, token.as_deref(), b"");
        }
    }
}
