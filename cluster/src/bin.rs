//! The binary encoding of cluster messages (bincode, size-limited).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message decoded: a length prefix beyond it is refused instead of
/// allocated.
const LIMIT: u64 = 64 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(LIMIT)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data into a Vec: fails only past LIMIT, which our own values
    // never reach; an empty message is then refused by the receiver.
    options().serialize(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    options().deserialize(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_length_prefix_is_refused_not_allocated() {
        let mut data = vec![0xffu8; 8];
        data.extend_from_slice(b"abc");
        assert_eq!(decode::<Vec<u8>>(&data), None);
        assert_eq!(
            decode::<String>(&encode(&"hi".to_string())),
            Some("hi".into())
        );
    }
}
