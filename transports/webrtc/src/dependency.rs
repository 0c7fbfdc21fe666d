//! The dependency descriptor header extension in str0m's RTP mode: its
//! bytes in from publishers and out to viewers, unchanged. What they say is
//! read in `corecast_media::dd`; str0m only carries them.

use std::sync::Arc;

use str0m::rtp::{Extension, ExtensionMap, ExtensionSerializer, ExtensionValues};

/// A packet's dependency descriptor, as str0m's user extension value.
#[derive(Debug, Clone)]
pub(crate) struct DdBytes(pub Arc<[u8]>);

/// The id corecast offers the extension at; an offer's own id wins.
const DD_ID: u8 = 12;

#[derive(Debug)]
struct DdSerializer;

impl ExtensionSerializer for DdSerializer {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DdBytes>() {
            Some(DdBytes(d)) if d.len() <= buf.len() => {
                buf[..d.len()].copy_from_slice(d);
                d.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        // Shorter than its mandatory fields: not a descriptor.
        if buf.len() < 3 {
            return false;
        }
        ev.user_values.set(DdBytes(Arc::from(buf)));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        // The one-byte form holds at most 16 bytes; a keyframe's
        // descriptor with its structure is longer.
        ev.user_values
            .get::<DdBytes>()
            .is_some_and(|DdBytes(d)| d.len() > 16)
    }
}

/// `map` with the dependency descriptor added.
pub(crate) fn with_dependency_descriptor(mut map: ExtensionMap) -> ExtensionMap {
    map.set(
        DD_ID,
        Extension::with_serializer(corecast_media::dd::URI, DdSerializer),
    );
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_go_out_as_they_came_in() {
        let s = DdSerializer;
        let mut ev = ExtensionValues::default();
        assert!(!s.parse_value(&[1, 2], &mut ev), "too short");
        let long: Vec<u8> = (0..40).collect();
        assert!(s.parse_value(&long, &mut ev));
        assert!(s.requires_two_byte_form(&ev));
        let mut buf = [0u8; 64];
        assert_eq!(s.write_to(&mut buf, &ev), 40);
        assert_eq!(&buf[..40], &long[..]);
        // No room: nothing written rather than a cut descriptor.
        assert_eq!(s.write_to(&mut buf[..10], &ev), 0);
        let mut short = ExtensionValues::default();
        assert!(s.parse_value(&[0x80, 0, 1], &mut short));
        assert!(!s.requires_two_byte_form(&short));
        assert_eq!(s.write_to(&mut buf, &ExtensionValues::default()), 0);
    }
}
