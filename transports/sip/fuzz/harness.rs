//! The checks of the fuzz targets of corecast-sip, one function per target.
//! The libFuzzer target in `fuzz_targets/` and its seeded twin in
//! `tests/hostile_input.rs` both call these, so CI runs the same checks on
//! every change that the fuzzer runs for hours.

use std::time::{Duration, Instant};

use corecast_sip::message::{frame_len, Framing, Message};
use corecast_sip::sdp::{
    CodecName, LocalMedia, SdpSession, SessionDescription, DEFAULT_PREFERENCE,
};
use corecast_sip::transaction::{Config, Transactions, Transport};

/// Target `message`: any bytes, as a datagram and as a stream message.
/// Never panics; whatever parses prints, and the print parses back (as a
/// stream message, which it frames exactly) to an equal message that prints
/// the same; a request's 200 response builds and round-trips too; a
/// transaction table takes the message and runs its timers out. Returns
/// whether the bytes parsed as a datagram (the twin counts them).
pub fn message(data: &[u8]) -> bool {
    let _ = frame_len(data);
    if let Ok(m) = Message::parse(data, Framing::Stream) {
        round_trip(&m);
    }
    let Ok(m) = Message::parse(data, Framing::Datagram) else {
        return false;
    };
    round_trip(&m);
    if m.is_request() {
        if let Ok(r) = Message::response(&m, 200, None, Some("fz")) {
            round_trip(&r);
            assert_eq!(r.summary().call_id, m.summary().call_id);
            assert_eq!(r.summary().via, m.summary().via);
        }
    }
    let base = Instant::now();
    let from = ([192, 0, 2, 1], 5060).into();
    let mut t = Transactions::new(Config::default());
    for transport in [Transport::Unreliable, Transport::Reliable] {
        let _ = t.receive(base, m.clone(), from, transport);
        let _ = t.send_request(base, m.clone(), from, transport);
    }
    t.handle_timeout(base + Duration::from_secs(3600));
    assert!(t.is_empty());
    while t.poll_output().is_some() {}
    true
}

/// Target `sdp`: any bytes as an SDP offer and as an answer to our offer.
/// Never panics; an answer we write parses back, with the agreed codec
/// first on the kept audio m-line, one m-line for each offered, and our
/// address; the `o=` version goes up by one per body written. Returns
/// whether the bytes were answered (the twin counts them).
pub fn sdp(data: &[u8]) -> bool {
    let parsed = SessionDescription::parse(data);
    let local = LocalMedia {
        address: [203, 0, 113, 5].into(),
        rtp_port: 30000,
    };
    let mut s = SdpSession::new(7);
    let _ = s.offer(&local, &[CodecName::Pcmu, CodecName::Pcma, CodecName::Opus]);
    let _ = s.apply_answer(data);
    let Ok(answer) = s.answer(data, &local, DEFAULT_PREFERENCE) else {
        assert_eq!(s.version(), 1);
        return false;
    };
    assert_eq!(s.version(), 2);
    let offer = match parsed {
        Ok(offer) => offer,
        Err(e) => panic!("answered an offer that does not parse: {e}"),
    };
    let back = match SessionDescription::parse(answer.sdp.as_bytes()) {
        Ok(back) => back,
        Err(e) => panic!("answer does not parse back ({e}): {:?}", answer.sdp),
    };
    assert_eq!(back.media.len(), offer.media.len());
    assert_eq!(back.connection, Some(local.address));
    let Some(i) = back.audio_index() else {
        panic!("answer without audio: {:?}", answer.sdp);
    };
    assert_eq!(offer.audio_index(), Some(i));
    let audio = &back.media[i];
    assert_eq!(audio.port, local.rtp_port);
    assert_eq!(audio.payload_types().next(), Some(answer.media.codec.pt));
    assert_eq!(
        back.media.iter().filter(|m| m.port != 0).count(),
        1,
        "{:?}",
        answer.sdp
    );
    true
}

fn round_trip(m: &Message) {
    let printed = m.to_bytes();
    let again = match Message::parse(&printed, Framing::Stream) {
        Ok(again) => again,
        Err(e) => panic!(
            "printed message does not parse back ({e}): {:?}",
            String::from_utf8_lossy(&printed)
        ),
    };
    assert_eq!(&again, m);
    assert_eq!(again.to_bytes(), printed);
    assert_eq!(frame_len(&printed), Ok(Some(printed.len())));
}

/// Target `call`: a call's media endpoint fed datagrams cut from the bytes
/// (RTP, RTCP, DTMF, garbage; some from an address the call did not
/// signal) and Opus packets of the room from them, with time passing in
/// 20 ms steps. Never panics; what it publishes is Opus on the call's
/// channel with sequence numbers one apart; what it sends goes from the
/// call's socket to the signalled address only. Returns whether any RTP
/// from the phone was taken (the twin counts them).
pub fn call(data: &[u8]) -> bool {
    use corecast_media::{ChannelId, Codec, ConnId, Endpoint, Input, MediaKind, MediaPacket};
    use corecast_media::{Command, Event, Output, SlotId};
    use corecast_sip::call::{opus_info, CallConfig, CallSetup, SipEndpoint};
    use corecast_sip::sdp::{Codec as SdpCodec, Direction, NegotiatedMedia, TelephoneEvent};
    use std::net::SocketAddr;

    let Some((&first, rest)) = data.split_first() else {
        return false;
    };
    let (name, pt, rate) = match first % 3 {
        0 => (CodecName::Pcmu, 0, 8000),
        1 => (CodecName::Pcma, 8, 8000),
        _ => (CodecName::Opus, 111, 48_000),
    };
    let phone: SocketAddr = "192.0.2.7:4000".parse().expect("addr");
    let stranger: SocketAddr = "192.0.2.8:4000".parse().expect("addr");
    let local: SocketAddr = "198.51.100.1:30000".parse().expect("addr");
    let media = NegotiatedMedia {
        remote: Some(phone),
        remote_rtcp: Some("192.0.2.7:4001".parse().expect("addr")),
        codec: SdpCodec {
            name,
            pt,
            clock_rate: rate,
            channels: 1,
            fmtp: None,
        },
        telephone_event: Some(TelephoneEvent {
            pt: 101,
            clock_rate: 8000,
        }),
        remote_ptime: None,
        direction: Direction::SendRecv,
        on_hold: false,
    };
    let audio = ChannelId(42);
    let t0 = Instant::now();
    let rtcp: SocketAddr = "198.51.100.1:30001".parse().expect("addr");
    let setup = CallSetup {
        conn: ConnId(7),
        local,
        rtcp_local: Some(rtcp),
        wallclock: (t0, std::time::SystemTime::UNIX_EPOCH),
        media,
        audio,
        ssrc: 5,
    };
    let Ok(mut ep) = SipEndpoint::new(CallConfig::default(), setup, t0) else {
        return false;
    };
    let _ = ep.handle_input(
        t0,
        Input::Command(Command::Subscribe {
            slot: SlotId(0),
            channel: Some(ChannelId(9)),
        }),
    );
    let mut now = t0;
    let mut next_seq = None;
    let mut drain = |ep: &mut SipEndpoint, now: Instant| loop {
        match ep.poll_output(now) {
            Output::Timeout(_) => break,
            Output::Transmit(t) if t.source == rtcp => {
                assert_eq!(
                    t.destination.ip(),
                    phone.ip(),
                    "RTCP to the signalled address"
                );
                assert!(corecast_sip::rtcp::is_compound(&t.contents));
            }
            Output::Transmit(t) => {
                assert_eq!(t.source, local, "sent from the call's socket");
                assert_eq!(t.destination, phone, "sent to the signalled address");
            }
            Output::Event(Event::Media(p)) => {
                assert_eq!(p.channel, audio);
                assert_eq!(p.codec.codec, Codec::Opus);
                if let Some(seq) = next_seq {
                    assert_eq!(p.seq, seq, "published sequence numbers are one apart");
                }
                next_seq = Some(p.seq + 1);
            }
            Output::Event(_) => {}
        }
    };
    // Each chunk: a length byte, a flags byte, then that many bytes.
    let mut rest = rest;
    let mut seq = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]).min(rest.len() - 2);
        let flags = rest[1];
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        match flags % 4 {
            // From the phone, or from a stranger.
            0 | 1 => {
                let source = if flags % 4 == 0 { phone } else { stranger };
                let destination = if flags & 0x10 != 0 { rtcp } else { local };
                let _ = ep.handle_input(
                    now,
                    Input::Datagram {
                        source,
                        destination,
                        contents: chunk,
                    },
                );
            }
            // An Opus packet of the room for slot 0.
            2 => {
                let packet = MediaPacket {
                    channel: ChannelId(9),
                    kind: MediaKind::Audio,
                    codec: opus_info(),
                    seq,
                    rtp_time: (seq as u32).wrapping_mul(960),
                    marker: false,
                    arrival: now,
                    wallclock: now,
                    orientation: None,
                    layer: Default::default(),
                    audio_level: None,
                    dependency: None,
                    payload: chunk.into(),
                };
                seq += 1;
                let _ = ep.handle_input(now, Input::Media(&packet));
                let _ = ep.handle_input(now, Input::Flush);
            }
            // Time passes.
            _ => {
                now += Duration::from_millis(20 * u64::from(flags >> 2).min(10));
                let _ = ep.handle_input(now, Input::Timeout);
            }
        }
        drain(&mut ep, now);
    }
    ep.call_stats().rtp_in > 0
}
