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
