//! Bad input never panics the node: bad HTTP requests get a clear 4xx, and a
//! flood of garbage datagrams at the media port is dropped and counted while
//! a running publisher → viewer session loses no media.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::{http, metric, pump_until, start_node, Peer};
use corecast_media::MediaKind;
use corecast_webrtc::{Client, EndpointConfig};
use rand::{Rng, SeedableRng};

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

fn a_real_offer() -> String {
    let config = EndpointConfig::new(vec![]);
    let (_, offer) =
        Client::publisher(&config, Instant::now(), "127.0.0.1:5000".parse().unwrap()).unwrap();
    offer
}

#[test]
fn bad_requests_get_clear_4xx() {
    let node = start_node(1);
    let h = node.http_addr;

    let r = http(h, "POST", "/whip/s", &[SDP], b"this is not sdp");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("malformed SDP"), "{}", r.body);

    // Truncations of a real offer: a 4xx (or 201 where what is left still
    // parses), never a 5xx, never a crash.
    let offer = a_real_offer();
    for cut in (1..offer.len()).step_by(37) {
        let r = http(h, "POST", "/whip/s", &[SDP], &offer.as_bytes()[..cut]);
        assert!(
            r.status == 201 || (400..500).contains(&r.status),
            "cut {cut}: {} {}",
            r.status,
            r.body
        );
    }
    for cut in [1, 10, 50, offer.len() / 3, offer.len() / 2] {
        let r = http(h, "POST", "/whip/s", &[SDP], &offer.as_bytes()[..cut]);
        assert_eq!(r.status, 400, "cut {cut}: {}", r.body);
    }
    let r = http(
        h,
        "POST",
        "/whep/s",
        &[SDP],
        &offer.as_bytes()[..offer.len() / 2],
    );
    assert!((400..500).contains(&r.status));

    let huge = vec![b'a'; 200 * 1024];
    assert_eq!(http(h, "POST", "/whip/s", &[SDP], &huge).status, 413);
    assert_eq!(
        http(
            h,
            "POST",
            "/whip/s",
            &[("Content-Type", "text/plain")],
            offer.as_bytes()
        )
        .status,
        415
    );
    assert_eq!(
        http(h, "POST", "/whep/s", &[], offer.as_bytes()).status,
        415
    );
    assert_eq!(
        http(h, "POST", "/whip/bad%20name", &[SDP], offer.as_bytes()).status,
        400
    );
    assert_eq!(
        http(h, "POST", "/whep/s", &[SDP], &[0xff, 0xfe, 0x00]).status,
        400
    );

    assert_eq!(
        http(h, "DELETE", "/whip/s/0123456789abcdef", &[], b"").status,
        404
    );
    assert_eq!(http(h, "DELETE", "/whip/s/not-hex", &[], b"").status, 404);
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    assert_eq!(
        http(
            h,
            "PATCH",
            "/whep/s/0123456789abcdef",
            &frag,
            b"a=end-of-candidates\r\n"
        )
        .status,
        404
    );
    assert_eq!(http(h, "GET", "/nothing-here", &[], b"").status, 404);

    // A real session: PATCH with junk is a 400, DELETE twice is 200 then 404.
    let r = http(h, "POST", "/whip/s", &[SDP], offer.as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(
        http(h, "PATCH", &location, &frag, b"a=ice-ufrag:x\r\n").status,
        400
    );
    assert_eq!(
        http(h, "PATCH", &location, &[SDP], b"a=end-of-candidates\r\n").status,
        415
    );
    assert_eq!(
        http(h, "PATCH", &location, &frag, b"a=candidate:garbage\r\n").status,
        400
    );
    assert_eq!(
        http(h, "PATCH", &location, &frag, b"a=end-of-candidates\r\n").status,
        204
    );
    // An ICE restart: new client credentials get new server credentials back.
    let r = http(
        h,
        "PATCH",
        &location,
        &frag,
        b"a=ice-ufrag:newu\r\na=ice-pwd:0123456789abcdefghijkl\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    assert!(r.body.contains("a=ice-ufrag:") && r.body.contains("a=ice-pwd:"));
    assert_eq!(http(h, "DELETE", &location, &[], b"").status, 200);
    assert_eq!(http(h, "DELETE", &location, &[], b"").status, 404);

    // CORS: a page from another origin can POST and read Location.
    let r = http(
        h,
        "OPTIONS",
        "/whip/s",
        &[
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert!(r.status < 300, "preflight {}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = http(
        h,
        "POST",
        "/whip/t",
        &[SDP, ("Origin", "http://example.test")],
        offer.as_bytes(),
    );
    assert!(r
        .header("access-control-expose-headers")
        .is_some_and(|v| v.to_ascii_lowercase().contains("location")));

    assert_eq!(http(h, "GET", "/healthz", &[], b"").status, 200);
    node.shutdown();
}

#[test]
fn a_token_is_required_when_set() {
    let mut settings_node = common::start_node_with_token(1, "s3cret");
    let h = settings_node.http_addr;
    let offer = a_real_offer();
    assert_eq!(
        http(h, "POST", "/whip/s", &[SDP], offer.as_bytes()).status,
        401
    );
    assert_eq!(
        http(
            h,
            "POST",
            "/whep/s",
            &[SDP, ("Authorization", "Bearer nope")],
            offer.as_bytes()
        )
        .status,
        401
    );
    let r = http(
        h,
        "POST",
        "/whip/s",
        &[SDP, ("Authorization", "Bearer s3cret")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 201);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(http(h, "DELETE", &location, &[], b"").status, 401);
    assert_eq!(
        http(
            h,
            "DELETE",
            &location,
            &[("Authorization", "Bearer s3cret")],
            b""
        )
        .status,
        200
    );
    settings_node.stop();
}

/// Garbage of every shape the media port may see. `ufrags` are live
/// sessions' server ufrags: half the binding requests name one of them.
fn garbage(rng: &mut impl Rng, ufrags: &[String]) -> Vec<u8> {
    let len = rng.random_range(0..1500);
    let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    match rng.random_range(0..6) {
        // Random bytes.
        0 => {}
        // A STUN header with a lying length and random attributes.
        1 => {
            let mut s = vec![0x00, 0x01, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42];
            s.extend_from_slice(&d[..d.len().min(40)]);
            d = s;
        }
        // A binding request for an unknown or a real ufrag, without integrity.
        2 => {
            let user = if ufrags.is_empty() || rng.random_bool(0.5) {
                format!("{:08x}:x", rng.random::<u32>())
            } else {
                format!("{}:x", ufrags[rng.random_range(0..ufrags.len())])
            };
            let mut attrs = vec![0x00, 0x06, 0x00, user.len() as u8];
            attrs.extend_from_slice(user.as_bytes());
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
            let mut s = vec![0x00, 0x01, 0x00, attrs.len() as u8, 0x21, 0x12, 0xa4, 0x42];
            s.extend((0..12).map(|_| rng.random::<u8>()));
            s.extend_from_slice(&attrs);
            let cut = rng.random_range(0..=s.len());
            s.truncate(if rng.random_bool(0.3) { cut } else { s.len() });
            d = s;
        }
        // RTP/RTCP-looking headers with bad lengths.
        3 => {
            if !d.is_empty() {
                d[0] = 0x80 | (d[0] & 0x3f);
            }
            d.truncate(rng.random_range(0..20).min(d.len()));
        }
        // DTLS-looking junk.
        4 => {
            if !d.is_empty() {
                d[0] = 22;
            }
            if d.len() > 2 {
                d[1] = 254;
                d[2] = 253;
            }
        }
        // Empty and tiny datagrams.
        _ => d.truncate(rng.random_range(0..3).min(d.len())),
    }
    d
}

#[test]
fn garbage_datagrams_are_dropped_and_media_keeps_flowing() {
    let node = start_node(2);
    let http_addr = node.http_addr;
    let media = node.media_addrs[0];
    let config = EndpointConfig::new(vec![]);
    let mut peers = vec![
        Peer::join(&config, http_addr, "whip", "flood"),
        Peer::join(&config, http_addr, "whep", "flood"),
    ];
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps
        .iter()
        .all(|p| p.client.is_connected())));

    let mut seq = 1u64;
    let warm = (0..200).any(|_| {
        let now = Instant::now();
        peers[0]
            .client
            .send(now, MediaKind::Video, seq, 0, true, &[0x10, 0x00]);
        peers[0].drain(now);
        seq += 1;
        pump_until(&mut peers, Duration::from_millis(20), |ps| {
            !ps[1].payloads(MediaKind::Video).is_empty()
        })
    });
    assert!(warm);
    peers[1].events.clear();

    // Flood from several sockets (several 4-tuples, so both shards get some)
    // while the publisher sends 300 packets. Binding requests name the live
    // sessions' ufrags half the time, and every 8th datagram comes from the
    // viewer's own socket: garbage at the live session's address, which the
    // shard hands to its endpoint.
    let flooders: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let ufrags: Vec<String> = peers.iter().map(|p| p.server_ufrag()).collect();
    assert!(ufrags.iter().all(|u| !u.is_empty()));
    let mut sent_garbage = 0;
    let mut from_the_viewer = 0;
    let mut naming_a_session = 0;
    const PACKETS: u32 = 300;
    for i in 0..PACKETS {
        let now = Instant::now();
        let mut p = vec![0x10];
        p.extend_from_slice(&i.to_be_bytes());
        peers[0]
            .client
            .send(now, MediaKind::Video, seq, i * 3000, true, &p);
        peers[0].drain(now);
        seq += 1;
        for _ in 0..40 {
            let d = garbage(&mut rng, &ufrags);
            if ufrags
                .iter()
                .any(|u| d.windows(u.len()).any(|w| w == u.as_bytes()))
            {
                naming_a_session += 1;
            }
            let from_viewer = sent_garbage % 8 == 7;
            let f = if from_viewer {
                &peers[1].socket
            } else {
                &flooders[sent_garbage % flooders.len()]
            };
            if f.send_to(&d, media).is_ok() {
                sent_garbage += 1;
                from_the_viewer += usize::from(from_viewer);
            }
        }
        pump_until(&mut peers, Duration::from_millis(2), |_| false);
    }
    assert!(
        sent_garbage >= 10_000,
        "sent {sent_garbage} garbage datagrams"
    );
    assert!(
        naming_a_session >= 500,
        "{naming_a_session} binding requests named a live session's ufrag"
    );
    assert!(
        from_the_viewer >= 1000,
        "{from_the_viewer} datagrams came from the live viewer's address"
    );
    pump_until(&mut peers, Duration::from_secs(5), |ps| {
        ps[1].payloads(MediaKind::Video).len() >= PACKETS as usize
    });

    let got = peers[1].payloads(MediaKind::Video);
    let expected: Vec<Vec<u8>> = (0..PACKETS)
        .map(|i| {
            let mut p = vec![0x10];
            p.extend_from_slice(&i.to_be_bytes());
            p
        })
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "the viewer lost media during the flood"
    );
    assert!(got == expected);
    let bad = metric(http_addr, "corecast_bad_packets_total");
    assert!(bad > 0, "garbage is counted");
    assert_eq!(http(http_addr, "GET", "/healthz", &[], b"").status, 200);
    node.shutdown();
}

#[test]
fn a_viewer_without_the_publishers_codec_gets_406() {
    let node = start_node(1);
    let h = node.http_addr;
    let config = EndpointConfig::new(vec![]);
    let local = "127.0.0.1:5000".parse().unwrap();
    let now = Instant::now();
    let (_, h264_offer) =
        Client::with_video_codec(&config, now, local, true, corecast_media::Codec::H264).unwrap();
    let r = http(h, "POST", "/whip/codec", &[SDP], h264_offer.as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    let (_, vp8_view) = Client::viewer(&config, now, local).unwrap();
    let r = http(h, "POST", "/whep/codec", &[SDP], vp8_view.as_bytes());
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(
        r.body.contains("H264"),
        "the reason names the codec: {}",
        r.body
    );
    let (_, h264_view) =
        Client::with_video_codec(&config, now, local, false, corecast_media::Codec::H264).unwrap();
    let r = http(h, "POST", "/whep/codec", &[SDP], h264_view.as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    node.shutdown();
}
