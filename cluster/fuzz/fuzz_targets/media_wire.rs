//! Media packets from other nodes: decode, and what decodes re-encodes to
//! the same bytes.
#![no_main]

use std::time::Instant;

use corecast_media::{decode_media, encode_media, ChannelId};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    if let Ok(p) = decode_media(ChannelId(1), data, now) {
        let mut again = Vec::new();
        encode_media(&p, &mut again);
        assert_eq!(again, data);
    }
});
