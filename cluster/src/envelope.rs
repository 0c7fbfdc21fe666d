//! The frame around every datagram on the cluster port.
//!
//! ```text
//! "CC" | version (1) | kind (1) | tag (16) | body
//! ```
//!
//! `tag` is HMAC-SHA256 over `version | kind | body`, keyed with the cluster
//! secret and cut to 16 bytes. A node without the secret can neither join
//! nor inject: its datagrams fail the tag and are dropped and counted before
//! any parser of atm0s-sdn sees them. (There is no replay protection: a
//! recorded datagram replays as a duplicate, which atm0s-sdn and the media
//! path already tolerate.)

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: [u8; 2] = *b"CC";
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// Bytes before the body.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + TAG_LEN;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A datagram of atm0s-sdn.
    Sdn,
    /// A presence message of corecast (membership and load).
    Presence,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Sdn => 1,
            Kind::Presence => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Sdn),
            2 => Some(Kind::Presence),
            _ => None,
        }
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a corecast cluster frame (wrong magic, version or kind, too short).
    Garbage,
    /// A frame whose tag does not match: another secret, or tampered.
    BadSecret,
}

/// Seals and opens frames with one cluster secret.
#[derive(Clone)]
pub struct Sealer {
    key: Hmac<Sha256>,
}

impl Sealer {
    pub fn new(secret: &str) -> Sealer {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let key = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
            Ok(k) => k,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        Sealer { key }
    }

    fn tag(&self, kind: Kind, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.key.clone();
        mac.update(&[VERSION, kind.byte()]);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Appends the frame of `body` to `out`.
    pub fn seal(&self, kind: Kind, body: &[u8], out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind.byte());
        out.extend_from_slice(&self.tag(kind, body));
        out.extend_from_slice(body);
    }

    /// The kind and body of a frame, if it is one and its tag matches.
    pub fn open<'a>(&self, data: &'a [u8]) -> Result<(Kind, &'a [u8]), Reject> {
        if data.len() < HEADER_LEN || data[..2] != MAGIC || data[2] != VERSION {
            return Err(Reject::Garbage);
        }
        let kind = Kind::from_byte(data[3]).ok_or(Reject::Garbage)?;
        let (tag, body) = data[4..].split_at(TAG_LEN);
        let mut mac = self.key.clone();
        mac.update(&[VERSION, kind.byte()]);
        mac.update(body);
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(tag)
            .map_err(|_| Reject::BadSecret)?;
        Ok((kind, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_frame_opens_with_the_same_secret_only() {
        let a = Sealer::new("s3cret");
        let mut frame = Vec::new();
        a.seal(Kind::Presence, b"hello", &mut frame);
        assert_eq!(a.open(&frame), Ok((Kind::Presence, &b"hello"[..])));
        assert_eq!(Sealer::new("other").open(&frame), Err(Reject::BadSecret));
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let a = Sealer::new("k");
        let mut frame = Vec::new();
        a.seal(Kind::Sdn, &[7u8; 40], &mut frame);
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[i] ^= 1 << bit;
                assert!(a.open(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn short_and_foreign_datagrams_are_garbage() {
        let a = Sealer::new("k");
        assert_eq!(a.open(b""), Err(Reject::Garbage));
        assert_eq!(a.open(b"CC"), Err(Reject::Garbage));
        assert_eq!(a.open(&[0u8; 100]), Err(Reject::Garbage));
        let mut frame = Vec::new();
        a.seal(Kind::Sdn, b"x", &mut frame);
        frame[3] = 9; // unknown kind
        assert_eq!(a.open(&frame), Err(Reject::Garbage));
    }
}
