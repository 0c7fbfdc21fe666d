//! SIP calls on loopback: a phone written here (plain SIP text and G.711
//! RTP over UDP) calls `sip:ROOM@node`, talks with an SDK peer of the room
//! and hangs up, or is hung up on. Each side's audio is a tone and each
//! side checks it hears the other's frequency.

use crate::common;

use std::net::UdpSocket;
use std::time::Duration;

use crate::common::{http, metric, plain_metric};
use crate::sip_phone::*;
use corecast::node::Node;
use rtp_types::RtpPacketBuilder;
use serde_json::json;

#[test]
fn a_phone_and_a_browser_peer_hear_each_other_and_the_phone_hangs_up() {
    let node = Node::start(&sip_settings(2, (32_000, 32_099))).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut web = Listener::new(&node, "call");
    let mut phone = Phone::new(sip);
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| w.peer.joined()
    ));

    assert_eq!(phone.call("call"), 200);
    let media = phone.media.unwrap();
    assert!((32_000..=32_099).contains(&media.port()), "RTP on {media}");
    // The phone is a peer of the room: the browser peer sees it join.
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| !w.peer.events("peer_joined").is_empty()
    ));
    let joined = web.peer.events("peer_joined")[0].clone();
    let phone_peer = joined["peer"].as_str().unwrap().to_string();
    let calls = calls_json(&node);
    assert_eq!(calls["calls"][0]["peer"], phone_peer.as_str());
    assert_eq!(calls["calls"][0]["room"], "call");
    web.peer
        .request("subscribe", json!({"peer": phone_peer, "track": "audio"}));

    converse(&mut phone, &mut web, Duration::from_secs(4));

    // Steady 20 ms packets toward the phone, the browser's tone in them.
    assert!(
        phone.heard_packets >= 150,
        "{} packets",
        phone.heard_packets
    );
    let phone_hears = dominant_hz(&phone.heard, 8000);
    assert!(
        (phone_hears - 880.0).abs() <= 5.0,
        "the phone hears {phone_hears} Hz"
    );
    let web_hears = dominant_hz(&web.heard, 48_000);
    assert!(
        (web_hears - 440.0).abs() <= 5.0,
        "the browser hears {web_hears} Hz"
    );

    // The phone hangs up: 200, the peer leaves the room, nothing leaks.
    assert_eq!(phone.bye(), 200);
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| !w.peer.events("peer_left").is_empty()
    ));
    assert!(common::wait_for(Duration::from_secs(5), || metric(
        node.http_addr,
        "corecast_endpoints"
    ) == 1));
    assert_eq!(calls_json(&node)["calls"].as_array().unwrap().len(), 0);
    assert_eq!(
        plain_metric(node.http_addr, "corecast_sip_calls_answered_total"),
        1
    );
    node.shutdown();
}

#[test]
fn the_api_hangs_up_and_the_phone_gets_a_bye() {
    let node = Node::start(&sip_settings(1, (32_100, 32_199))).unwrap();
    let mut phone = Phone::new(node.sip_addr.unwrap());
    assert_eq!(phone.call("hangup"), 200);
    let calls = calls_json(&node);
    let id = calls["calls"][0]["id"].as_str().unwrap().to_string();
    // Talk a little so the call is well up.
    for _ in 0..25 {
        phone.talk(440.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        phone.answer_bye(Duration::from_secs(5)),
        "no BYE from the node"
    );
    assert!(common::wait_for(Duration::from_secs(5), || calls_json(
        &node
    )["calls"]
        .as_array()
        .unwrap()
        .is_empty()));
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
    node.shutdown();
}

#[test]
fn bad_requests_are_refused_and_strangers_media_dropped() {
    let node = Node::start(&sip_settings(1, (32_200, 32_299))).unwrap();
    let sip = node.sip_addr.unwrap();
    // Not a room name.
    let mut bad_room = Phone::new(sip);
    assert_eq!(bad_room.call("no%20room"), 404);
    // A BYE for a dialog that does not exist.
    let mut ghost = Phone::new(sip);
    ghost.to = "<sip:x@127.0.0.1>;tag=nothere".into();
    assert_eq!(ghost.bye(), 481);
    // Garbage on the SIP port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for g in [&b"\x00\x01\x02"[..], b"INVITE", &[0xff; 3000]] {
        junk.send_to(g, sip).unwrap();
    }
    // A real call, and RTP aimed at it from an address it did not signal.
    let mut phone = Phone::new(sip);
    assert_eq!(phone.call("fine"), 200);
    let media = phone.media.unwrap();
    let before = metric(node.http_addr, "corecast_bad_packets_total");
    for i in 0..20u16 {
        let p = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(0)
            .sequence_number(i)
            .ssrc(9)
            .payload(&[0u8; 160][..])
            .write_vec()
            .unwrap();
        junk.send_to(&p, media).unwrap();
        phone.talk(440.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let counted = common::wait_for(Duration::from_secs(3), || {
        metric(node.http_addr, "corecast_bad_packets_total") >= before + 20
    });
    assert!(
        counted,
        "bad packets {before} -> {}",
        metric(node.http_addr, "corecast_bad_packets_total")
    );
    assert!(plain_metric(node.http_addr, "corecast_sip_parse_errors_total") >= 2);
    // The strangers' RTP is counted on the call's shard; the phone's went
    // into the room.
    assert!(metric(node.http_addr, "corecast_sip_rtp_refused_total") >= 20);
    assert!(metric(node.http_addr, "corecast_sip_audio_frames_total") > 0);
    assert_eq!(
        plain_metric(node.http_addr, "corecast_sip_unknown_dialog_total"),
        1
    );
    // The call went on: the node answers the phone's BYE.
    assert!(phone.heard_packets > 0);
    assert_eq!(phone.bye(), 200);
    node.shutdown();
}

#[test]
fn calls_over_tcp_are_framed_answered_and_hung_up_on_their_connection() {
    use std::io::{Read, Write};
    let node = Node::start(&sip_settings(1, (32_600, 32_699))).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut tcp = std::net::TcpStream::connect(sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = tcp.local_addr().unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = |cseq: u32| {
        format!(
            "OPTIONS sip:x@{sip} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKo{cseq}\r\n\
             From: <sip:t@{me}>;tag=t\r\nTo: <sip:x@{sip}>\r\nCall-ID: tcp-options\r\n\
             CSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut received = String::new();
    let read_until = |tcp: &mut std::net::TcpStream, received: &mut String, what: &str| {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 8192];
        while !received.contains(what) && std::time::Instant::now() < end {
            if let Ok(n) = tcp.read(&mut buf) {
                received.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        received.contains(what)
    };
    // Two requests in one write, then one cut in two writes.
    tcp.write_all(format!("{}{}", options(1), options(2)).as_bytes())
        .unwrap();
    let third = options(3);
    tcp.write_all(&third.as_bytes()[..40]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    tcp.write_all(&third.as_bytes()[40..]).unwrap();
    assert!(
        read_until(&mut tcp, &mut received, "CSeq: 3 OPTIONS"),
        "{received}"
    );
    assert_eq!(received.matches("SIP/2.0 200").count(), 3, "{received}");

    // A call over the connection.
    let port = rtp.local_addr().unwrap().port();
    let sdp = format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\n"
    );
    let invite = format!(
        "INVITE sip:tcproom@{sip} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKinv\r\n\
         From: <sip:t@{me}>;tag=t\r\nTo: <sip:tcproom@{sip}>\r\nCall-ID: tcp-call\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:t@{me};transport=tcp>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    received.clear();
    tcp.write_all(invite.as_bytes()).unwrap();
    assert!(
        read_until(&mut tcp, &mut received, "CSeq: 1 INVITE\r\n"),
        "{received}"
    );
    assert!(
        read_until(&mut tcp, &mut received, "SIP/2.0 200"),
        "{received}"
    );
    let ok = &received[received.find("SIP/2.0 200").unwrap()..];
    let to = header(ok, "To").unwrap().to_string();
    let ack = format!(
        "ACK sip:corecast@{sip} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKack\r\n\
         From: <sip:t@{me}>;tag=t\r\nTo: {to}\r\nCall-ID: tcp-call\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(ack.as_bytes()).unwrap();
    let calls = || {
        let r = http(node.http_addr, "GET", "/api/sip/calls", &[], b"");
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["calls"].clone()
    };
    assert!(common::wait_for(Duration::from_secs(3), || calls()
        .as_array()
        .is_some_and(|c| c.len() == 1)));
    let id = calls()[0]["id"].as_str().unwrap().to_string();
    // Our BYE comes on the same connection.
    received.clear();
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(
        read_until(&mut tcp, &mut received, "BYE "),
        "no BYE on the connection: {received}"
    );
    assert!(header(&received, "Via").unwrap().starts_with("SIP/2.0/TCP"));
    drop(tcp);

    // A message that does not frame (no Content-Length) closes its connection.
    let mut bad = std::net::TcpStream::connect(sip).unwrap();
    bad.write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4\r\n\r\n")
        .unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(bad.read(&mut buf).unwrap_or(0), 0, "closed");
    assert!(common::wait_for(Duration::from_secs(2), || plain_metric(
        node.http_addr,
        "corecast_sip_tcp_bad_input_total"
    ) == 1));
    node.shutdown();
}

#[test]
fn a_source_that_calls_missing_rooms_too_often_is_blocked() {
    let node = Node::start(&sip_settings(1, (32_700, 32_799))).unwrap();
    let sip = node.sip_addr.unwrap();
    for _ in 0..10 {
        assert_eq!(Phone::on("127.0.0.3", sip).call("no%20such"), 404);
    }
    // Blocked now, even for a room that would do.
    assert_eq!(Phone::on("127.0.0.3", sip).call("fine"), 403);
    assert!(common::wait_for(Duration::from_secs(2), || plain_metric(
        node.http_addr,
        "corecast_sip_blocked_total"
    ) >= 1));
    // Another source is not.
    let mut phone = Phone::new(sip);
    assert_eq!(phone.call("fine"), 200);
    assert_eq!(phone.bye(), 200);
    node.shutdown();
}
