//! What a MoQ publisher sends, read from its broadcast: the catalog first
//! (which tracks, which codecs), then the frames of one video and one audio
//! rendition. The reader is a future the endpoint polls like the session;
//! it queues what it reads for the endpoint, which packetizes it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use corecast_media::{h264, Codec, CodecInfo, MediaKind};
use moq_net::origin;

/// Frames queued by the reader, at most (a reader that runs ahead of the
/// endpoint drops the oldest).
const MAX_QUEUED: usize = 512;

/// A rendition the endpoint publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    pub track: String,
    pub codec: CodecInfo,
    /// H.264 in avc1 form: the configuration record (frames are length
    /// prefixed); None for Annex B (avc3) and other codecs.
    pub avc: Option<h264::AvcConfig>,
}

/// What the reader found.
#[derive(Debug)]
pub enum Incoming {
    /// The catalog's renditions corecast forwards.
    Catalog {
        video: Option<Rendition>,
        audio: Option<Rendition>,
    },
    Frame {
        kind: MediaKind,
        timestamp_us: u64,
        /// The first frame of its group (a keyframe, for video).
        keyframe: bool,
        payload: Bytes,
    },
    /// The broadcast ended or could not be read (why).
    Ended(String),
}

/// The queue between the reader and the endpoint.
pub type Queue = Arc<Mutex<VecDeque<Incoming>>>;

fn push(queue: &Queue, item: Incoming) {
    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() >= MAX_QUEUED {
        q.pop_front();
    }
    q.push_back(item);
}

/// The codec of a catalog codec string, if corecast forwards it.
pub fn codec_of(codec: &str) -> Option<CodecInfo> {
    let c = codec.to_ascii_lowercase();
    if c == "vp8" {
        return Some(CodecInfo::new(Codec::Vp8, 90_000));
    }
    if c.starts_with("vp09") || c == "vp9" {
        return Some(CodecInfo::new(Codec::Vp9, 90_000));
    }
    if c.starts_with("av01") {
        return Some(CodecInfo::new(Codec::Av1, 90_000));
    }
    if let Some(rest) = c.strip_prefix("avc1.").or_else(|| c.strip_prefix("avc3.")) {
        let profile = rest
            .get(..2)
            .and_then(|p| u16::from_str_radix(p, 16).ok())?;
        let mut info = CodecInfo::new(Codec::H264, 90_000);
        info.h264_profile = Some(profile);
        info.h264_packetization_mode = Some(1);
        return Some(info);
    }
    if c == "opus" {
        return Some(CodecInfo::new(Codec::Opus, 48_000));
    }
    None
}

type Boxed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads the broadcast `path` that the client announced into `origin`.
pub fn reader(origin: origin::Consumer, path: String, queue: Queue) -> Boxed {
    Box::pin(async move {
        if let Err(e) = read(origin, &path, &queue).await {
            push(&queue, Incoming::Ended(e));
        } else {
            push(&queue, Incoming::Ended("the broadcast ended".into()));
        }
    })
}

async fn read(origin: origin::Consumer, path: &str, queue: &Queue) -> Result<(), String> {
    let e = |e: moq_net::Error| e.to_string();
    // Announced already: the route is there, or comes with the announcement.
    let broadcast = origin.routed_broadcast(path).await.map_err(e)?;
    let mut catalog = broadcast
        .track(hang::Catalog::DEFAULT_NAME)
        .map_err(e)?
        .subscribe(None)
        .await
        .map_err(e)?;
    let group = catalog.recv_group().await.map_err(e)?.ok_or("no catalog")?;
    let mut group = group;
    let first = group
        .read_frame()
        .await
        .map_err(e)?
        .ok_or("an empty catalog group")?;
    let parsed = hang::Catalog::<()>::from_slice(&first.payload).map_err(|e| e.to_string())?;
    let video = parsed.video.renditions.iter().find_map(|(name, v)| {
        let codec = codec_of(&v.codec.to_string())?;
        let avc = match (&v.description, codec.codec) {
            (Some(d), Codec::H264) => Some(h264::AvcConfig::parse(d).ok()?),
            _ => None,
        };
        Some(Rendition {
            track: name.clone(),
            codec,
            avc,
        })
    });
    let audio = parsed.audio.renditions.iter().find_map(|(name, a)| {
        let codec = codec_of(&a.codec.to_string())?;
        Some(Rendition {
            track: name.clone(),
            codec,
            avc: None,
        })
    });
    if video.is_none() && audio.is_none() {
        return Err("no video or audio rendition in a codec corecast forwards".into());
    }
    push(
        queue,
        Incoming::Catalog {
            video: video.clone(),
            audio: audio.clone(),
        },
    );
    let mut tracks = Vec::new();
    for (r, kind) in [(video, MediaKind::Video), (audio, MediaKind::Audio)] {
        if let Some(r) = r {
            let sub = broadcast
                .track(&r.track)
                .map_err(e)?
                .subscribe(None)
                .await
                .map_err(e)?;
            tracks.push(Box::pin(read_track(sub, kind, queue.clone())));
        }
    }
    // Both tracks side by side, until both end.
    let mut done = vec![false; tracks.len()];
    std::future::poll_fn(|cx| {
        for (t, d) in tracks.iter_mut().zip(done.iter_mut()) {
            if !*d && t.as_mut().poll(cx).is_ready() {
                *d = true;
            }
        }
        if done.iter().all(|d| *d) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    Ok(())
}

async fn read_track(mut track: moq_net::track::Subscriber, kind: MediaKind, queue: Queue) {
    while let Ok(Some(mut group)) = track.recv_group().await {
        let mut first = true;
        while let Ok(Some(frame)) = group.read_frame().await {
            let Ok(f) = hang::container::Frame::decode(frame.payload) else {
                continue;
            };
            push(
                &queue,
                Incoming::Frame {
                    kind,
                    timestamp_us: f.timestamp.as_micros() as u64,
                    keyframe: first,
                    payload: f.payload,
                },
            );
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_codec_strings() {
        assert_eq!(codec_of("vp8").unwrap().codec, Codec::Vp8);
        assert_eq!(codec_of("vp09.00.10.08").unwrap().codec, Codec::Vp9);
        assert_eq!(codec_of("av01.0.08M.08").unwrap().codec, Codec::Av1);
        let h = codec_of("avc3.64001f").unwrap();
        assert_eq!((h.codec, h.h264_profile), (Codec::H264, Some(0x64)));
        assert_eq!(codec_of("avc1.42e01f").unwrap().h264_profile, Some(0x42));
        assert_eq!(codec_of("opus").unwrap().clock_rate, 48_000);
        assert_eq!(codec_of("hvc1.1.6.L93.B0"), None);
        assert_eq!(codec_of("mp4a.40.2"), None);
        assert_eq!(codec_of("avc3."), None);
    }
}
