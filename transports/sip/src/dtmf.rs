//! DTMF digits from RFC 4733 telephone-event packets.
//!
//! A phone sends one key press as several packets with the same RTP
//! timestamp (the event's start): the first ones as it goes on, then the
//! end packet (E bit) three times. [`DtmfReceiver`] turns them into one
//! digit per press, at the first packet of the press, so that a lost end
//! packet loses nothing and repeated ones count once.

/// The payload of one telephone-event packet (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code: 0–9, 10 `*`, 11 `#`, 12–15 `A`–`D`, others (flash,
    /// tones) are not digits.
    pub event: u8,
    /// The end bit.
    pub end: bool,
    /// The volume, 0 to 63 (-dBm0).
    pub volume: u8,
    /// How long it has lasted, in RTP clock units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads a telephone-event payload (at least 4 bytes; redundant blocks
    /// after the first are ignored).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b = payload.get(..4)?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The key, for events 0–15.
    pub fn digit(self) -> Option<char> {
        Some(match self.event {
            0..=9 => char::from(b'0' + self.event),
            10 => '*',
            11 => '#',
            12..=15 => char::from(b'A' + self.event - 12),
            _ => return None,
        })
    }
}

/// Key presses of one call.
#[derive(Debug, Default, Clone)]
pub struct DtmfReceiver {
    /// The RTP timestamp of the last press reported.
    last: Option<u32>,
}

impl DtmfReceiver {
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// One telephone-event packet with its RTP timestamp: the digit when
    /// it starts a new press, else `None` (a continuation, a repeated end
    /// packet, an event that is not a key, an unreadable payload).
    pub fn receive(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = TelephoneEvent::parse(payload)?;
        if self.last == Some(timestamp) {
            return None;
        }
        let digit = event.digit()?;
        self.last = Some(timestamp);
        Some(digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn a_press_is_one_digit_however_many_packets_carry_it() {
        let mut r = DtmfReceiver::new();
        assert_eq!(r.receive(1000, &packet(5, false, 160)), Some('5'));
        assert_eq!(r.receive(1000, &packet(5, false, 320)), None);
        for _ in 0..3 {
            assert_eq!(r.receive(1000, &packet(5, true, 800)), None);
        }
        // The same key again is a new press: a new timestamp.
        assert_eq!(r.receive(2600, &packet(5, false, 160)), Some('5'));
        assert_eq!(r.receive(4000, &packet(11, true, 800)), Some('#'));
    }

    #[test]
    fn keys_are_named_as_on_the_keypad() {
        let names: String = (0..16)
            .map(|e| {
                TelephoneEvent::parse(&[e, 0, 0, 0])
                    .and_then(TelephoneEvent::digit)
                    .unwrap()
            })
            .collect();
        assert_eq!(names, "0123456789*#ABCD");
        assert_eq!(TelephoneEvent::parse(&[16, 0, 0, 0]).unwrap().digit(), None);
        let e = TelephoneEvent::parse(&[1, 0x80 | 0x3f, 0x01, 0x40]).unwrap();
        assert!(e.end);
        assert_eq!((e.volume, e.duration), (63, 320));
    }

    #[test]
    fn short_or_unknown_payloads_say_nothing() {
        let mut r = DtmfReceiver::new();
        assert_eq!(r.receive(1, &[1, 2, 3]), None);
        assert_eq!(r.receive(2, &[]), None);
        assert_eq!(r.receive(3, &[16, 0, 0, 0]), None, "flash is not a key");
    }
}
