//! The Dependency Descriptor RTP header extension (the AV1 RTP payload
//! format, appendix A), for forwarding layers without reading payloads.
//!
//! A descriptor tells, for one RTP packet, which frame the packet belongs
//! to (a 16-bit frame number, start and end of frame), the spatial and
//! temporal layer of that frame, the frames it refers to, and how it
//! relates to each *decode target* (a spatial and temporal fidelity a
//! receiver may want). It works for any codec: AV1, but also VP8, VP9 or
//! H.264 senders that attach it (Chromium does for its SVC modes).
//!
//! Most of that sits in a *template dependency structure* that the first
//! packet of a keyframe carries once: a list of frame templates, each with
//! a layer, decode target indications (DTIs), reference distances (fdiffs)
//! and chain distances. Every packet then names a template, and may
//! override its DTIs, fdiffs or chain distances; a typical descriptor is
//! three bytes.
//!
//! - [`parse`] reads one descriptor against the structure the caller
//!   knows; [`DdReader`] does it for one RTP stream, keeping the latest
//!   structure and set of active decode targets from packet to packet.
//! - [`write()`] writes a descriptor (tests, simulated publishers);
//!   [`DdStructure::l1t3`] and [`DdStructure::l3t3_key`] are ready-made
//!   structures for the usual scalability modes, and
//!   [`DependencyDescriptor::from_template`] fills in a frame of one.
//!
//! Sans-IO and never a panic on any input: every read is checked, and the
//! sizes are capped ([`MAX_TEMPLATES`], [`MAX_DECODE_TARGETS`],
//! [`MAX_FDIFFS`]), so a hostile descriptor allocates a few kilobytes at
//! most. The zero padding at the end is ignored, as the spec asks.
//!
//! [`DdReader::describe`] turns a packet's descriptor into the
//! [`LayerPacket`] the layer selector reads: a publisher's endpoint does it
//! on arrival, and the packet carries the result with the descriptor's
//! bytes ([`crate::Dependency`]), which viewers get unchanged.

use crate::{Layer, LayerPacket};

/// The URI of the extension in `a=extmap`.
pub const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Templates in a structure at most (template ids are 6 bits).
pub const MAX_TEMPLATES: usize = 64;

/// Decode targets in a structure at most (`dt_cnt_minus_one` is 5 bits).
pub const MAX_DECODE_TARGETS: usize = 32;

/// Reference distances (fdiffs) of one template or frame at most. The
/// spec sets no limit; AV1 frames refer to 7 frames at most, and a longer
/// list is refused as [`DdError::Invalid`].
pub const MAX_FDIFFS: usize = 16;

/// Why a descriptor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdError {
    /// The descriptor ends inside a field.
    Truncated,
    /// The packet carries no template dependency structure and none is
    /// known (its keyframe's first packet was lost, or not seen yet).
    NoStructure,
    /// The template id names no template of the structure (the packet
    /// that brought the frame's structure may have been lost).
    UnknownTemplate,
    /// Over a limit ([`MAX_TEMPLATES`], [`MAX_FDIFFS`]); when writing, a
    /// structure or descriptor whose fields do not fit each other.
    Invalid,
}

impl std::fmt::Display for DdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DdError::Truncated => "dependency descriptor truncated",
            DdError::NoStructure => "dependency descriptor without a known structure",
            DdError::UnknownTemplate => "dependency descriptor names an unknown template",
            DdError::Invalid => "dependency descriptor over a limit or inconsistent",
        })
    }
}

impl std::error::Error for DdError {}

/// A decode target indication: how a frame relates to one decode target
/// (spec table A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dti {
    /// `-`: the frame is not part of the decode target.
    #[default]
    NotPresent,
    /// `D`: part of it, but no later frame of the decode target refers to
    /// it; it may be dropped.
    Discardable,
    /// `S`: part of it, and if this frame decodes, every later frame of the
    /// decode target does: a receiver can switch to the target here.
    Switch,
    /// `R`: part of it, neither discardable nor a switch point.
    Required,
}

impl Dti {
    fn from_bits(v: u32) -> Dti {
        match v & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Dti::NotPresent => 0,
            Dti::Discardable => 1,
            Dti::Switch => 2,
            Dti::Required => 3,
        }
    }

    /// The symbol of the spec's tables: `-`, `D`, `S` or `R`.
    pub fn symbol(self) -> char {
        b"-DSR"[self.bits() as usize] as char
    }

    /// The frame is part of the decode target (anything but `-`).
    pub fn present(self) -> bool {
        self != Dti::NotPresent
    }
}

/// One frame dependency template of a structure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DdTemplate {
    pub spatial_id: u8,
    pub temporal_id: u8,
    /// One per decode target.
    pub dtis: Vec<Dti>,
    /// The frames a frame of this template refers to, as distances back in
    /// frame numbers, each 1..=16.
    pub fdiffs: Vec<u16>,
    /// One per chain: the distance back to the chain's previous frame,
    /// 0..=15 (0: the chain needs no earlier frame).
    pub chain_fdiffs: Vec<u8>,
}

/// The largest picture of one spatial layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// 1..=65536.
    pub width: u32,
    /// 1..=65536.
    pub height: u32,
}

/// A template dependency structure (`template_dependency_structure`): what
/// the first packet of a coded video sequence carries, and every later
/// descriptor refers to.
///
/// The templates are in layer order, as on the wire: the first is spatial
/// 0, temporal 0, and each next one has the same layer, the next temporal
/// layer, or the next spatial layer's temporal layer 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DdStructure {
    /// The template id of template 0; template `i` has id
    /// `(template_id_offset + i) % 64`. 0..=63.
    pub template_id_offset: u8,
    /// The number of decode targets, 1..=[`MAX_DECODE_TARGETS`].
    pub decode_targets: usize,
    /// 1..=[`MAX_TEMPLATES`] templates.
    pub templates: Vec<DdTemplate>,
    /// The number of chains, 0..=`decode_targets`.
    pub chains: usize,
    /// For each decode target the chain that protects it; empty without
    /// chains.
    pub protected_by: Vec<u8>,
    /// The largest picture of each spatial layer, when the structure says.
    pub resolutions: Option<Vec<Resolution>>,
}

/// What one packet's descriptor says about its frame.
///
/// The fields from `spatial_id` on are the frame's own values: the
/// template's, or the ones the packet carries instead (custom DTIs, fdiffs
/// or chain distances). [`write()`] sends custom fields only where they
/// differ from the template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DependencyDescriptor {
    /// The packet's payload begins a frame.
    pub start_of_frame: bool,
    /// The packet is the last of its frame.
    pub end_of_frame: bool,
    /// `frame_dependency_template_id` as sent, 0..=63.
    pub template_id: u8,
    /// One more for each frame in decode order, wrapping; the same on every
    /// packet of a frame.
    pub frame_number: u16,
    pub spatial_id: u8,
    pub temporal_id: u8,
    /// One per decode target of the structure.
    pub dtis: Vec<Dti>,
    /// The frames this one refers to, as distances back in frame numbers
    /// (1..=4096); see [`DependencyDescriptor::references`].
    pub fdiffs: Vec<u16>,
    /// One per chain: the distance back to the chain's previous frame (0:
    /// none needed).
    pub chain_fdiffs: Vec<u8>,
    /// The decode targets the sender says are active (bit `i` is decode
    /// target `i`), when the packet says: explicitly, or all of them
    /// implicitly when it carries a structure. `None`: unchanged.
    pub active_decode_targets: Option<u32>,
    /// The structure the packet carries (a keyframe's first packet); later
    /// packets are read against it.
    pub structure: Option<DdStructure>,
}

impl DdTemplate {
    /// A template from the notation of the spec's tables: one of `-DSR`
    /// per decode target.
    fn new(spatial_id: u8, temporal_id: u8, dtis: &str, fdiffs: &[u16], chains: &[u8]) -> Self {
        let dtis = dtis
            .chars()
            .map(|c| match c {
                'D' => Dti::Discardable,
                'S' => Dti::Switch,
                'R' => Dti::Required,
                _ => Dti::NotPresent,
            })
            .collect();
        DdTemplate {
            spatial_id,
            temporal_id,
            dtis,
            fdiffs: fdiffs.to_vec(),
            chain_fdiffs: chains.to_vec(),
        }
    }
}

impl DdStructure {
    /// One spatial layer with three temporal layers (`L1T3`), for AV1,
    /// VP8, VP9 or H.264. Temporal layer pattern `T0 T2 T1 T2`, repeating:
    /// a T0 frame refers to the previous T0 frame, T1 to the T0 two frames
    /// back, each T2 to the frame just before it.
    ///
    /// Decode targets, lowest first: 0 = T0 (a quarter of the frame rate),
    /// 1 = T0+T1 (half), 2 = all. One chain, of the T0 frames, protects all
    /// three. Templates (pick them with [`DdStructure::l1t3_template`]):
    ///
    /// | index | layer | use | fdiffs | chain | DTIs |
    /// | --- | --- | --- | --- | --- | --- |
    /// | 0 | T0 | keyframe | | 0 | `SSS` |
    /// | 1 | T0 | | 4 | 4 | `SSS` |
    /// | 2 | T1 | | 2 | 2 | `-DS` |
    /// | 3 | T2 | after T0 | 1 | 1 | `--D` |
    /// | 4 | T2 | after T1 | 1 | 3 | `--D` |
    pub fn l1t3() -> DdStructure {
        DdStructure {
            template_id_offset: 0,
            decode_targets: 3,
            templates: vec![
                DdTemplate::new(0, 0, "SSS", &[], &[0]),
                DdTemplate::new(0, 0, "SSS", &[4], &[4]),
                DdTemplate::new(0, 1, "-DS", &[2], &[2]),
                DdTemplate::new(0, 2, "--D", &[1], &[1]),
                DdTemplate::new(0, 2, "--D", &[1], &[3]),
            ],
            chains: 1,
            protected_by: vec![0, 0, 0],
            resolutions: None,
        }
    }

    /// The template of picture `n` of an [`l1t3`](DdStructure::l1t3)
    /// stream, counted from its keyframe (picture 0).
    pub fn l1t3_template(n: u64) -> usize {
        match (n, n % 4) {
            (0, _) => 0,
            (_, 0) => 1,
            (_, 1) => 3,
            (_, 2) => 2,
            _ => 4,
        }
    }

    /// Three spatial layers of three temporal layers each with inter-layer
    /// prediction on keyframes only (`L3T3_KEY`, K-SVC, as browsers send
    /// it). Every picture is three frames in decode order, spatial 0, 1, 2
    /// (frame numbers `3n`, `3n + 1`, `3n + 2` for picture `n`). On the
    /// keyframe spatial layer `s > 0` refers to layer `s - 1` of the same
    /// picture; otherwise each spatial layer refers only to its own earlier
    /// frames, in the [`l1t3`](DdStructure::l1t3) temporal pattern (the
    /// distances three times as long).
    ///
    /// Nine decode targets, `3 * spatial + temporal`: decode target `3s+t`
    /// is spatial layer `s` up to temporal layer `t`, and holds the frames
    /// of layer `s` up to `t` and the keyframes of the layers below.
    /// Chain `s`, of the T0 frames of layer `s` and the keyframes below it,
    /// protects the decode targets of layer `s`. Five templates per
    /// spatial layer, `5s + i` with `i` as in `l1t3` (pick them with
    /// [`DdStructure::l3t3_key_template`]):
    ///
    /// | index | layer | use | fdiffs | chains | DTIs |
    /// | --- | --- | --- | --- | --- | --- |
    /// | 0 | S0T0 | keyframe | | 0, 0, 0 | `SSS SSS SSS` |
    /// | 1 | S0T0 | | 12 | 12, 11, 10 | `SSS --- ---` |
    /// | 2 | S0T1 | | 6 | 6, 5, 4 | `-DS --- ---` |
    /// | 3 | S0T2 | after T0 | 3 | 3, 2, 1 | `--D --- ---` |
    /// | 4 | S0T2 | after T1 | 3 | 9, 8, 7 | `--D --- ---` |
    /// | 5 | S1T0 | keyframe | 1 | 1, 1, 1 | `--- SSS SSS` |
    /// | 6 | S1T0 | | 12 | 1, 12, 11 | `--- SSS ---` |
    /// | 7 | S1T1 | | 6 | 7, 6, 5 | `--- -DS ---` |
    /// | 8 | S1T2 | after T0 | 3 | 4, 3, 2 | `--- --D ---` |
    /// | 9 | S1T2 | after T1 | 3 | 10, 9, 8 | `--- --D ---` |
    /// | 10 | S2T0 | keyframe | 1 | 2, 1, 1 | `--- --- SSS` |
    /// | 11 | S2T0 | | 12 | 2, 1, 12 | `--- --- SSS` |
    /// | 12 | S2T1 | | 6 | 8, 7, 6 | `--- --- -DS` |
    /// | 13 | S2T2 | after T0 | 3 | 5, 4, 3 | `--- --- --D` |
    /// | 14 | S2T2 | after T1 | 3 | 11, 10, 9 | `--- --- --D` |
    pub fn l3t3_key() -> DdStructure {
        DdStructure {
            template_id_offset: 0,
            decode_targets: 9,
            templates: vec![
                DdTemplate::new(0, 0, "SSSSSSSSS", &[], &[0, 0, 0]),
                DdTemplate::new(0, 0, "SSS------", &[12], &[12, 11, 10]),
                DdTemplate::new(0, 1, "-DS------", &[6], &[6, 5, 4]),
                DdTemplate::new(0, 2, "--D------", &[3], &[3, 2, 1]),
                DdTemplate::new(0, 2, "--D------", &[3], &[9, 8, 7]),
                DdTemplate::new(1, 0, "---SSSSSS", &[1], &[1, 1, 1]),
                DdTemplate::new(1, 0, "---SSS---", &[12], &[1, 12, 11]),
                DdTemplate::new(1, 1, "----DS---", &[6], &[7, 6, 5]),
                DdTemplate::new(1, 2, "-----D---", &[3], &[4, 3, 2]),
                DdTemplate::new(1, 2, "-----D---", &[3], &[10, 9, 8]),
                DdTemplate::new(2, 0, "------SSS", &[1], &[2, 1, 1]),
                DdTemplate::new(2, 0, "------SSS", &[12], &[2, 1, 12]),
                DdTemplate::new(2, 1, "-------DS", &[6], &[8, 7, 6]),
                DdTemplate::new(2, 2, "--------D", &[3], &[5, 4, 3]),
                DdTemplate::new(2, 2, "--------D", &[3], &[11, 10, 9]),
            ],
            chains: 3,
            protected_by: vec![0, 0, 0, 1, 1, 1, 2, 2, 2],
            resolutions: None,
        }
    }

    /// The template of spatial layer `spatial` (0..=2) of picture `n` of an
    /// [`l3t3_key`](DdStructure::l3t3_key) stream, counted from its
    /// keyframe (picture 0).
    pub fn l3t3_key_template(n: u64, spatial: u8) -> usize {
        5 * usize::from(spatial) + DdStructure::l1t3_template(n)
    }

    /// The template id of template `index`.
    pub fn template_id(&self, index: usize) -> u8 {
        ((usize::from(self.template_id_offset) + index) % 64) as u8
    }

    /// The index of the template that `template_id` (taken modulo 64)
    /// names, if the structure has it.
    pub fn template_index(&self, template_id: u8) -> Option<usize> {
        let index =
            (usize::from(template_id) + 64 - usize::from(self.template_id_offset) % 64) % 64;
        (index < self.templates.len()).then_some(index)
    }

    /// The number of spatial layers (the last template's spatial id + 1).
    pub fn spatial_layers(&self) -> usize {
        self.templates
            .last()
            .map_or(0, |t| usize::from(t.spatial_id) + 1)
    }

    /// The mask of all decode targets (bit `i` for decode target `i`).
    pub fn all_decode_targets(&self) -> u32 {
        match self.decode_targets {
            0 => 0,
            n => u32::MAX >> (32 - n.min(32)),
        }
    }

    /// The layer of each decode target, `(spatial, temporal)`: the highest
    /// spatial and temporal ids of the templates present in it (spec
    /// `decode_target_layers`).
    pub fn decode_target_layers(&self) -> Vec<(u8, u8)> {
        (0..self.decode_targets)
            .map(|dt| {
                let present = self
                    .templates
                    .iter()
                    .filter(|t| t.dtis.get(dt).is_some_and(|d| d.present()));
                present.fold((0, 0), |(s, t), x| {
                    (s.max(x.spatial_id), t.max(x.temporal_id))
                })
            })
            .collect()
    }

    /// Whether the fields fit each other and the wire format's ranges, so
    /// that [`write()`] can send the structure.
    fn check(&self) -> Result<(), DdError> {
        let dt = self.decode_targets;
        let template_ok = |t: &DdTemplate| {
            t.dtis.len() == dt
                && t.chain_fdiffs.len() == self.chains
                && t.chain_fdiffs.iter().all(|&c| c < 16)
                && t.fdiffs.len() <= MAX_FDIFFS
                && t.fdiffs.iter().all(|f| (1..=16).contains(f))
        };
        let layers_ok = self.templates.first().is_some_and(|t| {
            (t.spatial_id, t.temporal_id) == (0, 0)
                && self
                    .templates
                    .windows(2)
                    .all(|w| next_layer_idc(&w[0], &w[1]).is_some())
        });
        let resolutions_ok = self.resolutions.as_ref().is_none_or(|r| {
            r.len() == self.spatial_layers()
                && r.iter()
                    .all(|r| (1..=65536).contains(&r.width) && (1..=65536).contains(&r.height))
        });
        let chains_ok = self.chains <= dt
            && self.protected_by.len() == if self.chains > 0 { dt } else { 0 }
            && self
                .protected_by
                .iter()
                .all(|&c| usize::from(c) < self.chains);
        let ok = self.template_id_offset < 64
            && (1..=MAX_DECODE_TARGETS).contains(&dt)
            && (1..=MAX_TEMPLATES).contains(&self.templates.len())
            && self.templates.iter().all(template_ok)
            && layers_ok
            && chains_ok
            && resolutions_ok;
        if ok {
            Ok(())
        } else {
            Err(DdError::Invalid)
        }
    }
}

/// `next_layer_idc` from template `a` to the next one, `b`: 0 the same
/// layer, 1 the next temporal layer, 2 the next spatial layer's temporal
/// layer 0; `None` for any other step.
fn next_layer_idc(a: &DdTemplate, b: &DdTemplate) -> Option<u32> {
    let (sa, ta) = (u16::from(a.spatial_id), u16::from(a.temporal_id));
    let (sb, tb) = (u16::from(b.spatial_id), u16::from(b.temporal_id));
    if (sb, tb) == (sa, ta) {
        Some(0)
    } else if sb == sa && tb == ta + 1 {
        Some(1)
    } else if sb == sa + 1 && tb == 0 {
        Some(2)
    } else {
        None
    }
}

impl DependencyDescriptor {
    /// A whole frame (start and end of frame set) of template `index` of
    /// `structure`, with the template's values; `None` if there is no such
    /// template. Set the flags, attach a structure or an active mask, or
    /// change the values before [`write()`].
    pub fn from_template(
        structure: &DdStructure,
        index: usize,
        frame_number: u16,
    ) -> Option<DependencyDescriptor> {
        let t = structure.templates.get(index)?;
        Some(DependencyDescriptor {
            start_of_frame: true,
            end_of_frame: true,
            template_id: structure.template_id(index),
            frame_number,
            spatial_id: t.spatial_id,
            temporal_id: t.temporal_id,
            dtis: t.dtis.clone(),
            fdiffs: t.fdiffs.clone(),
            chain_fdiffs: t.chain_fdiffs.clone(),
            active_decode_targets: None,
            structure: None,
        })
    }

    /// The frame numbers of the frames this one refers to.
    pub fn references(&self) -> impl Iterator<Item = u16> + '_ {
        self.fdiffs
            .iter()
            .map(|&f| self.frame_number.wrapping_sub(f))
    }
}

/// Reads bits from the most significant of each byte on; every read is
/// checked against the end.
struct BitReader<'a> {
    data: &'a [u8],
    /// Bits read so far.
    pos: usize,
}

impl BitReader<'_> {
    /// `f(n)`: an `n`-bit unsigned number, `n` ≤ 32.
    fn bits(&mut self, n: u32) -> Result<u32, DdError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or(DdError::Truncated)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn flag(&mut self) -> Result<bool, DdError> {
        Ok(self.bits(1)? == 1)
    }

    /// `ns(n)`: a number in `0..n` in the non-symmetric encoding: with `w`
    /// the bit length of `n` and `m = 2^w - n`, values below `m` take
    /// `w - 1` bits, the others `w`.
    fn ns(&mut self, n: u32) -> Result<u32, DdError> {
        if n <= 1 {
            return Ok(0);
        }
        let w = u32::BITS - n.leading_zeros();
        let m = (1 << w) - n;
        let v = self.bits(w - 1)?;
        if v < m {
            return Ok(v);
        }
        Ok((v << 1) - m + self.bits(1)?)
    }
}

/// Appends bits, most significant first, to a byte vector; the last byte's
/// unused bits stay zero (the padding).
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Bits used of the last byte, 0..8 (0: start a new byte).
    used: u32,
}

impl BitWriter<'_> {
    /// The low `n` bits of `v`, `n` ≤ 32.
    fn bits(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            if self.used == 0 {
                self.out.push(0);
            }
            if let Some(last) = self.out.last_mut() {
                *last |= (((v >> i) & 1) as u8) << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    fn flag(&mut self, b: bool) {
        self.bits(1, u32::from(b));
    }

    /// `ns(n)` of `v < n`; see [`BitReader::ns`].
    fn ns(&mut self, n: u32, v: u32) {
        if n <= 1 {
            return;
        }
        let w = u32::BITS - n.leading_zeros();
        let m = (1 << w) - n;
        if v < m {
            self.bits(w - 1, v);
        } else {
            self.bits(w, v + m);
        }
    }
}

/// Reads one descriptor, the payload of the header extension (its length
/// is the extension's: 3 bytes without extended fields).
///
/// `known` is the structure of earlier packets; a structure the packet
/// carries replaces it for this packet. Errors: [`DdError::NoStructure`]
/// when there is neither, [`DdError::UnknownTemplate`] when the template
/// id is outside the structure's ids, [`DdError::Truncated`] when a field
/// runs past the end, [`DdError::Invalid`] over a limit.
pub fn parse(data: &[u8], known: Option<&DdStructure>) -> Result<DependencyDescriptor, DdError> {
    let mut r = BitReader { data, pos: 0 };
    let start_of_frame = r.flag()?;
    let end_of_frame = r.flag()?;
    let template_id = r.bits(6)? as u8;
    let frame_number = r.bits(16)? as u16;
    let mut has_structure = false;
    let mut has_active = false;
    let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
    let mut structure = None;
    if data.len() > 3 {
        has_structure = r.flag()?;
        has_active = r.flag()?;
        custom_dtis = r.flag()?;
        custom_fdiffs = r.flag()?;
        custom_chains = r.flag()?;
        if has_structure {
            structure = Some(read_structure(&mut r)?);
        }
    }
    let s = structure.as_ref().or(known).ok_or(DdError::NoStructure)?;
    let mut active_decode_targets = has_structure.then(|| s.all_decode_targets());
    if has_active {
        active_decode_targets = Some(r.bits(s.decode_targets as u32)?);
    }
    let t = s
        .template_index(template_id)
        .and_then(|i| s.templates.get(i))
        .ok_or(DdError::UnknownTemplate)?;
    let dtis = if custom_dtis {
        (0..s.decode_targets)
            .map(|_| r.bits(2).map(Dti::from_bits))
            .collect::<Result<_, _>>()?
    } else {
        t.dtis.clone()
    };
    let fdiffs = if custom_fdiffs {
        read_frame_fdiffs(&mut r)?
    } else {
        t.fdiffs.clone()
    };
    let chain_fdiffs = if custom_chains {
        (0..s.chains)
            .map(|_| r.bits(8).map(|c| c as u8))
            .collect::<Result<_, _>>()?
    } else {
        t.chain_fdiffs.clone()
    };
    Ok(DependencyDescriptor {
        start_of_frame,
        end_of_frame,
        template_id,
        frame_number,
        spatial_id: t.spatial_id,
        temporal_id: t.temporal_id,
        dtis,
        fdiffs,
        chain_fdiffs,
        active_decode_targets,
        structure,
    })
}

/// `template_dependency_structure()`.
fn read_structure(r: &mut BitReader) -> Result<DdStructure, DdError> {
    let template_id_offset = r.bits(6)? as u8;
    let decode_targets = r.bits(5)? as usize + 1;
    // template_layers(): each next_layer_idc after a template says where
    // the next one is (3: there is none).
    let mut templates = Vec::new();
    let (mut spatial_id, mut temporal_id) = (0u8, 0u8);
    loop {
        if templates.len() == MAX_TEMPLATES {
            return Err(DdError::Invalid);
        }
        templates.push(DdTemplate {
            spatial_id,
            temporal_id,
            ..DdTemplate::default()
        });
        match r.bits(2)? {
            0 => {}
            1 => temporal_id += 1,
            2 => (spatial_id, temporal_id) = (spatial_id + 1, 0),
            _ => break,
        }
    }
    for t in &mut templates {
        t.dtis = (0..decode_targets)
            .map(|_| r.bits(2).map(Dti::from_bits))
            .collect::<Result<_, _>>()?;
    }
    for t in &mut templates {
        while r.flag()? {
            if t.fdiffs.len() == MAX_FDIFFS {
                return Err(DdError::Invalid);
            }
            t.fdiffs.push(r.bits(4)? as u16 + 1);
        }
    }
    let chains = r.ns(decode_targets as u32 + 1)? as usize;
    let mut protected_by = Vec::new();
    if chains > 0 {
        for _ in 0..decode_targets {
            protected_by.push(r.ns(chains as u32)? as u8);
        }
    }
    for t in &mut templates {
        t.chain_fdiffs = (0..chains)
            .map(|_| r.bits(4).map(|c| c as u8))
            .collect::<Result<_, _>>()?;
    }
    let mut s = DdStructure {
        template_id_offset,
        decode_targets,
        templates,
        chains,
        protected_by,
        resolutions: None,
    };
    if r.flag()? {
        let resolutions = (0..s.spatial_layers())
            .map(|_| {
                let width = r.bits(16)? + 1;
                let height = r.bits(16)? + 1;
                Ok(Resolution { width, height })
            })
            .collect::<Result<_, DdError>>()?;
        s.resolutions = Some(resolutions);
    }
    Ok(s)
}

/// `frame_fdiffs()`: each fdiff - 1 in 4, 8 or 12 bits, the size before it.
fn read_frame_fdiffs(r: &mut BitReader) -> Result<Vec<u16>, DdError> {
    let mut fdiffs = Vec::new();
    loop {
        let size = r.bits(2)?;
        if size == 0 {
            return Ok(fdiffs);
        }
        if fdiffs.len() == MAX_FDIFFS {
            return Err(DdError::Invalid);
        }
        fdiffs.push(r.bits(4 * size)? as u16 + 1);
    }
}

/// Appends descriptor `d` to `out`, read against `d.structure` if it
/// carries one, else `known`.
///
/// DTIs, fdiffs and chain distances that differ from the template's are
/// sent as custom fields; `d.active_decode_targets` is sent unless it is
/// all decode targets in a packet with a structure (which implies that).
/// Extended fields are left out when none is needed, giving 3 bytes.
/// Nothing is written on error: [`DdError::NoStructure`] without a
/// structure, [`DdError::UnknownTemplate`] for a template id the structure
/// lacks, [`DdError::Invalid`] for fields that do not fit the structure,
/// the template (spatial and temporal id) or the format's ranges.
pub fn write(
    d: &DependencyDescriptor,
    known: Option<&DdStructure>,
    out: &mut Vec<u8>,
) -> Result<(), DdError> {
    let s = d.structure.as_ref().or(known).ok_or(DdError::NoStructure)?;
    s.check()?;
    if d.template_id >= 64 {
        return Err(DdError::Invalid);
    }
    let t = s
        .template_index(d.template_id)
        .and_then(|i| s.templates.get(i))
        .ok_or(DdError::UnknownTemplate)?;
    let all = s.all_decode_targets();
    let fits = (d.spatial_id, d.temporal_id) == (t.spatial_id, t.temporal_id)
        && d.dtis.len() == s.decode_targets
        && d.chain_fdiffs.len() == s.chains
        && d.fdiffs.len() <= MAX_FDIFFS
        && d.fdiffs.iter().all(|f| (1..=4096).contains(f))
        && d.active_decode_targets.is_none_or(|m| m & !all == 0);
    if !fits {
        return Err(DdError::Invalid);
    }
    let custom_dtis = d.dtis != t.dtis;
    let custom_fdiffs = d.fdiffs != t.fdiffs;
    let custom_chains = d.chain_fdiffs != t.chain_fdiffs;
    let active = d
        .active_decode_targets
        .filter(|&m| d.structure.is_none() || m != all);
    let extended =
        d.structure.is_some() || active.is_some() || custom_dtis || custom_fdiffs || custom_chains;

    let mut w = BitWriter { out, used: 0 };
    w.flag(d.start_of_frame);
    w.flag(d.end_of_frame);
    w.bits(6, u32::from(d.template_id));
    w.bits(16, u32::from(d.frame_number));
    if !extended {
        return Ok(());
    }
    w.flag(d.structure.is_some());
    w.flag(active.is_some());
    w.flag(custom_dtis);
    w.flag(custom_fdiffs);
    w.flag(custom_chains);
    if let Some(s) = &d.structure {
        write_structure(&mut w, s);
    }
    if let Some(mask) = active {
        w.bits(s.decode_targets as u32, mask);
    }
    if custom_dtis {
        for dti in &d.dtis {
            w.bits(2, dti.bits());
        }
    }
    if custom_fdiffs {
        for &f in &d.fdiffs {
            let v = u32::from(f) - 1;
            let size = match v {
                0..16 => 1,
                16..256 => 2,
                _ => 3,
            };
            w.bits(2, size);
            w.bits(4 * size, v);
        }
        w.bits(2, 0);
    }
    if custom_chains {
        for &c in &d.chain_fdiffs {
            w.bits(8, u32::from(c));
        }
    }
    Ok(())
}

/// `template_dependency_structure()` of a checked structure.
fn write_structure(w: &mut BitWriter, s: &DdStructure) {
    w.bits(6, u32::from(s.template_id_offset));
    w.bits(5, s.decode_targets as u32 - 1);
    for (i, t) in s.templates.iter().enumerate() {
        let idc = s
            .templates
            .get(i + 1)
            .map_or(Some(3), |next| next_layer_idc(t, next));
        w.bits(2, idc.unwrap_or(3));
    }
    for t in &s.templates {
        for dti in &t.dtis {
            w.bits(2, dti.bits());
        }
    }
    for t in &s.templates {
        for &f in &t.fdiffs {
            w.flag(true);
            w.bits(4, u32::from(f) - 1);
        }
        w.flag(false);
    }
    w.ns(s.decode_targets as u32 + 1, s.chains as u32);
    for &c in &s.protected_by {
        w.ns(s.chains as u32, u32::from(c));
    }
    for t in &s.templates {
        for &c in &t.chain_fdiffs {
            w.bits(4, u32::from(c));
        }
    }
    w.flag(s.resolutions.is_some());
    for r in s.resolutions.iter().flatten() {
        w.bits(16, r.width - 1);
        w.bits(16, r.height - 1);
    }
}

/// The descriptors of one RTP stream: keeps the latest structure and set
/// of active decode targets, in the order the packets are read (the spec's
/// order is RTP sequence number order; a reordered packet with an older
/// structure is the caller's to hold back).
#[derive(Debug, Clone, Default)]
pub struct DdReader {
    structure: Option<DdStructure>,
    active: u32,
}

impl DdReader {
    pub fn new() -> DdReader {
        DdReader::default()
    }

    /// The latest structure, if one came.
    pub fn structure(&self) -> Option<&DdStructure> {
        self.structure.as_ref()
    }

    /// The active decode targets (bit `i` for decode target `i`) as the
    /// latest packet that said set them; 0 before any structure.
    pub fn active_decode_targets(&self) -> u32 {
        self.active
    }

    /// Reads one packet's descriptor against the latest structure; a
    /// structure or active mask it carries replaces the kept one. Errors
    /// as [`parse`]; a refused packet changes nothing.
    pub fn read(&mut self, data: &[u8]) -> Result<DependencyDescriptor, DdError> {
        let d = parse(data, self.structure.as_ref())?;
        if let Some(s) = &d.structure {
            self.structure = Some(s.clone());
        }
        if let Some(mask) = d.active_decode_targets {
            self.active = mask;
        }
        Ok(d)
    }

    /// Reads one packet's descriptor ([`DdReader::read`]) and says what
    /// the layer selector needs of it. `stream` is the packet's simulcast
    /// stream (0 for a track of one stream). A structure of several
    /// spatial layers makes them SVC layers of the stream. A frame is a
    /// switching-up point up to the highest temporal layer of its spatial
    /// layer whose decode target it marks "switch": from there on, that
    /// layer decodes.
    /// `None` when the descriptor does not parse.
    pub fn describe(&mut self, data: &[u8], stream: u8) -> Option<LayerPacket> {
        let d = self.read(data).ok()?;
        let structure = self.structure.as_ref()?;
        let svc = structure.spatial_layers() > 1;
        // The decode targets of the frame's spatial layer, from its own
        // temporal layer up, for which it is a switch point: the highest
        // can start here.
        let switch_up_to = structure
            .decode_target_layers()
            .iter()
            .zip(&d.dtis)
            .filter(|((s, t), dti)| {
                *s == d.spatial_id && *t >= d.temporal_id && **dti == Dti::Switch
            })
            .map(|((_, t), _)| *t)
            .max();
        Some(LayerPacket {
            layer: Layer {
                spatial: if svc { d.spatial_id } else { stream },
                temporal: d.temporal_id,
            },
            svc,
            frame_start: d.start_of_frame,
            frame_end: d.end_of_frame,
            switch_up: switch_up_to.is_some(),
            switch_up_to: switch_up_to.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small structure of the hand-assembled vectors: template id
    /// offset 5, two decode targets (T0; T0+T1), one chain protecting both,
    /// the resolution of spatial layer 0 320x180.
    ///
    /// | index | id | layer | fdiffs | chain | DTIs |
    /// | --- | --- | --- | --- | --- | --- |
    /// | 0 | 5 | S0T0 | | 0 | `SS` |
    /// | 1 | 6 | S0T1 | 1 | 1 | `-D` |
    fn small() -> DdStructure {
        DdStructure {
            template_id_offset: 5,
            decode_targets: 2,
            templates: vec![
                DdTemplate::new(0, 0, "SS", &[], &[0]),
                DdTemplate::new(0, 1, "-D", &[1], &[1]),
            ],
            chains: 1,
            protected_by: vec![0, 0],
            resolutions: Some(vec![Resolution {
                width: 320,
                height: 180,
            }]),
        }
    }

    /// The first packet of a keyframe of [`small`], assembled by hand from
    /// the syntax of spec section A.8.2, field by field:
    ///
    /// ```text
    /// start_of_frame 1, end_of_frame 1, template id 5 (000101)
    ///                                     11000101              C5
    /// frame_number 0x1234                 00010010 00110100     12 34
    /// flags: structure 1, active 0, custom dtis 0, fdiffs 0, chains 0
    ///                                     10000
    /// template_id_offset 5                000101
    /// dt_cnt_minus_one 1                  00001
    /// next_layer_idc after template 0: 1 (next temporal layer)  01
    ///                after template 1: 3 (no more)              11
    /// template_dti: 0 S S (10 10); 1 - D (00 01)   1010 0001
    /// template_fdiffs: 0: none (0); 1: fdiff 1 (1 0000), end (0)
    ///                                     0 10000 0
    /// chain_cnt 1 = ns(3): w 2, m 1; 1 >= m so f(2) of 1 + m: 10
    /// decode_target_protected_by: ns(1), no bits
    /// template_chain_fdiff: 0: 0 (0000), 1: 1 (0001)
    /// resolutions_present_flag 1
    /// max_render_width_minus_1 319        00000001 00111111
    /// max_render_height_minus_1 179       00000000 10110011
    /// zero padding                        00
    /// ```
    ///
    /// After the first three bytes, 78 bits and the padding, in bytes:
    /// `10000000 10100001 01111010 00010100 00010000 00001100 00000100
    /// 11111100 00000010 11001100`.
    const SMALL_KEY: [u8; 13] = [
        0xc5, 0x12, 0x34, 0x80, 0xa1, 0x7a, 0x14, 0x10, 0x0c, 0x04, 0xfc, 0x02, 0xcc,
    ];

    fn dtis(symbols: &str) -> Vec<Dti> {
        DdTemplate::new(0, 0, symbols, &[], &[]).dtis
    }

    fn written(d: &DependencyDescriptor, known: Option<&DdStructure>) -> Vec<u8> {
        let mut out = Vec::new();
        write(d, known, &mut out).unwrap();
        out
    }

    #[test]
    fn ns_matches_the_spec() {
        // The spec's table for n = 5.
        let want = ["00", "01", "10", "110", "111"];
        for (v, bits) in want.iter().enumerate() {
            let mut out = Vec::new();
            let mut w = BitWriter {
                out: &mut out,
                used: 0,
            };
            w.ns(5, v as u32);
            let used = w.used as usize;
            let got: String = format!("{:08b}", out[0])[..used].to_string();
            assert_eq!(got, *bits, "ns(5) of {v}");
        }
        for n in 1..=33 {
            for v in 0..n {
                let mut out = Vec::new();
                let mut w = BitWriter {
                    out: &mut out,
                    used: 0,
                };
                w.ns(n, v);
                w.bits(8, 0xa5);
                let mut r = BitReader { data: &out, pos: 0 };
                assert_eq!(r.ns(n), Ok(v), "ns({n}) of {v}");
                assert_eq!(r.bits(8), Ok(0xa5));
            }
        }
    }

    #[test]
    fn hand_assembled_structure() {
        let d = parse(&SMALL_KEY, None).unwrap();
        assert!(d.start_of_frame && d.end_of_frame);
        assert_eq!(d.template_id, 5);
        assert_eq!(d.frame_number, 0x1234);
        assert_eq!((d.spatial_id, d.temporal_id), (0, 0));
        assert_eq!(d.dtis, dtis("SS"));
        assert!(d.fdiffs.is_empty());
        assert_eq!(d.chain_fdiffs, [0]);
        // A new structure makes every decode target active.
        assert_eq!(d.active_decode_targets, Some(0b11));
        let s = d.structure.as_ref().unwrap();
        assert_eq!(*s, small());
        assert_eq!(s.decode_target_layers(), [(0, 0), (0, 1)]);
        // The writer gives the same bytes.
        assert_eq!(written(&d, None), SMALL_KEY);
        let mut fresh = DependencyDescriptor::from_template(&small(), 0, 0x1234).unwrap();
        fresh.structure = Some(small());
        assert_eq!(written(&fresh, None), SMALL_KEY);
    }

    #[test]
    fn hand_assembled_frames() {
        let s = small();
        // Mandatory fields only: start 0, end 1, template id 6 (index 1),
        // frame 0x1235: 01000110 00010010 00110101.
        let d = parse(&[0x46, 0x12, 0x35], Some(&s)).unwrap();
        assert!(!d.start_of_frame && d.end_of_frame);
        assert_eq!((d.template_id, d.frame_number), (6, 0x1235));
        assert_eq!((d.spatial_id, d.temporal_id), (0, 1));
        assert_eq!(d.dtis, dtis("-D"));
        assert_eq!(d.fdiffs, [1]);
        assert_eq!(d.references().collect::<Vec<_>>(), [0x1234]);
        assert_eq!(d.chain_fdiffs, [1]);
        assert_eq!(d.active_decode_targets, None);
        assert_eq!(d.structure, None);
        assert_eq!(written(&d, Some(&s)), [0x46, 0x12, 0x35]);

        // Custom fdiffs: start 1, end 0, template id 6, frame 0x1236;
        // flags 00010; fdiff 3 as size 1 (01) and 2 (0010); fdiff 100 as
        // size 2 (10) and 99 (01100011); end (00); one bit of padding:
        // 10000110 00010010 00110110 | 00010010 01010011 00011000.
        let custom = [0x86, 0x12, 0x36, 0x12, 0x53, 0x18];
        let d = parse(&custom, Some(&s)).unwrap();
        assert!(d.start_of_frame && !d.end_of_frame);
        assert_eq!((d.template_id, d.frame_number), (6, 0x1236));
        assert_eq!(d.fdiffs, [3, 100]);
        assert_eq!(d.dtis, dtis("-D"));
        assert_eq!(d.chain_fdiffs, [1]);
        assert_eq!(written(&d, Some(&s)), custom);

        // Active decode targets: template id 5, frame 1; flags 01000; the
        // mask in DtCnt = 2 bits, 01; padding: 01000010.
        let active = [0xc5, 0x00, 0x01, 0x42];
        let d = parse(&active, Some(&s)).unwrap();
        assert_eq!(d.active_decode_targets, Some(0b01));
        assert_eq!(d.dtis, dtis("SS"));
        assert_eq!(written(&d, Some(&s)), active);
    }

    /// Every template of the ready-made structures, and the custom fields,
    /// written and read back.
    #[test]
    fn round_trips() {
        let mut shifted = DdStructure::l3t3_key();
        // Ids 60..=63, then 0..=10: the template ids wrap.
        shifted.template_id_offset = 60;
        shifted.resolutions = Some(
            [(320, 180), (640, 360), (1280, 720)]
                .map(|(width, height)| Resolution { width, height })
                .to_vec(),
        );
        let mut big = DdStructure::l1t3();
        big.resolutions = Some(vec![Resolution {
            width: 65536,
            height: 1,
        }]);
        for s in [DdStructure::l1t3(), DdStructure::l3t3_key(), shifted, big] {
            for i in 0..s.templates.len() {
                let mut d =
                    DependencyDescriptor::from_template(&s, i, 65530u16.wrapping_add(i as u16))
                        .unwrap();
                d.start_of_frame = i % 2 == 0;
                d.end_of_frame = i % 3 == 0;
                // Against the known structure: 3 bytes.
                let bytes = written(&d, Some(&s));
                assert_eq!(bytes.len(), 3);
                assert_eq!(parse(&bytes, Some(&s)), Ok(d.clone()));

                // Carrying the structure (active implicitly all).
                let mut with = d.clone();
                with.structure = Some(s.clone());
                with.active_decode_targets = Some(s.all_decode_targets());
                assert_eq!(parse(&written(&with, None), None), Ok(with.clone()));
                // And an explicit mask with it.
                with.active_decode_targets = Some(1);
                assert_eq!(parse(&written(&with, None), None), Ok(with.clone()));

                // Custom fields and an active mask, without the structure.
                let mut custom = d.clone();
                custom.dtis.reverse();
                custom.dtis[0] = Dti::Required;
                custom.fdiffs = vec![1, 16, 17, 256, 257, 4096];
                custom.chain_fdiffs = vec![255; s.chains];
                custom.active_decode_targets = Some(s.all_decode_targets() >> 1);
                assert_eq!(parse(&written(&custom, Some(&s)), Some(&s)), Ok(custom));

                // Each custom field alone.
                let mut no_refs = d.clone();
                no_refs.fdiffs.clear();
                assert_eq!(parse(&written(&no_refs, Some(&s)), Some(&s)), Ok(no_refs));
                let mut chain = d.clone();
                chain.chain_fdiffs[0] = 200;
                assert_eq!(parse(&written(&chain, Some(&s)), Some(&s)), Ok(chain));
            }
        }
    }

    #[test]
    fn truncated_at_every_length() {
        let s = DdStructure::l3t3_key();
        let mut d = DependencyDescriptor::from_template(&small(), 1, 9).unwrap();
        d.structure = Some(small());
        d.active_decode_targets = Some(0b01);
        d.dtis = dtis("RR");
        d.fdiffs = vec![300];
        d.chain_fdiffs = vec![7];
        let whole = written(&d, None);
        assert_eq!(parse(&whole, None), Ok(d.clone()));
        for known in [None, Some(&s)] {
            for len in 0..whole.len() {
                let got = parse(&whole[..len], known);
                match (len, known) {
                    (3, None) => assert_eq!(got, Err(DdError::NoStructure)),
                    // Template id 6 is template 6 of l3t3_key.
                    (3, Some(s)) => assert_eq!(got.unwrap().dtis, s.templates[6].dtis),
                    _ => assert_eq!(got, Err(DdError::Truncated), "{len} bytes"),
                }
            }
        }
        // The same for a descriptor of custom fields only.
        let mut c = DependencyDescriptor::from_template(&s, 12, 9).unwrap();
        c.fdiffs = vec![4000, 2];
        let whole = written(&c, Some(&s));
        for len in 4..whole.len() {
            assert_eq!(parse(&whole[..len], Some(&s)), Err(DdError::Truncated));
        }
    }

    #[test]
    fn padding_and_trailing_bytes_are_ignored() {
        let s = small();
        let d = parse(&[0x46, 0x12, 0x35], Some(&s)).unwrap();
        // Four bytes: all extended flags 0.
        assert_eq!(parse(&[0x46, 0x12, 0x35, 0x00], Some(&s)), Ok(d.clone()));
        assert_eq!(parse(&[0x46, 0x12, 0x35, 0, 0, 0, 0], Some(&s)), Ok(d));
        let mut long = SMALL_KEY.to_vec();
        long.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(parse(&long, None), parse(&SMALL_KEY, None));
    }

    #[test]
    fn errors() {
        let s = small();
        // No structure in the packet and none known.
        assert_eq!(parse(&[0x46, 0x12, 0x35], None), Err(DdError::NoStructure));
        assert_eq!(
            parse(&[0xc5, 0x00, 0x01, 0x42], None),
            Err(DdError::NoStructure)
        );
        // Template ids 5 and 6 exist; 7 and 4 (index 63) do not.
        assert!(parse(&[0x05, 0, 0], Some(&s)).is_ok());
        assert_eq!(
            parse(&[0x07, 0, 0], Some(&s)),
            Err(DdError::UnknownTemplate)
        );
        assert_eq!(
            parse(&[0x04, 0, 0], Some(&s)),
            Err(DdError::UnknownTemplate)
        );
        // A structure in the packet is the one its template id is read
        // against: id 5 of SMALL_KEY against l1t3 (ids 0..=4) is fine.
        assert!(parse(&SMALL_KEY, Some(&DdStructure::l1t3())).is_ok());
        let mut other = SMALL_KEY;
        other[0] = 0xc0 | 7;
        assert_eq!(parse(&other, None), Err(DdError::UnknownTemplate));

        // The writer refuses what would not read back.
        let d = DependencyDescriptor::from_template(&s, 1, 1).unwrap();
        let mut out = Vec::new();
        assert_eq!(write(&d, None, &mut out), Err(DdError::NoStructure));
        let mut bad = d.clone();
        bad.template_id = 7;
        assert_eq!(
            write(&bad, Some(&s), &mut out),
            Err(DdError::UnknownTemplate)
        );
        let broken: [fn(&mut DependencyDescriptor); 7] = [
            |d| d.template_id += 64,
            |d| d.temporal_id = 0,
            |d| d.dtis.push(Dti::Switch),
            |d| d.chain_fdiffs.clear(),
            |d| d.fdiffs = vec![0],
            |d| d.fdiffs = vec![4097],
            |d| d.active_decode_targets = Some(0b100),
        ];
        for f in broken {
            let mut bad = d.clone();
            f(&mut bad);
            assert_eq!(write(&bad, Some(&s), &mut out), Err(DdError::Invalid));
        }
        let broken: [fn(&mut DdStructure); 11] = [
            |s| s.template_id_offset = 64,
            |s| s.decode_targets = 0,
            |s| s.templates[1].temporal_id = 2,
            |s| s.templates[0].temporal_id = 1,
            |s| s.templates[1].spatial_id = 2,
            |s| s.resolutions = Some(vec![]),
            |s| s.templates[1].fdiffs = vec![17],
            |s| s.templates[0].chain_fdiffs = vec![16],
            |s| s.protected_by = vec![1, 0],
            |s| s.chains = 3,
            |s| s.templates = vec![s.templates[0].clone(); 65],
        ];
        for f in broken {
            let mut bad = s.clone();
            f(&mut bad);
            let mut d = DependencyDescriptor::from_template(&s, 0, 1).unwrap();
            d.structure = Some(bad);
            assert_eq!(write(&d, None, &mut out), Err(DdError::Invalid));
        }
        assert!(out.is_empty(), "nothing written on error");
    }

    /// Limits that keep hostile input small.
    #[test]
    fn over_the_limits() {
        // 65 templates: next_layer_idc 0 64 times.
        let mut bytes = vec![0x80, 0, 0, 0x80, 0x00];
        let mut bits = BitWriter {
            out: &mut bytes,
            used: 3,
        };
        for _ in 0..64 {
            bits.bits(2, 0);
        }
        bits.bits(2, 3);
        bits.bits(32, 0);
        assert_eq!(parse(&bytes, None), Err(DdError::Invalid));

        // 64 templates are fine.
        let mut s = DdStructure::l1t3();
        s.templates = vec![s.templates[1].clone(); 64];
        let mut d = DependencyDescriptor::from_template(&s, 63, 0).unwrap();
        d.structure = Some(s.clone());
        d.active_decode_targets = Some(0b111);
        assert_eq!(parse(&written(&d, None), None), Ok(d.clone()));

        // 17 frame fdiffs: custom fdiffs of size 1 seventeen times.
        let mut bytes = vec![0, 0, 0];
        let mut bits = BitWriter {
            out: &mut bytes,
            used: 0,
        };
        bits.bits(5, 0b00010);
        for _ in 0..17 {
            bits.bits(6, 0b01_0000);
        }
        bits.bits(2, 0);
        assert_eq!(parse(&bytes, Some(&s)), Err(DdError::Invalid));
        let mut sixteen = DependencyDescriptor::from_template(&s, 0, 0).unwrap();
        sixteen.fdiffs = vec![1; MAX_FDIFFS];
        assert_eq!(parse(&written(&sixteen, Some(&s)), Some(&s)), Ok(sixteen));

        // 32 decode targets: the mask's top bit.
        let mut wide = DdStructure::l1t3();
        wide.decode_targets = 32;
        wide.protected_by = vec![0; 32];
        for t in &mut wide.templates {
            t.dtis = vec![Dti::Required; 32];
        }
        assert_eq!(wide.all_decode_targets(), u32::MAX);
        let mut d = DependencyDescriptor::from_template(&wide, 2, 0).unwrap();
        d.active_decode_targets = Some(0x8000_0001);
        assert_eq!(parse(&written(&d, Some(&wide)), Some(&wide)), Ok(d));
    }

    #[test]
    fn reader_keeps_and_replaces_the_structure() {
        let mut r = DdReader::new();
        let l1 = DdStructure::l1t3();
        let mut key = DependencyDescriptor::from_template(&l1, 0, 100).unwrap();
        key.structure = Some(l1.clone());
        let delta = DependencyDescriptor::from_template(&l1, 3, 101).unwrap();
        assert_eq!(
            r.read(&written(&delta, Some(&l1))),
            Err(DdError::NoStructure)
        );
        assert_eq!(r.structure(), None);
        assert_eq!(r.active_decode_targets(), 0);

        r.read(&written(&key, None)).unwrap();
        assert_eq!(r.structure(), Some(&l1));
        assert_eq!(r.active_decode_targets(), 0b111);
        // Later packets are read against it.
        for n in 1..20u16 {
            let i = DdStructure::l1t3_template(u64::from(n));
            let d = DependencyDescriptor::from_template(&l1, i, 100 + n).unwrap();
            assert_eq!(r.read(&written(&d, Some(&l1))), Ok(d));
        }
        let mut mask = DependencyDescriptor::from_template(&l1, 1, 120).unwrap();
        mask.active_decode_targets = Some(0b001);
        r.read(&written(&mask, Some(&l1))).unwrap();
        assert_eq!(r.active_decode_targets(), 0b001);
        assert_eq!(r.structure(), Some(&l1));

        // A new structure with other template ids replaces it.
        let mut l3 = DdStructure::l3t3_key();
        l3.template_id_offset = 5;
        let mut key = DependencyDescriptor::from_template(&l3, 0, 121).unwrap();
        key.structure = Some(l3.clone());
        r.read(&written(&key, None)).unwrap();
        assert_eq!(r.structure(), Some(&l3));
        assert_eq!(r.active_decode_targets(), 0x1ff);
        let d = DependencyDescriptor::from_template(&l3, 14, 122).unwrap();
        assert_eq!(d.template_id, 19);
        assert_eq!(r.read(&written(&d, Some(&l3))), Ok(d));
        // Template id 1 was l1t3's, not l3's any more; a refused packet
        // changes nothing.
        let old = DependencyDescriptor::from_template(&l1, 1, 123).unwrap();
        assert_eq!(
            r.read(&written(&old, Some(&l1))),
            Err(DdError::UnknownTemplate)
        );
        assert_eq!(r.read(&[0xc5]), Err(DdError::Truncated));
        assert_eq!(r.structure(), Some(&l3));
        assert_eq!(r.active_decode_targets(), 0x1ff);
    }

    /// One frame of a simulated stream of `layers` spatial layers in the
    /// `T0 T2 T1 T2` pattern with keyframe-only inter-layer prediction,
    /// from the layer pattern alone (not from the templates).
    struct Frame {
        spatial: u8,
        temporal: u8,
        template: usize,
        refs: Vec<usize>,
        /// Member of chain `c`: the T0 frames of layer `c` and the
        /// keyframes of the layers below it.
        in_chain: Vec<bool>,
    }

    fn simulate(layers: u8, pictures: u64) -> Vec<Frame> {
        let l = usize::from(layers);
        let mut frames = Vec::new();
        for n in 0..pictures {
            let key = n == 0;
            for s in 0..layers {
                let i = frames.len();
                let (temporal, back) = match n % 4 {
                    0 => (0, 4),
                    2 => (1, 2),
                    _ => (2, 1),
                };
                let refs = match (key, s) {
                    (true, 0) => vec![],
                    (true, _) => vec![i - 1],
                    _ => vec![i - back * l],
                };
                let template = match layers {
                    1 => DdStructure::l1t3_template(n),
                    _ => DdStructure::l3t3_key_template(n, s),
                };
                frames.push(Frame {
                    spatial: s,
                    temporal,
                    template,
                    refs,
                    in_chain: (0..layers)
                        .map(|c| (temporal == 0 && s == c) || (key && s < c))
                        .collect(),
                });
            }
        }
        frames
    }

    /// The frames `f` needs: itself and everything it refers to.
    fn closure(frames: &[Frame], f: usize) -> Vec<bool> {
        let mut need = vec![false; frames.len()];
        let mut todo = vec![f];
        while let Some(g) = todo.pop() {
            if !need[g] {
                need[g] = true;
                todo.extend(&frames[g].refs);
            }
        }
        need
    }

    /// The ready-made structures agree with their layer patterns: each
    /// template's layer, fdiffs and chain distances are those of the frames
    /// that use it, and its DTIs follow from the definitions (spec A.2):
    /// not present outside the decode target's closure, discardable when no
    /// later frame of it refers to the frame, switch when every later frame
    /// refers only to later frames or to what this frame needs.
    #[test]
    fn ready_made_structures_match_their_patterns() {
        for (layers, s) in [(1, DdStructure::l1t3()), (3, DdStructure::l3t3_key())] {
            assert!(s.check().is_ok());
            let targets: Vec<(u8, u8)> = (0..layers)
                .flat_map(|sp| (0..3).map(move |t| (sp, t)))
                .collect();
            assert_eq!(s.decode_target_layers(), targets);
            let frames = simulate(layers, 20);
            let members: Vec<Vec<bool>> = targets
                .iter()
                .map(|&(sp, t)| {
                    let mut m = vec![false; frames.len()];
                    for (i, f) in frames.iter().enumerate() {
                        if f.spatial == sp && f.temporal <= t {
                            for (j, need) in closure(&frames, i).into_iter().enumerate() {
                                m[j] |= need;
                            }
                        }
                    }
                    m
                })
                .collect();
            // The last pictures lack the future that their DTIs talk about.
            for (i, f) in frames.iter().enumerate().take(12 * usize::from(layers)) {
                let t = &s.templates[f.template];
                assert_eq!((t.spatial_id, t.temporal_id), (f.spatial, f.temporal));
                let fdiffs: Vec<u16> = f.refs.iter().map(|&r| (i - r) as u16).collect();
                assert_eq!(t.fdiffs, fdiffs, "frame {i}");
                for c in 0..usize::from(layers) {
                    let prev = (0..i).rev().find(|&g| frames[g].in_chain[c]);
                    let want = prev.map_or(0, |g| (i - g) as u8);
                    assert_eq!(t.chain_fdiffs[c], want, "frame {i} chain {c}");
                }
                let needs = closure(&frames, i);
                for (dt, m) in members.iter().enumerate() {
                    let later = (i + 1..frames.len()).filter(|&g| m[g]);
                    let want = if !m[i] {
                        Dti::NotPresent
                    } else if later.clone().all(|g| !frames[g].refs.contains(&i)) {
                        Dti::Discardable
                    } else if later
                        .clone()
                        .all(|g| frames[g].refs.iter().all(|&r| r >= i || needs[r]))
                    {
                        Dti::Switch
                    } else {
                        Dti::Required
                    };
                    assert_eq!(t.dtis[dt], want, "frame {i} decode target {dt}");
                }
            }
            // Every template is used.
            for i in 0..s.templates.len() {
                assert!(frames.iter().any(|f| f.template == i), "template {i}");
            }
            // Chains protect the decode targets of their spatial layer.
            let by: Vec<u8> = targets.iter().map(|&(sp, _)| sp).collect();
            assert_eq!(s.protected_by, by);
        }
    }

    #[test]
    fn dti_symbols() {
        let all = [
            Dti::NotPresent,
            Dti::Discardable,
            Dti::Switch,
            Dti::Required,
        ];
        let symbols: String = all.iter().map(|d| d.symbol()).collect();
        assert_eq!(symbols, "-DSR");
        assert_eq!(dtis("-DSR"), all);
        assert!(!Dti::NotPresent.present() && Dti::Discardable.present());
        assert_eq!(DdStructure::l3t3_key().spatial_layers(), 3);
        assert_eq!(DdStructure::l1t3().template_id(3), 3);
    }

    /// The descriptor of picture `n` (from the keyframe) of `structure`,
    /// spatial layer `spatial`, whole in one packet; the keyframe's first
    /// frame carries the structure.
    fn frame(structure: &DdStructure, n: u64, spatial: u8, l3: bool) -> Vec<u8> {
        let index = match l3 {
            true => DdStructure::l3t3_key_template(n, spatial),
            false => DdStructure::l1t3_template(n),
        };
        let number = (n * 3 + u64::from(spatial)) as u16;
        let mut d = DependencyDescriptor::from_template(structure, index, number).unwrap();
        if n == 0 && spatial == 0 {
            d.structure = Some(structure.clone());
        }
        let mut out = Vec::new();
        write(&d, Some(structure), &mut out).unwrap();
        out
    }

    #[test]
    fn describe_gives_layers_and_where_each_temporal_layer_can_start() {
        let l1 = DdStructure::l1t3();
        let mut r = DdReader::new();
        // Before the structure: nothing to say.
        assert_eq!(r.describe(&frame(&l1, 1, 0, false), 0), None);
        let got: Vec<(u8, bool, u8)> = (0..8)
            .map(|n| {
                let p = r.describe(&frame(&l1, n, 0, false), 1).unwrap();
                assert!(!p.svc && p.frame_start && p.frame_end);
                assert_eq!(p.layer.spatial, 1, "the simulcast stream");
                (p.layer.temporal, p.switch_up, p.switch_up_to)
            })
            .collect();
        // T0 starts every layer; T1 starts T1 and T2; a T2 frame starts
        // nothing (it refers to the T1 before it).
        assert_eq!(
            got,
            vec![
                (0, true, 2),
                (2, false, 0),
                (1, true, 2),
                (2, false, 0),
                (0, true, 2),
                (2, false, 0),
                (1, true, 2),
                (2, false, 0),
            ]
        );
        let l3 = DdStructure::l3t3_key();
        let mut r = DdReader::new();
        for n in 0..4 {
            for s in 0..3 {
                let p = r.describe(&frame(&l3, n, s, true), 0).unwrap();
                assert!(p.svc, "several spatial layers: SVC");
                assert_eq!(p.layer.spatial, s);
                assert_eq!(p.layer.temporal, [0, 2, 1, 2][n as usize]);
            }
        }
    }
}
