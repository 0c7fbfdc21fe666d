//! VP8 payload descriptors (RFC 7741 section 4.2) and PictureID /
//! TL0PICIDX rewriting toward one viewer.
//!
//! Why: with simulcast every layer a publisher sends is an independent VP8
//! stream, with its own PictureID and TL0PICIDX sequences, unrelated to the
//! other layers'. A receiver's frame-reference logic (which frames are
//! complete, which ones a frame depends on, whether a gap means loss) runs
//! on those numbers. When the SFU switches a viewer from one layer to
//! another, the numbers would jump arbitrarily, and when it gives the viewer
//! only some temporal layers, the pictures it leaves out would look lost.
//! So, per viewer, the numbers are rewritten: a new run (the first packet
//! after a switch of source) continues from the last picture sent, and the
//! pictures of temporal layers left out are taken out of the numbering.
//!
//! Everything here is sans-IO and allocates nothing:
//!
//! - [`parse`] reads a payload descriptor into a [`Vp8Descriptor`].
//! - [`Vp8Rewriter::offsets`] gives the deltas for one forwarded packet;
//!   [`Vp8Rewriter::drop_picture`] tells it about a picture not forwarded.
//! - [`Vp8Rewriter::apply_in_place`] writes the rewritten numbers into a
//!   payload the caller owns; skip it when [`Vp8Offsets::is_zero`]. (The
//!   WebRTC endpoint does not copy: str0m's `Vp8Patch` writes the same
//!   numbers while it serializes.)
//!
//! A PictureID keeps the width it came in (7 or 15 bits); the output
//! numbers wrap in that width. Sources are expected to keep one width (as
//! senders do); a viewer switched between a 7-bit and a 15-bit source still
//! gets `last + 1`, taken modulo the new source's width.

const MASK15: u16 = 0x7fff;
const MASK7: u16 = 0x7f;

/// How many pictures behind the newest one a dropped picture is
/// remembered. A forwarded packet arriving later than this (behind the
/// newest picture seen in its run) may get a wrong PictureID when pictures
/// were dropped in between; callers should not forward packets that late.
pub const REORDER_PICTURES: u16 = 32;

// One bit per remembered picture in `Vp8Rewriter::dropped`.
const _: () = assert!(REORDER_PICTURES as u32 <= u32::BITS);

/// The fields of a VP8 payload descriptor (RFC 7741 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// PictureID (I bit), 7 or 15 bits wide.
    pub picture_id: Option<u16>,
    /// The PictureID is 15 bits wide (M bit), not 7.
    pub long_picture_id: bool,
    /// TL0PICIDX (L bit).
    pub tl0picidx: Option<u8>,
    /// Temporal layer index (T bit), 0..=3.
    pub tid: Option<u8>,
    /// Y bit: the picture depends only on the base layer (only with a TID).
    pub layer_sync: bool,
    /// KEYIDX (K bit), 0..=31.
    pub keyidx: Option<u8>,
    /// S bit: the packet starts a VP8 partition.
    pub start: bool,
    /// PID: the partition index, 0..=7.
    pub partition: u8,
    /// The packet starts a keyframe: S = 1, PID = 0 and the VP8 payload
    /// header's first byte has bit 0 clear.
    pub keyframe: bool,
    /// Length of the descriptor; the VP8 payload starts at this offset.
    pub header_len: usize,
}

impl Vp8Descriptor {
    fn picture_id_mask(&self) -> u16 {
        if self.long_picture_id {
            MASK15
        } else {
            MASK7
        }
    }

    /// Offset of the TL0PICIDX byte, after the PictureID if any.
    fn tl0picidx_pos(&self) -> usize {
        match (self.picture_id, self.long_picture_id) {
            (None, _) => 2,
            (Some(_), false) => 3,
            (Some(_), true) => 4,
        }
    }
}

/// Reads the payload descriptor at the start of a VP8 RTP payload.
///
/// Returns `None` when the payload ends inside the descriptor (including an
/// empty payload). Never panics. A descriptor followed by no payload byte is
/// returned, with `keyframe` false.
pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let mut d = Vp8Descriptor {
        start: b0 & 0x10 != 0,
        partition: b0 & 0x07,
        ..Vp8Descriptor::default()
    };
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let m = *payload.get(i)?;
            i += 1;
            if m & 0x80 != 0 {
                let lo = *payload.get(i)?;
                i += 1;
                d.picture_id = Some((u16::from(m & 0x7f) << 8) | u16::from(lo));
                d.long_picture_id = true;
            } else {
                d.picture_id = Some(u16::from(m));
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(*payload.get(i)?);
            i += 1;
        }
        if x & 0x30 != 0 {
            let b = *payload.get(i)?;
            i += 1;
            if x & 0x20 != 0 {
                d.tid = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
            if x & 0x10 != 0 {
                d.keyidx = Some(b & 0x1f);
            }
        }
    }
    d.header_len = i;
    d.keyframe = d.start && d.partition == 0 && payload.get(i).is_some_and(|b| b & 0x01 == 0);
    Some(d)
}

/// What to add to one packet's PictureID and TL0PICIDX (wrapping: mod 2^7
/// or 2^15 for the PictureID, per its width; mod 2^8 for TL0PICIDX).
///
/// Each field is already reduced to the packet's width and is zero for a
/// field the packet does not carry, so [`Vp8Offsets::is_zero`] means the
/// packet goes out unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Offsets {
    /// Added to the PictureID, below 2^7 or 2^15 (the packet's width).
    pub picture_id: u16,
    /// Added to TL0PICIDX.
    pub tl0picidx: u8,
}

impl Vp8Offsets {
    /// Nothing changes: forward the payload as it is.
    pub fn is_zero(&self) -> bool {
        self.picture_id == 0 && self.tl0picidx == 0
    }
}

/// Per-viewer state keeping PictureID and TL0PICIDX continuous across
/// switches of source and across pictures left out.
///
/// For every packet of the viewer's stream, in arrival order, call either
/// [`Vp8Rewriter::offsets`] (the packet is forwarded) or
/// [`Vp8Rewriter::drop_picture`] (its picture is not).
///
/// Before anything was forwarded the offsets are zero: the first source's
/// numbers pass through. A new run continues from the last numbers sent;
/// within a run the offsets stay fixed, except that each dropped picture
/// moves the PictureIDs of the pictures after it down by one.
///
/// Limits:
/// - A run should start at a keyframe of base temporal layer (TID 0), as
///   any switch of source must; its TL0PICIDX becomes `last + 1`.
/// - Only pictures of temporal layers above 0 should be dropped: dropping
///   does not renumber TL0PICIDX, which counts TID 0 pictures.
/// - A dropped picture first seen after a newer picture was already
///   forwarded cannot be taken out of the numbering (the newer picture's
///   number is spent): the viewer sees a gap there, as for a lost picture.
/// - Dropped pictures are remembered for [`REORDER_PICTURES`] pictures;
///   see there for packets that arrive later than that.
#[derive(Debug, Clone)]
pub struct Vp8Rewriter {
    /// Added to the PictureIDs of pictures newer than every remembered
    /// dropped one, 15 bits (reduced to the packet's width on use).
    pid_offset: u16,
    tl0_offset: u8,
    /// A new run began and its PictureID offset is not set yet (its first
    /// packets carried none).
    pid_pending: bool,
    tl0_pending: bool,
    /// The newest PictureID sent (in wrapping order) and its width mask.
    last_pid: Option<(u16, u16)>,
    /// The newest TL0PICIDX sent (in wrapping order).
    last_tl0: Option<u8>,
    /// The newest incoming PictureID of this run, forwarded or dropped.
    newest_in: Option<u16>,
    /// Bit k set: picture `newest_in - k` was dropped and counted in
    /// `pid_offset`.
    dropped: u32,
}

impl Default for Vp8Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Rewriter {
    /// A rewriter for a viewer that was sent nothing yet.
    pub fn new() -> Self {
        Vp8Rewriter {
            pid_offset: 0,
            tl0_offset: 0,
            pid_pending: false,
            tl0_pending: false,
            last_pid: None,
            last_tl0: None,
            newest_in: None,
            dropped: 0,
        }
    }

    /// The offsets for a packet that is forwarded, whose descriptor is `d`;
    /// `new_run` is set on the first packet after a switch of source.
    ///
    /// The first picture of a new run gets the last PictureID sent + 1 and
    /// the last TL0PICIDX sent + 1 (a field the run's first packet lacks is
    /// set up at its first packet that carries it). The last values sent
    /// only move forward: a reordered older packet does not move them back.
    pub fn offsets(&mut self, new_run: bool, d: &Vp8Descriptor) -> Vp8Offsets {
        if new_run {
            self.pid_pending = true;
            self.tl0_pending = true;
            self.newest_in = None;
            self.dropped = 0;
        }
        let mut o = Vp8Offsets::default();
        if let Some(p) = d.picture_id {
            let mask = d.picture_id_mask();
            if self.pid_pending {
                self.pid_pending = false;
                if let Some((last, _)) = self.last_pid {
                    self.pid_offset = last.wrapping_add(1).wrapping_sub(p) & MASK15;
                }
            }
            self.see(p, mask);
            let off = self.pid_offset_for(p, mask);
            let out = p.wrapping_add(off) & mask;
            match self.last_pid {
                Some((last, m)) if m == mask && !newer(out, last, mask) => {}
                _ => self.last_pid = Some((out, mask)),
            }
            o.picture_id = off & mask;
        }
        if let Some(t) = d.tl0picidx {
            if self.tl0_pending {
                self.tl0_pending = false;
                if let Some(last) = self.last_tl0 {
                    self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
                }
            }
            let out = t.wrapping_add(self.tl0_offset);
            if self.last_tl0.is_none_or(|last| newer8(out, last)) {
                self.last_tl0 = Some(out);
            }
            o.tl0picidx = self.tl0_offset;
        }
        o
    }

    /// The picture of a packet with descriptor `d` is not forwarded (a
    /// temporal layer the viewer does not get): the pictures after it get
    /// PictureIDs one lower, so the viewer sees no gap.
    ///
    /// Call it for every packet of the picture (it counts each picture
    /// once). It does nothing for a packet without PictureID, before the
    /// first PictureID of a run was forwarded (the run's offset is not set
    /// yet and will continue from the last picture sent anyway), or for a
    /// picture older than one already forwarded (see the limits on
    /// [`Vp8Rewriter`]).
    pub fn drop_picture(&mut self, d: &Vp8Descriptor) {
        let Some(p) = d.picture_id else {
            return;
        };
        if self.pid_pending {
            return;
        }
        let Some((last, last_mask)) = self.last_pid else {
            return;
        };
        let mask = d.picture_id_mask();
        if mask != last_mask {
            return;
        }
        self.see(p, mask);
        let Some(behind) = self.behind_newest(p, mask) else {
            return;
        };
        if behind >= REORDER_PICTURES || self.dropped & (1 << behind) != 0 {
            return; // too old to remember, or counted already
        }
        let out = p.wrapping_add(self.pid_offset_for(p, mask)) & mask;
        if !newer(out, last, mask) {
            return; // a newer picture already went out with the next number
        }
        self.dropped |= 1 << behind;
        self.pid_offset = self.pid_offset.wrapping_sub(1) & MASK15;
    }

    /// Moves the PictureID and TL0PICIDX of `payload` by `o`; `d` must be
    /// `parse(payload)`. Only those bytes change. A `payload` shorter than
    /// `d` says is left as far as it goes (never panics).
    pub fn apply_in_place(payload: &mut [u8], d: &Vp8Descriptor, o: Vp8Offsets) {
        if let Some(p) = d.picture_id {
            let v = p.wrapping_add(o.picture_id);
            if d.long_picture_id {
                if let Some([hi, lo]) = payload.get_mut(2..4) {
                    let [h, l] = (v & MASK15).to_be_bytes();
                    *hi = 0x80 | h;
                    *lo = l;
                }
            } else if let Some(b) = payload.get_mut(2) {
                *b = (v & MASK7) as u8;
            }
        }
        if let Some(t) = d.tl0picidx {
            if let Some(b) = payload.get_mut(d.tl0picidx_pos()) {
                *b = t.wrapping_add(o.tl0picidx);
            }
        }
    }

    /// Notes incoming PictureID `p` of this run; forgets dropped pictures
    /// that fall out of the window when it is the newest.
    fn see(&mut self, p: u16, mask: u16) {
        let advance = match self.newest_in {
            None => {
                self.dropped = 0;
                self.newest_in = Some(p);
                return;
            }
            Some(n) if newer(p, n, mask) => p.wrapping_sub(n) & mask,
            Some(_) => return,
        };
        self.dropped = self.dropped.checked_shl(u32::from(advance)).unwrap_or(0);
        self.newest_in = Some(p);
    }

    /// How far incoming PictureID `p` is behind the newest one of the run.
    fn behind_newest(&self, p: u16, mask: u16) -> Option<u16> {
        self.newest_in.map(|n| n.wrapping_sub(p) & mask)
    }

    /// The PictureID offset for incoming picture `p`: the current one, plus
    /// one for each remembered dropped picture not older than `p` (those
    /// came after `p` and must not move it).
    fn pid_offset_for(&self, p: u16, mask: u16) -> u16 {
        let later_drops = match self.behind_newest(p, mask) {
            // Bits 0..=k: 2^(k+1) - 1, all bits from k = 31 on.
            Some(k) => {
                let upto = 2u32.checked_shl(u32::from(k)).unwrap_or(0).wrapping_sub(1);
                (self.dropped & upto).count_ones()
            }
            None => 0,
        };
        self.pid_offset.wrapping_add(later_drops as u16) & MASK15
    }
}

/// `a` is newer than `b` in wrapping order, both masked to `mask` (2^n - 1).
fn newer(a: u16, b: u16, mask: u16) -> bool {
    let diff = a.wrapping_sub(b) & mask;
    diff != 0 && diff <= mask / 2
}

fn newer8(a: u8, b: u8) -> bool {
    let diff = a.wrapping_sub(b);
    diff != 0 && diff < 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a descriptor (X set when any extension field is present)
    /// followed by `body`.
    fn encode(d: &Vp8Descriptor, body: &[u8]) -> Vec<u8> {
        let ext = d.picture_id.is_some()
            || d.tl0picidx.is_some()
            || d.tid.is_some()
            || d.keyidx.is_some();
        let mut b0 = d.partition & 0x07;
        if d.start {
            b0 |= 0x10;
        }
        let mut v = vec![b0];
        if ext {
            v[0] |= 0x80;
            let mut x = 0;
            if d.picture_id.is_some() {
                x |= 0x80;
            }
            if d.tl0picidx.is_some() {
                x |= 0x40;
            }
            if d.tid.is_some() {
                x |= 0x20;
            }
            if d.keyidx.is_some() {
                x |= 0x10;
            }
            v.push(x);
            if let Some(p) = d.picture_id {
                if d.long_picture_id {
                    v.extend_from_slice(&((p & MASK15) | 0x8000).to_be_bytes());
                } else {
                    v.push((p & MASK7) as u8);
                }
            }
            if let Some(t) = d.tl0picidx {
                v.push(t);
            }
            if d.tid.is_some() || d.keyidx.is_some() {
                let mut b = d.tid.unwrap_or(0) << 6;
                if d.layer_sync {
                    b |= 0x20;
                }
                b |= d.keyidx.unwrap_or(0) & 0x1f;
                v.push(b);
            }
        }
        v.extend_from_slice(body);
        v
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Checks what a parse result must satisfy for any input.
    fn check_invariants(input: &[u8]) {
        if let Some(d) = parse(input) {
            assert!(d.header_len >= 1 && d.header_len <= input.len());
            assert!(d.partition < 8);
            assert!(d.tid.is_none_or(|t| t < 4));
            assert!(d.keyidx.is_none_or(|k| k < 32));
            assert!(d.picture_id.is_none_or(|p| p <= d.picture_id_mask()));
            assert!(!d.long_picture_id || d.picture_id.is_some());
            assert!(!d.layer_sync || d.tid.is_some());
            assert!(!d.keyframe || (d.start && d.partition == 0 && d.header_len < input.len()));
            // The rewriter never panics on it either.
            let mut r = Vp8Rewriter::new();
            let o = r.offsets(true, &d);
            let mut out = input.to_vec();
            Vp8Rewriter::apply_in_place(&mut out, &d, o);
            assert_eq!(out.len(), input.len());
            r.drop_picture(&d);
        } else {
            assert!(!input.is_empty() || parse(input).is_none());
        }
    }

    #[test]
    fn parse_without_extension() {
        let d = parse(&[0x10, 0x00, 0xaa]).unwrap();
        assert_eq!(
            d,
            Vp8Descriptor {
                start: true,
                keyframe: true,
                header_len: 1,
                ..Vp8Descriptor::default()
            }
        );
        // Interframe (bit 0 of the payload header set), partition 3, N bit.
        let d = parse(&[0x23, 0x01]).unwrap();
        assert!(!d.start && !d.keyframe);
        assert_eq!(d.partition, 3);
        assert_eq!(d.header_len, 1);
        // Keyframe needs S, PID 0 and a payload byte.
        assert!(!parse(&[0x10]).unwrap().keyframe);
        assert!(!parse(&[0x11, 0x00]).unwrap().keyframe);
        assert!(!parse(&[0x00, 0x00]).unwrap().keyframe);
        assert!(!parse(&[0x10, 0x01]).unwrap().keyframe);
    }

    #[test]
    fn parse_extension_without_fields() {
        let d = parse(&[0x90, 0x00, 0x00]).unwrap();
        assert_eq!(d.header_len, 2);
        assert_eq!(d.picture_id, None);
        assert!(d.keyframe);
    }

    #[test]
    fn parse_short_picture_id() {
        let d = parse(&[0x90, 0x80, 0x7f, 0x9d]).unwrap();
        assert_eq!(d.picture_id, Some(0x7f));
        assert!(!d.long_picture_id);
        assert_eq!(d.header_len, 3);
        assert!(!d.keyframe);
    }

    #[test]
    fn parse_long_picture_id() {
        let d = parse(&[0x90, 0x80, 0xff, 0xfe, 0x9c]).unwrap();
        assert_eq!(d.picture_id, Some(0x7ffe));
        assert!(d.long_picture_id);
        assert_eq!(d.header_len, 4);
        assert!(d.keyframe);
    }

    #[test]
    fn parse_tl0picidx_tid_keyidx() {
        // I (15 bits) + L + T + K: 6 bytes.
        let d = parse(&[0x90, 0xf0, 0x81, 0x23, 0x42, 0b1011_0111, 0x00]).unwrap();
        assert_eq!(d.picture_id, Some(0x0123));
        assert_eq!(d.tl0picidx, Some(0x42));
        assert_eq!(d.tid, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.keyidx, Some(0x17));
        assert_eq!(d.header_len, 6);
        // T only: KEYIDX bits are not read.
        let d = parse(&[0x80, 0x20, 0x5f]).unwrap();
        assert_eq!((d.tid, d.layer_sync, d.keyidx), (Some(1), false, None));
        // K only: TID and Y are not read.
        let d = parse(&[0x80, 0x10, 0xff]).unwrap();
        assert_eq!((d.tid, d.layer_sync, d.keyidx), (None, false, Some(0x1f)));
        // L only.
        let d = parse(&[0x80, 0x40, 0x07]).unwrap();
        assert_eq!(
            (d.picture_id, d.tl0picidx, d.header_len),
            (None, Some(7), 3)
        );
    }

    #[test]
    fn parse_round_trips_every_shape() {
        for flags in 0..32u8 {
            let d = Vp8Descriptor {
                picture_id: (flags & 1 != 0).then_some(if flags & 2 != 0 { 0x5a5a } else { 0x5a }),
                long_picture_id: flags & 3 == 3,
                tl0picidx: (flags & 4 != 0).then_some(0xfe),
                tid: (flags & 8 != 0).then_some(3),
                layer_sync: flags & 8 != 0,
                keyidx: (flags & 16 != 0).then_some(0x11),
                start: true,
                partition: 0,
                keyframe: true,
                header_len: 0,
            };
            let bytes = encode(&d, &[0x00, 0x01]);
            let got = parse(&bytes).unwrap();
            assert_eq!(got.header_len, bytes.len() - 2, "flags {flags:#x}");
            assert_eq!(
                got,
                Vp8Descriptor {
                    header_len: got.header_len,
                    ..d
                },
                "flags {flags:#x}"
            );
        }
    }

    #[test]
    fn truncated_descriptors_are_refused() {
        assert_eq!(parse(&[]), None);
        for flags in 0..32u8 {
            let d = Vp8Descriptor {
                picture_id: (flags & 1 != 0).then_some(0x1234),
                long_picture_id: flags & 3 == 3,
                tl0picidx: (flags & 4 != 0).then_some(1),
                tid: (flags & 8 != 0).then_some(1),
                keyidx: (flags & 16 != 0).then_some(1),
                start: true,
                ..Vp8Descriptor::default()
            };
            let bytes = encode(&d, &[]);
            assert!(parse(&bytes).is_some());
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), None, "flags {flags:#x} cut {cut}");
            }
        }
    }

    #[test]
    fn parse_never_panics() {
        for a in 0..=255u8 {
            check_invariants(&[a]);
            for b in 0..=255u8 {
                check_invariants(&[a, b]);
            }
        }
        // Three bytes, exhaustively (the fast parse alone; invariants on a
        // sample to keep the test quick).
        for n in 0..(1u32 << 24) {
            let [_, a, b, c] = n.to_be_bytes();
            let d = parse(&[a, b, c]);
            if n % 97 == 0 {
                check_invariants(&[a, b, c]);
            } else {
                assert!(d.is_none_or(|d| d.header_len <= 3));
            }
        }
        // Four bytes: which bytes parse reads depends only on byte 0 (X),
        // byte 1 (I, L, T, K) and bit 7 of byte 2 (M); byte 3 matters only
        // by its value and bit 0. So every (byte 0, byte 1) with these
        // classes of bytes 2 and 3 covers all four-byte control paths.
        let classes = [0x00, 0x01, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff];
        for n in 0..(1u32 << 16) {
            let [_, _, a, b] = n.to_be_bytes();
            for &c in &classes {
                for &e in &classes {
                    check_invariants(&[a, b, c, e]);
                }
            }
        }
        // Random inputs up to 12 bytes, biased toward set flag bits.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            let r = xorshift(&mut s);
            let len = (r % 13) as usize;
            let mut buf = [0u8; 12];
            for (i, byte) in buf.iter_mut().enumerate().take(len) {
                let v = xorshift(&mut s) as u8;
                *byte = if i < 2 && r & (1 << (20 + i)) != 0 {
                    v | 0xf0
                } else {
                    v
                };
            }
            check_invariants(&buf[..len]);
        }
    }

    /// A payload of one picture's packet: 15-bit or 7-bit id, L and T.
    fn pkt(pid: u16, long: bool, tl0: u8, tid: u8) -> (Vec<u8>, Vp8Descriptor) {
        let d = Vp8Descriptor {
            picture_id: Some(pid),
            long_picture_id: long,
            tl0picidx: Some(tl0),
            tid: Some(tid),
            start: true,
            ..Vp8Descriptor::default()
        };
        let bytes = encode(&d, &[0x01, 0xab, 0xcd]);
        let d = parse(&bytes).unwrap();
        (bytes, d)
    }

    /// Forwards one packet; returns its outgoing (PictureID, TL0PICIDX).
    fn forward(r: &mut Vp8Rewriter, new_run: bool, bytes: &[u8], d: &Vp8Descriptor) -> (u16, u8) {
        let o = r.offsets(new_run, d);
        let mut out = bytes.to_vec();
        Vp8Rewriter::apply_in_place(&mut out, d, o);
        assert_eq!(out.len(), bytes.len());
        let got = parse(&out).unwrap();
        assert_eq!(got.long_picture_id, d.long_picture_id);
        assert_eq!(got.header_len, d.header_len);
        (got.picture_id.unwrap(), got.tl0picidx.unwrap())
    }

    /// Forwards a packet of 15-bit picture `pid`; returns its outgoing id.
    fn fwd_id(r: &mut Vp8Rewriter, new_run: bool, pid: u16, tid: u8) -> u16 {
        let (bytes, d) = pkt(pid, true, 0, tid);
        forward(r, new_run, &bytes, &d).0
    }

    /// Drops a packet of 15-bit picture `pid` (temporal layer 2).
    fn drop_id(r: &mut Vp8Rewriter, pid: u16) {
        r.drop_picture(&pkt(pid, true, 0, 2).1);
    }

    #[test]
    fn first_run_passes_through() {
        let mut r = Vp8Rewriter::new();
        for (i, pid) in (32_760..32_768).chain(0..8).enumerate() {
            let (b, d) = pkt(pid, true, 250u8.wrapping_add(i as u8), 0);
            let o = r.offsets(i == 0, &d);
            assert!(o.is_zero());
            assert_eq!(
                forward(&mut r, false, &b, &d),
                (pid, 250u8.wrapping_add(i as u8))
            );
        }
        assert!(Vp8Offsets::default().is_zero());
    }

    #[test]
    fn switching_sources_is_continuous() {
        let mut r = Vp8Rewriter::new();
        // Source A from 1000 / tl0 5, source B from 30000 / tl0 200; each
        // advances while not forwarded too.
        let mut a = (1000u16, 5u8);
        let mut b = (30_000u16, 200u8);
        let mut expect: Option<(u16, u8)> = None;
        for round in 0..6 {
            let src = if round % 2 == 0 { &mut a } else { &mut b };
            src.0 = (src.0 + 37 * round) & MASK15;
            src.1 = src.1.wrapping_add(3);
            for i in 0..10u16 {
                let pid = (src.0 + i) & MASK15;
                let tl0 = src.1.wrapping_add(i as u8);
                let (bytes, d) = pkt(pid, true, tl0, 0);
                let mut got = (0, 0);
                for packet in 0..3 {
                    got = forward(&mut r, i == 0 && packet == 0, &bytes, &d);
                    match expect {
                        None => assert_eq!(got, (pid, tl0)),
                        Some(e) => assert_eq!(got, e, "round {round} picture {i}"),
                    }
                }
                expect = Some(((got.0 + 1) & MASK15, got.1.wrapping_add(1)));
            }
            src.0 = (src.0 + 10) & MASK15;
            src.1 = src.1.wrapping_add(10);
        }
    }

    #[test]
    fn switching_wraps_at_15_bits() {
        let mut r = Vp8Rewriter::new();
        let (b, d) = pkt(32_767, true, 255, 0);
        assert_eq!(forward(&mut r, true, &b, &d), (32_767, 255));
        // The next source's first picture follows: 0 and 0.
        let (b, d) = pkt(12_345, true, 17, 0);
        assert_eq!(forward(&mut r, true, &b, &d), (0, 0));
        let (b, d) = pkt(12_346, true, 18, 0);
        assert_eq!(forward(&mut r, false, &b, &d), (1, 1));
        // A source that wraps itself mid-run.
        let (b, d) = pkt(32_766, true, 40, 0);
        assert_eq!(forward(&mut r, true, &b, &d), (2, 2));
        let (b, d) = pkt(32_767, true, 41, 0);
        assert_eq!(forward(&mut r, false, &b, &d), (3, 3));
        let (b, d) = pkt(0, true, 42, 0);
        assert_eq!(forward(&mut r, false, &b, &d), (4, 4));
    }

    #[test]
    fn switching_wraps_at_7_bits() {
        let mut r = Vp8Rewriter::new();
        for pid in 120..128 {
            let (b, d) = pkt(pid, false, pid as u8, 0);
            assert_eq!(forward(&mut r, pid == 120, &b, &d), (pid, pid as u8));
        }
        let mut want = 0u16;
        for (run, start) in [(0, 5u16), (1, 100), (2, 127)] {
            for i in 0..50u16 {
                let pid = (start + i) & MASK7;
                let (b, d) = pkt(pid, false, (run * 60 + i) as u8, 0);
                let got = forward(&mut r, i == 0, &b, &d);
                assert_eq!(got.0, want, "run {run} picture {i}");
                assert!(got.0 <= MASK7);
                want = (want + 1) & MASK7;
            }
        }
    }

    #[test]
    fn offsets_are_reduced_to_the_width() {
        let mut r = Vp8Rewriter::new();
        let (_, d) = pkt(500, true, 0, 0);
        r.offsets(true, &d);
        // 7-bit source: offset 501 - 10 = 491 = 3 * 128 + 107.
        let (_, d) = pkt(10, false, 1, 0);
        assert_eq!(r.offsets(true, &d).picture_id, 107);
        // A 7-bit source landing on the same low bits: nothing changes.
        let mut r = Vp8Rewriter::new();
        let (_, d) = pkt(127 + 128, true, 0, 0);
        r.offsets(true, &d);
        let (_, d) = pkt(0, false, 1, 0);
        assert!(r.offsets(true, &d).is_zero());
    }

    #[test]
    fn run_without_ids_in_its_first_packet() {
        let mut r = Vp8Rewriter::new();
        let (b, d) = pkt(900, true, 9, 0);
        forward(&mut r, true, &b, &d);
        // The new run's first packet carries no extension.
        let plain = parse(&[0x10, 0x00]).unwrap();
        assert!(r.offsets(true, &plain).is_zero());
        let (b, d) = pkt(4, true, 77, 0);
        assert_eq!(forward(&mut r, false, &b, &d), (901, 10));
    }

    #[test]
    fn reordered_packet_does_not_move_last_back() {
        let mut r = Vp8Rewriter::new();
        for pid in 10..13 {
            let (b, d) = pkt(pid, true, pid as u8, 0);
            forward(&mut r, pid == 10, &b, &d);
        }
        // A late packet of picture 11 keeps its numbers.
        let (b, d) = pkt(11, true, 11, 0);
        assert_eq!(forward(&mut r, false, &b, &d), (11, 11));
        // The next run continues after 12, not 11.
        let (b, d) = pkt(7000, true, 100, 0);
        assert_eq!(forward(&mut r, true, &b, &d), (13, 13));
        // Same for a reordered packet across a 15-bit wrap.
        let mut r = Vp8Rewriter::new();
        for pid in [32_766, 32_767, 0, 32_767] {
            let (b, d) = pkt(pid, true, 0, 0);
            forward(&mut r, pid == 32_766, &b, &d);
        }
        let (b, d) = pkt(5, true, 0, 0);
        assert_eq!(forward(&mut r, true, &b, &d).0, 1);
    }

    #[test]
    fn dropped_temporal_layers_leave_no_gap() {
        // L1T3: TIDs 0 2 1 2; the viewer gets TIDs 0 and 1, three packets
        // per picture.
        let mut r = Vp8Rewriter::new();
        let mut out = Vec::new();
        let mut tl0 = 0u8;
        for i in 0..200u16 {
            let pid = (32_700 + i) & MASK15;
            let tid = [0, 2, 1, 2][usize::from(i % 4)];
            if tid == 0 {
                tl0 = tl0.wrapping_add(1);
            }
            for packet in 0..3 {
                let (b, d) = pkt(pid, true, tl0, tid);
                if tid == 2 {
                    r.drop_picture(&d);
                } else {
                    let got = forward(&mut r, i == 0 && packet == 0, &b, &d);
                    if packet == 0 {
                        out.push(got);
                    } else {
                        assert_eq!(Some(&got), out.last());
                    }
                    assert_eq!(got.1, tl0);
                }
            }
        }
        assert_eq!(out.len(), 100);
        for w in out.windows(2) {
            assert_eq!(w[1].0, (w[0].0 + 1) & MASK15);
        }
        // A switch after drops continues from the last picture sent.
        let (b, d) = pkt(3, true, 50, 0);
        let last = *out.last().unwrap();
        assert_eq!(
            forward(&mut r, true, &b, &d),
            ((last.0 + 1) & MASK15, tl0.wrapping_add(1))
        );
    }

    #[test]
    fn late_packets_around_dropped_pictures_keep_their_numbers() {
        let mut r = Vp8Rewriter::new();
        assert_eq!(fwd_id(&mut r, true, 10, 0), 10);
        drop_id(&mut r, 11);
        assert_eq!(fwd_id(&mut r, false, 12, 1), 11);
        drop_id(&mut r, 13);
        drop_id(&mut r, 13); // a second packet of it
                             // Picture 14's first packet, then late packets of 10 and 12.
        assert_eq!(fwd_id(&mut r, false, 14, 0), 12);
        assert_eq!(fwd_id(&mut r, false, 10, 0), 10);
        assert_eq!(fwd_id(&mut r, false, 12, 1), 11);
        // A dropped picture whose first packet comes after the next one's:
        // 16 went out as 14 already, so 15 cannot be taken out of the
        // numbering; nothing moves (the viewer sees a gap, as for loss).
        assert_eq!(fwd_id(&mut r, false, 16, 1), 14);
        drop_id(&mut r, 15);
        assert_eq!(fwd_id(&mut r, false, 16, 1), 14);
        assert_eq!(fwd_id(&mut r, false, 17, 0), 15);
    }

    #[test]
    fn dropped_picture_seen_before_an_earlier_forwarded_one() {
        // Picture 11 (dropped) arrives before picture 10's only packet.
        let mut r = Vp8Rewriter::new();
        assert_eq!(fwd_id(&mut r, true, 9, 0), 9);
        drop_id(&mut r, 11);
        assert_eq!(fwd_id(&mut r, false, 10, 1), 10);
        assert_eq!(fwd_id(&mut r, false, 12, 0), 11);
    }

    #[test]
    fn drops_before_anything_is_sent_are_ignored() {
        let mut r = Vp8Rewriter::new();
        r.drop_picture(&pkt(3, true, 0, 2).1);
        let (b, d) = pkt(4, true, 0, 0);
        assert_eq!(forward(&mut r, true, &b, &d).0, 4);
        // Nor at the start of a new run, before its first forwarded packet.
        let (b, d) = pkt(700, true, 0, 0);
        let plain = parse(&[0x10, 0x00]).unwrap();
        r.offsets(true, &plain);
        r.drop_picture(&pkt(699, true, 0, 2).1);
        assert_eq!(forward(&mut r, false, &b, &d).0, 5);
    }

    #[test]
    fn apply_changes_only_the_id_bytes() {
        let mut r = Vp8Rewriter::new();
        let (b, d) = pkt(100, true, 1, 0);
        r.offsets(true, &d);
        for long in [false, true] {
            for with_tl0 in [false, true] {
                let d = Vp8Descriptor {
                    picture_id: Some(if long { 0x7ff0 } else { 0x70 }),
                    long_picture_id: long,
                    tl0picidx: with_tl0.then_some(0xf0),
                    tid: Some(2),
                    layer_sync: true,
                    keyidx: Some(9),
                    start: true,
                    ..Vp8Descriptor::default()
                };
                let bytes = encode(&d, &[0x9c, 0x01, 0x2a, 0xff]);
                let d = parse(&bytes).unwrap();
                let o = r.offsets(true, &d);
                assert!(!o.is_zero());
                let mut out = bytes.clone();
                Vp8Rewriter::apply_in_place(&mut out, &d, o);
                assert_eq!(out.len(), bytes.len());
                let id_bytes = if long { 2..4 } else { 2..3 };
                let tl0_byte = id_bytes.end;
                for (i, (x, y)) in bytes.iter().zip(&out).enumerate() {
                    if !(id_bytes.contains(&i) || with_tl0 && i == tl0_byte) {
                        assert_eq!(x, y, "byte {i} long {long} tl0 {with_tl0}");
                    }
                }
                let got = parse(&out).unwrap();
                assert_eq!(
                    got,
                    Vp8Descriptor {
                        picture_id: got.picture_id,
                        tl0picidx: got.tl0picidx,
                        ..d
                    }
                );
                let mut in_place = bytes.clone();
                Vp8Rewriter::apply_in_place(&mut in_place, &d, o);
                assert_eq!(in_place, out);
            }
        }
        // A payload shorter than its descriptor claims is left alone.
        let mut short = b[..2].to_vec();
        Vp8Rewriter::apply_in_place(
            &mut short,
            &d,
            Vp8Offsets {
                picture_id: 1,
                tl0picidx: 1,
            },
        );
        assert_eq!(short, b[..2]);
    }

    /// Random streams: several sources, switches at TID 0 pictures, the
    /// viewer's temporal layers changing per run, packets of a picture
    /// reordered with the neighbouring ones (not across the first packets
    /// of two pictures, nor across a run's start). Every packet of a
    /// forwarded picture gets the same numbers and forwarded pictures are
    /// numbered without gaps.
    fn simulate(long: bool, seed: u64) {
        struct Pic {
            pid: u16,
            tl0: u8,
            tid: u8,
            forwarded: bool,
        }
        let mask = if long { MASK15 } else { MASK7 };
        let mut s = seed;
        let mut sources: Vec<(u16, u8, u16)> = (0..3)
            .map(|_| {
                let r = xorshift(&mut s);
                ((r as u16) & mask, (r >> 16) as u8, 0)
            })
            .collect();
        let mut pics = Vec::new();
        // (picture index, run, first packet of its picture)
        let mut packets: Vec<(usize, usize, bool)> = Vec::new();
        for run in 0..40 {
            let src = &mut sources[(xorshift(&mut s) % 3) as usize];
            // Move ahead to the source's next TID 0 picture.
            let skip = 4 * (1 + xorshift(&mut s) % 20) as u16 - src.2 % 4;
            src.0 = src.0.wrapping_add(skip) & mask;
            src.1 = src.1.wrapping_add((skip / 4) as u8);
            src.2 = src.2.wrapping_add(skip);
            let max_tid = (xorshift(&mut s) % 3) as u8;
            for _ in 0..(1 + xorshift(&mut s) % 30) {
                let tid = [0, 2, 1, 2][usize::from(src.2 % 4)];
                pics.push(Pic {
                    pid: src.0,
                    tl0: src.1,
                    tid,
                    forwarded: tid <= max_tid,
                });
                for k in 0..(1 + xorshift(&mut s) % 3) {
                    packets.push((pics.len() - 1, run, k == 0));
                }
                src.0 = (src.0 + 1) & mask;
                src.2 = src.2.wrapping_add(1);
                if src.2.is_multiple_of(4) {
                    src.1 = src.1.wrapping_add(1);
                }
            }
        }
        for i in 1..packets.len() - 1 {
            let (a, b) = (packets[i], packets[i + 1]);
            let run_start = |j: usize| packets[j - 1].1 != packets[j].1;
            if xorshift(&mut s).is_multiple_of(4) && a.1 == b.1 && !run_start(i) && !(a.2 && b.2) {
                packets.swap(i, i + 1);
            }
        }
        let mut r = Vp8Rewriter::new();
        let mut out: Vec<Option<(u16, u8)>> = vec![None; pics.len()];
        let mut prev_run = usize::MAX;
        for &(i, run, _) in &packets {
            let pic = &pics[i];
            let (b, d) = pkt(pic.pid, long, pic.tl0, pic.tid);
            if pic.forwarded {
                let got = forward(&mut r, run != prev_run, &b, &d);
                assert!(out[i].is_none_or(|o| o == got), "picture {i}");
                out[i] = Some(got);
            } else {
                r.drop_picture(&d);
            }
            prev_run = run;
        }
        let sent: Vec<(u16, u8, u8)> = pics
            .iter()
            .zip(&out)
            .filter(|(p, _)| p.forwarded)
            .map(|(p, o)| {
                let o = o.unwrap();
                (o.0, o.1, p.tid)
            })
            .collect();
        assert!(sent.len() > 100);
        for w in sent.windows(2) {
            assert_eq!(w[1].0, (w[0].0 + 1) & mask, "seed {seed}");
            let tl0_step = u8::from(w[1].2 == 0);
            assert_eq!(w[1].1, w[0].1.wrapping_add(tl0_step), "seed {seed}");
        }
    }

    #[test]
    fn random_streams_are_numbered_without_gaps() {
        for seed in 1..=40u64 {
            simulate(true, seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            simulate(false, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
    }
}
