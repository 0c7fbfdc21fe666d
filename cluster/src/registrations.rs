//! SIP registrations in the cluster's key-value store.
//!
//! One map, [`REGISTRATIONS_MAP`]: one entry per binding (address-of-record
//! and contact), set by the node whose registrar holds it, deleted when it
//! goes. Every media node reads it, so that a call to a user registered on
//! another node is placed from that node. A record carries its expiry (Unix
//! milliseconds): one whose node died without deleting it goes stale by
//! itself.

use serde::{Deserialize, Serialize};

/// The dht_kv map of SIP registrations (a fixed number: part of the
/// protocol).
pub const REGISTRATIONS_MAP: u64 = 0x636f_7265_7369_7072; // "coresipr"

/// One binding of a registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    /// `user@host`, host in lower case.
    pub aor: String,
    /// The Contact URI.
    pub contact: String,
    /// The binding's cluster-wide id (`node-time-counter`).
    pub session: String,
    /// The node that holds it (set by the cluster when stored).
    pub node: u32,
    /// When it expires, Unix milliseconds.
    pub expires_ms: u64,
}

impl RegistrationRecord {
    pub fn key(&self) -> u64 {
        registration_key(&self.aor, &self.contact)
    }

    pub fn encode(&self) -> Vec<u8> {
        crate::bin::encode(self)
    }

    pub fn decode(data: &[u8]) -> Option<RegistrationRecord> {
        crate::bin::decode(data)
    }
}

/// The key of a binding's entry (stable across builds, like channel ids).
pub fn registration_key(aor: &str, contact: &str) -> u64 {
    corecast_media::ChannelId::for_track("sip-registration", aor, contact).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keys_differ_per_binding() {
        let r = RegistrationRecord {
            aor: "alice@example.com".into(),
            contact: "sip:alice@192.0.2.7:5062".into(),
            session: "3-18c-1".into(),
            node: 3,
            expires_ms: 1_700_000_000_000,
        };
        assert_eq!(RegistrationRecord::decode(&r.encode()), Some(r.clone()));
        assert_eq!(RegistrationRecord::decode(b"\x01"), None);
        assert_ne!(
            r.key(),
            registration_key("alice@example.com", "sip:alice@192.0.2.8:5062")
        );
        assert_ne!(r.key(), registration_key("bob@example.com", &r.contact));
    }
}
