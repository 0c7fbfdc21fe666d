//! The checks of the fuzz targets of corecast-moq, one function per target.
//! The libFuzzer targets in `fuzz_targets/` and their seeded twins in
//! `tests/hostile_input.rs` both call these.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use corecast_media::{
    ChannelId, Codec, CodecInfo, ConnId, Endpoint, Input, Layer, MediaPacket, Output,
};
use corecast_moq::cert::Certificate;
use corecast_moq::endpoint::MoqEndpoint;
use corecast_moq::frames::FrameAssembler;
use corecast_moq::quic::{destination, ConnKey, QuicConn, QuicServerConfig, CID_LEN};
use corecast_moq::webtransport::{datagram_in, header, Header};

/// One server configuration for every input (key generation is slow).
fn config() -> &'static QuicServerConfig {
    static CONFIG: OnceLock<QuicServerConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let cert = Certificate::generate(&["localhost".into()], SystemTime::now()).unwrap();
        QuicServerConfig::new(
            &cert,
            corecast_moq::SERVER_ALPNS,
            16,
            Duration::from_secs(5),
        )
        .unwrap()
    })
}

/// Target `datagram`: never panics. The header read names at most 20
/// bytes of id inside the datagram; an id of our length names a shard and
/// key; a datagram that makes a connection gives an endpoint that takes the
/// datagram again and time (its handshake timeout closes it), and every
/// datagram it sends is at most 1500 bytes. Returns whether a connection
/// was made (the twin counts them).
pub fn datagram(data: &[u8]) -> bool {
    let Some(d) = destination(data) else {
        return false;
    };
    assert!(d.cid.len() <= 20);
    if d.cid.len() == CID_LEN {
        assert!(ConnKey::of_cid(d.cid).is_some());
    }
    if !d.initial {
        return false;
    }
    let now = Instant::now();
    let local: SocketAddr = "127.0.0.1:4443".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let key = ConnKey { shard: 1, key: 2 };
    let Ok(quic) = QuicConn::accept(now, config(), key, local, remote, data) else {
        return false;
    };
    let mut endpoint = MoqEndpoint::new(ConnId(1), quic, now);
    let input = Input::Datagram {
        source: remote,
        destination: local,
        contents: data,
    };
    let _ = endpoint.handle_input(now, input);
    let mut t = now;
    for _ in 0..40 {
        loop {
            match endpoint.poll_output(t) {
                Output::Transmit(x) => assert!(x.contents.len() <= 1500),
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    assert!(at >= t);
                    t = at.max(t + Duration::from_millis(1));
                    break;
                }
            }
        }
        if endpoint.is_closed() {
            break;
        }
        let _ = endpoint.handle_input(t, Input::Timeout);
    }
    assert!(
        endpoint.is_closed() || t.duration_since(now) < Duration::from_secs(11),
        "a handshake that never finishes ends within its timeout"
    );
    true
}

/// Target `frames`: the input is cut into packets (a length byte, a flags
/// byte with the marker and a sequence step, the payload) of each codec in
/// turn; never panics, and every frame that comes out is non-empty.
/// Returns the frames assembled.
pub fn frames(data: &[u8]) -> usize {
    let mut made = 0;
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1, Codec::Opus] {
        let mut a = FrameAssembler::new();
        let mut d = data;
        let mut seq = 0u64;
        let mut ts = 0u32;
        while d.len() >= 2 {
            let (len, flags) = (usize::from(d[0]), d[1]);
            d = &d[2..];
            let payload = &d[..len.min(d.len())];
            d = &d[payload.len()..];
            seq += u64::from(flags & 0x03) + u64::from(flags & 0x03 == 0);
            if flags & 0x04 != 0 {
                ts = ts.wrapping_add(3000);
            }
            let p = packet(codec, seq, ts, flags & 0x80 != 0, payload);
            if let Some(Ok(f)) = a.push(&p) {
                assert!(!f.data.is_empty());
                assert_eq!(f.codec, codec);
                made += 1;
            }
        }
    }
    made
}

fn packet(codec: Codec, seq: u64, rtp_time: u32, marker: bool, payload: &[u8]) -> MediaPacket {
    let info = CodecInfo::new(codec, if codec == Codec::Opus { 48_000 } else { 90_000 });
    let now = Instant::now();
    MediaPacket {
        channel: ChannelId::for_track("fuzz", "pub", "video"),
        kind: info.kind(),
        codec: info,
        seq,
        rtp_time,
        marker,
        arrival: now,
        wallclock: now,
        orientation: None,
        layer: Layer::default(),
        audio_level: None,
        dependency: None,
        payload: Arc::from(payload),
    }
}

/// Target `webtransport`: what a browser's HTTP/3 connection carries
/// before the MoQ session reads it. The input, as a stream's first bytes
/// (either direction), as a datagram and as the CONNECT request's stream,
/// never panics; a header read says how many more bytes it needs (at most a
/// varint's 8) or how long it was (within the input). Returns whether the
/// input parsed as a CONNECT request.
pub fn webtransport(data: &[u8]) -> bool {
    for dir in [quinn_proto::Dir::Uni, quinn_proto::Dir::Bi] {
        match header(data, dir) {
            Header::More(n) => assert!((1..=8).contains(&n)),
            Header::Session(_, len) => assert!(len <= data.len() && len >= 2),
            Header::Other(_) => {}
        }
    }
    let session = quinn_proto::StreamId::new(quinn_proto::Side::Client, quinn_proto::Dir::Bi, 0);
    if let Some(p) = datagram_in(session, bytes::Bytes::copy_from_slice(data)) {
        assert!(p.len() < data.len());
    }
    web_transport_proto::ConnectRequest::decode(&mut &data[..]).is_ok()
}
