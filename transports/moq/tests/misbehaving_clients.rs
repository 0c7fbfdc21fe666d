//! Clients that break the rules, one `MoqEndpoint` each, in simulated time
//! with no socket: a WebTransport CONNECT that is garbage or offers no
//! version corecast speaks, a moq-lite setup message that claims a gigabyte,
//! streams opened and abandoned. Each is refused or outlived: the endpoint
//! never panics, closes the connection when the session cannot go on (and
//! counts the refusal), and bounds what it holds for one that stays.

use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use corecast_media::{ConnId, Endpoint, Input, Output};
use corecast_moq::cert::Certificate;
use corecast_moq::endpoint::MoqEndpoint;
use corecast_moq::quic::{pinned_client_config, ConnEvent, ConnKey, QuicConn, QuicServerConfig};
use corecast_moq::transport::QuicSession;
use web_transport_trait::poll::{SendStream as _, Session as _};

const CLIENT: &str = "127.0.0.1:50000";
const SERVER: &str = "127.0.0.1:4443";

/// A client connection speaking `alpn` and the server's endpoint.
struct Pair {
    now: Instant,
    client: QuicConn,
    server: MoqEndpoint,
    /// The client's session once connected.
    session: Option<QuicSession>,
    /// Why the client's connection ended, once it did.
    lost: Option<String>,
}

impl Pair {
    fn new(alpn: &str) -> Pair {
        let now = Instant::now();
        let cert = Certificate::generate(&["localhost".into()], SystemTime::now()).unwrap();
        let config = QuicServerConfig::new(
            &cert,
            corecast_moq::SERVER_ALPNS,
            corecast_moq::MAX_STREAMS,
            Duration::from_secs(30),
        )
        .unwrap();
        let mut client_config = pinned_client_config(&cert.fingerprint(), &[alpn]).unwrap();
        // The client asks for no idle timeout: only the server's ends a
        // quiet client's session.
        let mut transport = quinn_proto::TransportConfig::default();
        transport.max_idle_timeout(None);
        client_config.transport_config(std::sync::Arc::new(transport));
        let (local, server_addr): (SocketAddr, SocketAddr) =
            (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        let key = ConnKey { shard: 0, key: 1 };
        let mut client =
            QuicConn::connect(now, client_config, key, local, server_addr, "localhost").unwrap();
        let first = client.poll_transmit(now).unwrap();
        let quic = QuicConn::accept(
            now,
            &config,
            ConnKey { shard: 0, key: 2 },
            server_addr,
            local,
            &first.contents,
        )
        .unwrap();
        let server = MoqEndpoint::new(ConnId(9), quic, now);
        let mut pair = Pair {
            now,
            client,
            server,
            session: None,
            lost: None,
        };
        pair.run(Duration::from_millis(50));
        assert!(pair.session.is_some(), "the client connected");
        pair
    }

    /// Moves datagrams both ways and time forward, in 5 ms steps, for `d`
    /// or until the client's connection is gone.
    fn run(&mut self, d: Duration) {
        let (local, server_addr): (SocketAddr, SocketAddr) =
            (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        let end = self.now + d;
        while self.now < end && self.lost.is_none() {
            for e in self.client.process() {
                match e {
                    ConnEvent::Connected { alpn } => self.session = Some(self.client.session(alpn)),
                    ConnEvent::Lost(why) => self.lost = Some(why),
                    ConnEvent::Drained => {}
                }
            }
            while let Some(t) = self.client.poll_transmit(self.now) {
                let input = Input::Datagram {
                    source: local,
                    destination: server_addr,
                    contents: &t.contents,
                };
                self.server.handle_input(self.now, input).unwrap();
            }
            loop {
                match self.server.poll_output(self.now) {
                    Output::Transmit(t) => {
                        self.client
                            .handle_datagram(self.now, server_addr, &t.contents)
                    }
                    Output::Event(_) => {}
                    Output::Timeout(_) => break,
                }
            }
            self.now += Duration::from_millis(5);
            self.client.handle_timeout(self.now);
            let _ = self.server.handle_input(self.now, Input::Timeout);
        }
    }

    /// The client goes quiet for `d`: the server's datagrams are lost and
    /// the client sends nothing.
    fn silence(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end && !self.server.is_closed() {
            while let Output::Transmit(_) | Output::Event(_) = self.server.poll_output(self.now) {}
            self.now += Duration::from_millis(100);
            let _ = self.server.handle_input(self.now, Input::Timeout);
        }
    }

    fn session(&mut self) -> &mut QuicSession {
        self.session.as_mut().unwrap()
    }
}

/// Opens a stream (`bi` or not) on the client and writes `body` without
/// finishing it; `false` once no stream may be opened.
fn open_and_write(session: &mut QuicSession, bi: bool, body: &[u8]) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let send = if bi {
        match session.poll_open_bi(&mut cx) {
            Poll::Ready(Ok((send, _))) => send,
            _ => return false,
        }
    } else {
        match session.poll_open_uni(&mut cx) {
            Poll::Ready(Ok(send)) => send,
            _ => return false,
        }
    };
    let mut send = send;
    let Poll::Ready(Ok(n)) = send.poll_write(&mut cx, body) else {
        panic!("a fresh stream takes a few bytes");
    };
    assert_eq!(n, body.len());
    true
}

/// A client on `h3` that sends `body` on its first bidirectional stream
/// (where the CONNECT request goes) gets its connection closed, counted
/// as refused; returns the close's reason as the client saw it.
fn connect_with(body: &[u8]) -> String {
    let mut pair = Pair::new(corecast_moq::H3);
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok((mut send, _recv))) = pair.session().poll_open_bi(&mut cx) else {
        panic!("a stream to send on");
    };
    let Poll::Ready(Ok(n)) = send.poll_write(&mut cx, body) else {
        panic!("the body goes");
    };
    assert_eq!(n, body.len());
    send.finish().unwrap();
    pair.run(Duration::from_secs(2));
    assert!(pair.server.is_closed(), "the server closed the connection");
    assert_eq!(pair.server.moq_stats().requests_refused, 1);
    pair.lost.expect("the client saw the close")
}

fn connect_request(url: &str, protocols: &[&str]) -> Vec<u8> {
    let mut b = BytesMut::new();
    web_transport_proto::ConnectRequest::new(url.parse::<url::Url>().unwrap())
        .with_protocols(protocols.iter().map(|p| p.to_string()))
        .encode(&mut b)
        .unwrap();
    b.to_vec()
}

#[test]
fn bad_webtransport_connects_are_refused() {
    // Garbage, a DATA frame, a HEADERS frame of junk QPACK.
    for body in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x00, 0x03, 1, 2, 3],
        &[0x01, 0x04, 0xff, 0xff, 0xff, 0xff],
    ] {
        let why = connect_with(body);
        assert!(why.contains("webtransport refused"), "{why}");
    }
    // A well-formed CONNECT offering no MoQ version corecast speaks.
    let why = connect_with(&connect_request(
        "https://localhost:4443/",
        &["moqt-99", "h3-chat"],
    ));
    assert!(why.contains("webtransport refused"), "{why}");
    // A CONNECT that ends half way.
    let full = connect_request("https://localhost:4443/?token=abc", &["moq-lite-05"]);
    let why = connect_with(&full[..full.len() / 2]);
    assert!(why.contains("webtransport refused"), "{why}");
}

#[test]
fn a_setup_message_claiming_a_gigabyte_is_refused() {
    let mut pair = Pair::new("moq-lite-05");
    // moq-lite-05's setup stream: type 1 (SETUP), then a size of 2^30 - 1
    // bytes (moq-net takes at most 64 MiB), then a little of it.
    let body = [0x01, 0xbf, 0xff, 0xff, 0xff, 1, 2, 3, 4];
    assert!(open_and_write(pair.session(), false, &body));
    pair.run(Duration::from_secs(2));
    assert!(pair.server.is_closed(), "the server closed the connection");
    assert_eq!(pair.server.moq_stats().requests_refused, 1);
    // moq-net's handshake closes it (with why), then the endpoint counts it.
    let why = pair.lost.expect("the client saw the close");
    assert!(why.contains("message too large"), "{why}");
}

#[test]
fn abandoned_streams_are_bounded_and_outlived() {
    // moq-lite-04 has no setup stream: the session starts with the
    // connection, and takes whatever streams the client opens.
    let mut pair = Pair::new("moq-lite-04");
    let mut opened = [0u32; 2];
    for (i, bi) in [true, false].into_iter().enumerate() {
        // Half a control type on bidirectional streams (a varint's first
        // byte that promises eight), half a group header on the others.
        let body: &[u8] = if bi { &[0xc0, 0] } else { &[0x00, 0x7f] };
        while open_and_write(pair.session(), bi, body) {
            opened[i] += 1;
            assert!(opened[i] <= 10_000, "the server limits streams");
        }
        pair.run(Duration::from_millis(200));
        // The server gives more stream credit as streams end, so a few
        // more may open: the limit is on streams open at once.
        while open_and_write(pair.session(), bi, body) {
            opened[i] += 1;
            assert!(opened[i] <= 10_000, "the server limits streams");
        }
    }
    assert!(
        opened.iter().all(|&n| n >= corecast_moq::MAX_STREAMS / 2),
        "{opened:?}"
    );
    // The session stays up (a relay peering with corecast asks for nothing
    // until its own clients do), its streams bounded, for as long as the
    // client keeps the connection alive ...
    pair.run(Duration::from_secs(20));
    assert!(
        !pair.server.is_closed(),
        "a session that asks nothing is kept"
    );
    assert!(pair.lost.is_none());
    // ... and ends by QUIC's idle timeout (30 s) once the client goes quiet.
    pair.silence(Duration::from_secs(40));
    assert!(
        pair.server.is_closed(),
        "the idle timeout ended the session"
    );
}
