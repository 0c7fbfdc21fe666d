//! The checks of the fuzz targets of corecast-rtmp, one function per
//! target. The libFuzzer targets in `fuzz_targets/` and their seeded twins
//! in `tests/hostile_input.rs` call these.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_media::{ConnId, Endpoint, Event, Input, Output};
use corecast_rtmp::amf0;
use corecast_rtmp::chunk::{types, write_message, ChunkReader, Limits};
use corecast_rtmp::client::tags;
use corecast_rtmp::session::{ServerSession, SessionConfig, SessionEvent};
use corecast_rtmp::{RtmpConfig, RtmpEndpoint};

/// A valid handshake (C0, C1, C2).
pub fn handshake() -> Vec<u8> {
    corecast_rtmp::client::scripted_handshake()
}

/// Handshake, connect, createStream and publish of `key`.
pub fn publish_prefix(key: &str) -> Vec<u8> {
    corecast_rtmp::client::scripted_publish("live", key)
}

/// Target `rtmp_session`: the bytes after a valid handshake, cut into
/// pieces whose size the first byte picks. Never panics; the bytes counted
/// are the bytes given; what the server sends is a well-formed chunk
/// stream. Returns how many events the session raised.
pub fn session(data: &[u8]) -> usize {
    let Some((&step, rest)) = data.split_first() else {
        return 0;
    };
    let step = usize::from(step).max(1) * 3;
    let mut s = ServerSession::new(SessionConfig::default(), &[1, 2, 3]);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    let mut input = handshake();
    input.extend_from_slice(rest);
    let mut given = 0u64;
    let mut accepted = false;
    for piece in input.chunks(step) {
        given += piece.len() as u64;
        if s.push(piece, &mut out, &mut events).is_err() {
            break;
        }
        if !accepted
            && events
                .iter()
                .any(|e| matches!(e, SessionEvent::PublishRequested { .. }))
        {
            accepted = true;
            s.accept_publish(&mut out);
        }
    }
    assert_eq!(s.stats().bytes_in, given);
    // The server's own bytes: S0, S1, S2, then chunks that read back.
    if out.len() > 1 + 2 * 1536 {
        let mut r = ChunkReader::new(Limits::default());
        r.push(&out[1 + 2 * 1536..]);
        while let Some(m) = r.next_message().expect("the server writes valid chunks") {
            if m.type_id == types::COMMAND_AMF0 {
                amf0::decode_all(&m.payload).expect("the server writes valid AMF0");
            }
        }
        assert_eq!(r.buffered(), 0, "the server's last message is complete");
    }
    events.len()
}

/// Target `rtmp_endpoint`: a published stream whose messages come from
/// the input: `[kind][len_hi][len_lo][body…]` repeated, kind picking audio,
/// video or data and the timestamp step. Never panics; every packet it
/// publishes is on one of its two tracks with a non-empty payload, and its
/// sequence numbers per track count up by one. Returns the packets.
pub fn endpoint(data: &[u8]) -> usize {
    let now = Instant::now();
    let local: SocketAddr = "127.0.0.1:1935".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let mut e = RtmpEndpoint::new(
        RtmpConfig::default(),
        ConnId(1),
        1,
        local,
        remote,
        now,
        &[7],
    );
    let mut packets = 0usize;
    let mut last_seq = [None::<u64>; 2];
    let mut drain = |e: &mut RtmpEndpoint, now: Instant| loop {
        match e.poll_output(now) {
            Output::Timeout(_) => return,
            Output::Transmit(_) => {}
            Output::Event(Event::Media(p)) => {
                let tracks = e.published();
                let i = tracks
                    .iter()
                    .position(|t| t.channel == p.channel)
                    .expect("media on a published track");
                assert!(!p.payload.is_empty());
                if let Some(prev) = last_seq[i] {
                    assert_eq!(p.seq, prev + 1, "sequence numbers count up");
                }
                last_seq[i] = Some(p.seq);
                packets += 1;
            }
            Output::Event(_) => {}
        }
    };
    let _ = e.handle_input(now, Input::Stream(&publish_prefix("fuzz")));
    drain(&mut e, now);
    let _ = e.handle_input(
        now,
        Input::Command(corecast_media::Command::Admit(Ok("p".to_string()))),
    );
    drain(&mut e, now);
    let mut d = data;
    let mut ts = 0u32;
    let mut bytes = Vec::new();
    while d.len() >= 3 {
        let kind = d[0];
        let len = (usize::from(d[1]) << 8 | usize::from(d[2])).min(d.len() - 3);
        let body = &d[3..3 + len];
        d = &d[3 + len..];
        ts = ts.wrapping_add(u32::from(kind >> 2));
        let (cs, type_id) = match kind & 3 {
            0 => (6, types::VIDEO),
            1 => (4, types::AUDIO),
            2 => (5, types::DATA_AMF0),
            _ => (3, types::COMMAND_AMF0),
        };
        bytes.clear();
        write_message(&mut bytes, 128, cs, ts, type_id, 1, body);
        let at = now + Duration::from_millis(u64::from(ts % 100_000));
        let _ = e.handle_input(at, Input::Stream(&bytes));
        drain(&mut e, at);
        if e.is_closed() {
            break;
        }
    }
    packets
}

/// A seed for `rtmp_endpoint`: an H.264 + AAC stream in its message format.
pub fn endpoint_seed(asc: &[u8], aac_units: &[&[u8]]) -> Vec<u8> {
    let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5];
    let pps = [0x68, 0xce, 0x3c, 0x80];
    let mut messages: Vec<(u8, Vec<u8>)> = vec![
        (0, tags::avc_sequence(&sps, &pps)),
        (1, tags::aac_sequence(asc)),
    ];
    for i in 0..4u8 {
        let nal: Vec<u8> = if i == 0 {
            std::iter::once(0x65).chain(0..200).collect()
        } else {
            vec![0x41, 0x9a, i]
        };
        messages.push((33 << 2, tags::avc_frame(i == 0, 0, &[&nal])));
        if let Some(u) = aac_units.get(usize::from(i)) {
            messages.push((1 | (23 << 2), tags::aac_frame(u)));
        }
    }
    let mut out = Vec::new();
    for (kind, body) in messages {
        out.push(kind);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}
