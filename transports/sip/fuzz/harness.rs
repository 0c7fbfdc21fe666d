//! The checks of the fuzz targets of corecast-sip, one function per target.
//! The libFuzzer target in `fuzz_targets/` and its seeded twin in
//! `tests/hostile_input.rs` both call these, so CI runs the same checks on
//! every change that the fuzzer runs for hours.

use std::time::{Duration, Instant};

use corecast_sip::message::{frame_len, Framing, Message};
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
