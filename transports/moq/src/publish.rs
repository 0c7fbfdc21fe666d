//! What a MoQ publisher sends, read from its broadcast: the catalog (which
//! tracks, which codecs; each new catalog group is read, so a rendition
//! that appears later is picked up), then the frames of one video and one
//! audio rendition. The reader is a future the endpoint polls like the session;
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
    // Each catalog group starts with the whole catalog (later frames of a
    // group are JSON merge patches, not read): a rendition that appears in
    // a later group is read from then on. Renditions already read stay.
    let mut group: Option<moq_net::group::Consumer> = None;
    let mut catalog_open = true;
    let (mut video, mut audio) = (false, false);
    let mut readers: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    std::future::poll_fn(|cx| {
        let waiter = kio::Waiter::new(cx.waker().clone());
        while catalog_open {
            if let Some(g) = group.as_mut() {
                match g.poll_read_frame(&waiter) {
                    Poll::Ready(Ok(Some(frame))) => {
                        group = None;
                        let Ok(parsed) = hang::Catalog::<()>::from_slice(&frame.payload) else {
                            continue;
                        };
                        let (v, a) = renditions(&parsed);
                        let v = v.filter(|_| !video);
                        let a = a.filter(|_| !audio);
                        if v.is_none() && a.is_none() {
                            continue;
                        }
                        push(
                            queue,
                            Incoming::Catalog {
                                video: v.clone(),
                                audio: a.clone(),
                            },
                        );
                        for (r, kind) in [(v, MediaKind::Video), (a, MediaKind::Audio)] {
                            let Some(r) = r else {
                                continue;
                            };
                            match kind {
                                MediaKind::Video => video = true,
                                MediaKind::Audio => audio = true,
                            }
                            let Ok(track) = broadcast.track(&r.track) else {
                                continue;
                            };
                            let subscribing = track.subscribe(None);
                            let q = queue.clone();
                            readers.push(Box::pin(async move {
                                if let Ok(sub) = subscribing.await {
                                    read_track(sub, kind, q).await;
                                }
                            }));
                        }
                        continue;
                    }
                    Poll::Ready(_) => {
                        group = None;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            match catalog.poll_recv_group(&waiter) {
                Poll::Ready(Ok(Some(g))) => group = Some(g),
                Poll::Ready(_) => catalog_open = false,
                Poll::Pending => break,
            }
        }
        readers.retain_mut(|r| r.as_mut().poll(cx).is_pending());
        if !catalog_open && readers.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    if !video && !audio {
        return Err("no video or audio rendition in a codec corecast forwards".into());
    }
    Ok(())
}

/// The first video and audio renditions of a catalog in codecs corecast
/// forwards.
fn renditions(catalog: &hang::Catalog) -> (Option<Rendition>, Option<Rendition>) {
    let video = catalog.video.renditions.iter().find_map(|(name, v)| {
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
    let audio = catalog.audio.renditions.iter().find_map(|(name, a)| {
        let codec = codec_of(&a.codec.to_string())?;
        Some(Rendition {
            track: name.clone(),
            codec,
            avc: None,
        })
    });
    (video, audio)
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
