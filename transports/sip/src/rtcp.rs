//! The RTCP a call needs (RFC 3550 §6): our sender report with a CNAME
//! every few seconds, and a check that what arrives at the RTCP port is a
//! compound RTCP packet (counted, not otherwise used yet).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What a sender report says about our stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    /// The wall-clock time of `rtp_time`.
    pub at: SystemTime,
    pub rtp_time: u32,
    pub packets: u32,
    pub octets: u32,
}

/// The 64-bit NTP timestamp of a wall-clock time.
pub fn ntp_time(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A compound packet: SR (no report blocks) then SDES with our CNAME.
pub fn sender_report(info: &SenderInfo, cname: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // SR: V=2, P=0, RC=0, PT=200, length 6 (28 bytes).
    out.extend_from_slice(&[0x80, 200, 0, 6]);
    out.extend_from_slice(&info.ssrc.to_be_bytes());
    out.extend_from_slice(&ntp_time(info.at).to_be_bytes());
    out.extend_from_slice(&info.rtp_time.to_be_bytes());
    out.extend_from_slice(&info.packets.to_be_bytes());
    out.extend_from_slice(&info.octets.to_be_bytes());
    // SDES: one chunk, CNAME, end, padded to 32 bits.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let mut chunk = Vec::with_capacity(8 + cname.len());
    chunk.extend_from_slice(&info.ssrc.to_be_bytes());
    chunk.push(1);
    chunk.push(cname.len() as u8);
    chunk.extend_from_slice(cname);
    chunk.push(0);
    while chunk.len() % 4 != 0 {
        chunk.push(0);
    }
    let words = (4 + chunk.len()) / 4 - 1;
    out.extend_from_slice(&[0x81, 202]);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&chunk);
    out
}

/// Whether `data` is a compound RTCP packet: version 2 throughout, the
/// first a report (SR 200 or RR 201, RFC 3550 §6.1), each length within
/// the datagram and the lengths adding up to it.
pub fn is_compound(data: &[u8]) -> bool {
    let mut at = 0;
    let mut first = true;
    while at < data.len() {
        let Some(head) = data.get(at..at + 4) else {
            return false;
        };
        if head[0] >> 6 != 2 || !(200..=206).contains(&head[1]) {
            return false;
        }
        if first && !(head[1] == 200 || head[1] == 201) {
            return false;
        }
        first = false;
        let len = (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1) * 4;
        at += len;
    }
    at == data.len() && !data.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_reports_are_well_formed_compounds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let sr = sender_report(
            &SenderInfo {
                ssrc: 0x1234_5678,
                at,
                rtp_time: 160,
                packets: 3,
                octets: 480,
            },
            "corecast",
        );
        assert!(is_compound(&sr));
        assert_eq!(&sr[..2], &[0x80, 200]);
        assert_eq!(
            u32::from_be_bytes(sr[4..8].try_into().unwrap()),
            0x1234_5678
        );
        // NTP seconds and the half second.
        let ntp = u64::from_be_bytes(sr[8..16].try_into().unwrap());
        assert_eq!(ntp >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(ntp & 0xffff_ffff, 1 << 31);
        assert_eq!(u32::from_be_bytes(sr[20..24].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(sr[24..28].try_into().unwrap()), 480);
        // SDES with the CNAME.
        assert_eq!(sr[29], 202);
        assert_eq!(&sr[38..46], b"corecast");
        assert_eq!(sr.len() % 4, 0);
    }

    #[test]
    fn what_is_not_a_compound_packet_is_told_apart() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
        assert!(is_compound(&rr));
        assert!(!is_compound(&[]));
        assert!(!is_compound(&rr[..6]), "cut");
        assert!(!is_compound(&[0x80, 202, 0, 1, 0, 0, 0, 9]), "SDES first");
        assert!(!is_compound(&[0x40, 201, 0, 1, 0, 0, 0, 9]), "version 1");
        assert!(!is_compound(&[0x80, 0, 0, 1, 0, 0, 0, 9]), "RTP, PCMU");
        let mut two = rr.to_vec();
        two.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 9]);
        assert!(is_compound(&two));
        two.push(0);
        assert!(!is_compound(&two), "a stray byte");
    }
}
