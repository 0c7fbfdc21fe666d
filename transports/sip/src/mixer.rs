//! The audio a phone hears in a room: a mix-minus of the loudest speakers.
//!
//! A phone takes one audio stream, so the room's speakers are mixed for it:
//! every 20 ms ([`FRAME`]) the caller hands [`MixMinus`] the decoded frame of
//! each participant that sent audio in that period, then asks for the frame of
//! each listening phone. That frame is the sum of the up to
//! [`MixConfig::max_speakers`] loudest participants *other than the listener*
//! (it never hears itself), limited to `i16` ([`Limit`]). When nobody else
//! has sent audio the frame is silence, so the phone always gets a full frame.
//!
//! One period goes:
//!
//! 1. [`MixMinus::begin_frame`] forgets the previous period's frames;
//! 2. [`MixMinus::add`] (level measured here, RMS) or
//!    [`MixMinus::add_with_audio_level`] (the RFC 6464 level the sender put on
//!    its packet) once per participant;
//! 3. [`MixMinus::mix_for`] once per listener.
//!
//! Loudness is compared in dBov (0 is a full-scale square wave), so measured
//! and declared levels mix freely. A participant at the floor (−127 dBov,
//! digital silence) is never picked. Ties keep the order of `add`.
//!
//! Allocation: the buffers grow to the largest number of participants seen
//! in one period and are then reused; a steady room allocates nothing per
//! frame.

use std::time::Duration;

/// The length of one mixing period.
pub const FRAME: Duration = Duration::from_millis(20);

/// The most speakers one mix may sum: the sum is accumulated in `i32`.
pub const MAX_SPEAKERS: usize = 64;

/// The level of digital silence, in dBov (RFC 6464's floor).
const FLOOR_DBOV: f32 = -127.0;

/// Where [`Limit::Soft`] starts to bend: three quarters of full scale.
const SOFT_KNEE: f32 = 24_576.0;

/// How a sum beyond the range of `i16` is brought back into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    /// Clamp to `i16::MIN..=i16::MAX`: exact below full scale, hard clipping
    /// (audible distortion) above it.
    #[default]
    Saturate,
    /// A memoryless soft clipper: samples within ±24 576 (¾ of full scale)
    /// pass unchanged, louder ones bend smoothly (tanh) toward full scale,
    /// which they never reach. Less harsh than clipping when loud speakers
    /// overlap, at the price of a slight compression of loud single speakers.
    Soft,
}

/// How [`MixMinus`] mixes.
#[derive(Debug, Clone, PartialEq)]
pub struct MixConfig {
    /// Samples per second of every frame (8 000 for G.711 calls).
    pub sample_rate: u32,
    /// How many of the loudest other participants a listener hears. Default
    /// 3; at most [`MAX_SPEAKERS`] (larger values count as that).
    pub max_speakers: usize,
    /// How sums beyond `i16` are limited. Default [`Limit::Saturate`].
    pub limit: Limit,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            sample_rate: crate::g711::SAMPLE_RATE,
            max_speakers: 3,
            limit: Limit::Saturate,
        }
    }
}

/// One participant's frame in the current period.
#[derive(Debug, Clone)]
struct Contribution<Id> {
    id: Id,
    /// Loudness in dBov, for ranking.
    level: f32,
}

/// Mixes one period's frames for each listener, minus the listener itself.
/// `Id` is whatever names a participant in the room (a track channel, a
/// connection).
#[derive(Debug, Clone)]
pub struct MixMinus<Id> {
    config: MixConfig,
    frame_len: usize,
    contributions: Vec<Contribution<Id>>,
    /// The samples of contribution `i` are `samples[i * frame_len..][..frame_len]`.
    samples: Vec<i16>,
    /// Indices into `contributions` of the last selection, loudest first.
    chosen: Vec<usize>,
    sum: Vec<i32>,
    out: Vec<i16>,
    mismatched: u64,
}

impl<Id: Eq + Clone> MixMinus<Id> {
    /// A mixer with no participants. A sample rate of 0 counts as 8 000.
    pub fn new(config: MixConfig) -> Self {
        let mut config = config;
        if config.sample_rate == 0 {
            config.sample_rate = crate::g711::SAMPLE_RATE;
        }
        config.max_speakers = config.max_speakers.min(MAX_SPEAKERS);
        let frame_len = (config.sample_rate as usize * FRAME.as_millis() as usize) / 1000;
        MixMinus {
            frame_len,
            contributions: Vec::new(),
            samples: Vec::new(),
            chosen: Vec::with_capacity(config.max_speakers),
            sum: vec![0; frame_len],
            out: vec![0; frame_len],
            mismatched: 0,
            config,
        }
    }

    /// Samples in one frame: `sample_rate / 50` (160 at 8 kHz).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// How the mixer was configured (after the bounds of [`MixMinus::new`]).
    pub fn config(&self) -> &MixConfig {
        &self.config
    }

    /// Participants that have a frame in the current period.
    pub fn participants(&self) -> usize {
        self.contributions.len()
    }

    /// Frames handed in with a length other than [`MixMinus::frame_len`]
    /// (since the mixer was made). They were cut or padded with silence.
    pub fn mismatched_frames(&self) -> u64 {
        self.mismatched
    }

    /// Starts a new period: the frames of the previous one are forgotten.
    pub fn begin_frame(&mut self) {
        self.contributions.clear();
        self.chosen.clear();
    }

    /// Adds a participant's frame for the current period, ranked by its RMS
    /// level. A frame of the wrong length is cut or padded with silence (and
    /// counted, [`MixMinus::mismatched_frames`]); a second frame of the same
    /// participant in one period replaces the first.
    pub fn add(&mut self, id: Id, samples: &[i16]) {
        let level = rms_dbov(&samples[..samples.len().min(self.frame_len)]);
        self.add_at_level(id, samples, level);
    }

    /// Adds a participant's frame for the current period, ranked by the level
    /// its sender declared: RFC 6464's 0 (loudest) ..= 127 (silence), in
    /// −dBov; values above 127 count as 127. Otherwise as [`MixMinus::add`].
    pub fn add_with_audio_level(&mut self, id: Id, samples: &[i16], audio_level: u8) {
        let level = -f32::from(audio_level.min(127));
        self.add_at_level(id, samples, level);
    }

    fn add_at_level(&mut self, id: Id, samples: &[i16], level: f32) {
        if samples.len() != self.frame_len {
            self.mismatched += 1;
        }
        let slot = match self.contributions.iter().position(|c| c.id == id) {
            Some(slot) => {
                self.contributions[slot].level = level;
                slot
            }
            None => {
                self.contributions.push(Contribution { id, level });
                self.contributions.len() - 1
            }
        };
        let end = (slot + 1) * self.frame_len;
        if self.samples.len() < end {
            self.samples.resize(end, 0);
        }
        let frame = &mut self.samples[slot * self.frame_len..end];
        let used = samples.len().min(self.frame_len);
        frame[..used].copy_from_slice(&samples[..used]);
        frame[used..].fill(0);
        self.chosen.clear();
    }

    /// The participants `listener` hears in the current period, loudest
    /// first: the up to `max_speakers` loudest others that are not silent.
    pub fn heard_by(&mut self, listener: &Id) -> impl Iterator<Item = &Id> + '_ {
        self.select(listener);
        self.chosen.iter().map(|&i| &self.contributions[i].id)
    }

    /// The frame `listener` hears in the current period: [`MixMinus::frame_len`]
    /// samples, silence when nobody else speaks. The listener need not have a
    /// frame of its own (a phone that is muted still hears the room).
    pub fn mix_for(&mut self, listener: &Id) -> &[i16] {
        self.select(listener);
        self.sum.fill(0);
        for &i in &self.chosen {
            let frame = &self.samples[i * self.frame_len..][..self.frame_len];
            for (acc, &s) in self.sum.iter_mut().zip(frame) {
                *acc += i32::from(s);
            }
        }
        let limit = self.config.limit;
        for (out, &acc) in self.out.iter_mut().zip(&self.sum) {
            *out = limit_sample(limit, acc);
        }
        &self.out
    }

    /// Fills `chosen` with the indices of the loudest others, loudest first.
    fn select(&mut self, listener: &Id) {
        self.chosen.clear();
        let max = self.config.max_speakers;
        if max == 0 {
            return;
        }
        for (i, c) in self.contributions.iter().enumerate() {
            if c.id == *listener || c.level <= FLOOR_DBOV {
                continue;
            }
            // Insertion into a short sorted list; equal levels keep add order.
            let at = self
                .chosen
                .iter()
                .position(|&j| self.contributions[j].level < c.level)
                .unwrap_or(self.chosen.len());
            if at < max {
                if self.chosen.len() == max {
                    self.chosen.pop();
                }
                self.chosen.insert(at, i);
            }
        }
    }
}

/// The RMS level of a frame in dBov (a full-scale square wave is 0 dBov, a
/// full-scale sine −3 dBov), floored at −127; an empty frame is at the floor.
pub fn rms_dbov(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return FLOOR_DBOV;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let mean_square = energy / samples.len() as f64;
    if mean_square <= 0.0 {
        return FLOOR_DBOV;
    }
    let full_scale = 32_768.0f64 * 32_768.0;
    let db = 10.0 * (mean_square / full_scale).log10();
    (db as f32).max(FLOOR_DBOV)
}

/// One summed sample brought into `i16`.
fn limit_sample(limit: Limit, acc: i32) -> i16 {
    match limit {
        Limit::Saturate => acc.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16,
        Limit::Soft => {
            let magnitude = (acc as f32).abs();
            if magnitude <= SOFT_KNEE {
                return acc as i16;
            }
            let headroom = f32::from(i16::MAX) - SOFT_KNEE;
            let bent = SOFT_KNEE + headroom * ((magnitude - SOFT_KNEE) / headroom).tanh();
            // `bent` < 32 767, so the cast cannot saturate.
            let bent = bent.min(f32::from(i16::MAX)) as i16;
            if acc < 0 {
                -bent
            } else {
                bent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustfft::num_complex::Complex;
    use rustfft::FftPlanner;
    use std::f64::consts::PI;

    const RATE: u32 = 8_000;
    /// One second of 20 ms frames: a 1 Hz FFT bin at 8 kHz.
    const FRAMES: usize = 50;

    /// Frame `n` of a sine of `freq` Hz and peak `amplitude`.
    fn tone_frame(freq: f64, amplitude: f64, n: usize, len: usize) -> Vec<i16> {
        (0..len)
            .map(|k| {
                let t = (n * len + k) as f64 / f64::from(RATE);
                (amplitude * (2.0 * PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// Mixes one second of the given tones (id = index) for `listener` and
    /// returns the magnitude spectrum, one bin per Hz, scaled to the peak
    /// amplitude of a sine.
    fn spectrum_heard(config: MixConfig, tones: &[(f64, f64)], listener: usize) -> Vec<f64> {
        let mut mixer = MixMinus::new(config);
        let len = mixer.frame_len();
        let mut heard = Vec::with_capacity(FRAMES * len);
        for n in 0..FRAMES {
            mixer.begin_frame();
            for (id, &(freq, amplitude)) in tones.iter().enumerate() {
                mixer.add(id, &tone_frame(freq, amplitude, n, len));
            }
            heard.extend_from_slice(mixer.mix_for(&listener));
        }
        let mut buffer: Vec<Complex<f64>> = heard
            .iter()
            .map(|&s| Complex::new(f64::from(s), 0.0))
            .collect();
        FftPlanner::new()
            .plan_fft_forward(buffer.len())
            .process(&mut buffer);
        let scale = 2.0 / buffer.len() as f64;
        buffer[..buffer.len() / 2]
            .iter()
            .map(|c| c.norm() * scale)
            .collect()
    }

    /// The largest magnitude within ±5 Hz of `freq`.
    fn around(spectrum: &[f64], freq: usize) -> f64 {
        spectrum[freq - 5..=freq + 5]
            .iter()
            .fold(0.0f64, |a, &b| a.max(b))
    }

    #[test]
    fn listener_hears_the_others_and_not_itself() {
        let tones = [(440.0, 8_000.0), (660.0, 6_000.0), (880.0, 4_000.0)];
        let config = MixConfig {
            sample_rate: RATE,
            ..MixConfig::default()
        };
        let spectrum = spectrum_heard(config, &tones, 1);
        assert!((around(&spectrum, 440) - 8_000.0).abs() < 40.0);
        assert!((around(&spectrum, 880) - 4_000.0).abs() < 40.0);
        assert!(around(&spectrum, 660) < 5.0, "{}", around(&spectrum, 660));
    }

    #[test]
    fn only_the_loudest_three_others_are_mixed() {
        let tones = [
            (300.0, 1_000.0),
            (500.0, 2_000.0),
            (700.0, 3_000.0),
            (900.0, 4_000.0),
            (1_100.0, 5_000.0),
        ];
        let config = MixConfig {
            sample_rate: RATE,
            ..MixConfig::default()
        };
        // Someone outside the room hears the three loudest.
        let spectrum = spectrum_heard(config.clone(), &tones, 99);
        for (freq, amplitude) in [(700, 3_000.0), (900, 4_000.0), (1_100, 5_000.0)] {
            assert!((around(&spectrum, freq) - amplitude).abs() < 40.0, "{freq}");
        }
        for freq in [300, 500] {
            assert!(around(&spectrum, freq) < 5.0, "{freq} should be left out");
        }
        // The loudest speaker hears the next three, the 500 Hz one included.
        let spectrum = spectrum_heard(config, &tones, 4);
        for freq in [500, 700, 900] {
            assert!(around(&spectrum, freq) > 1_000.0, "{freq}");
        }
        for freq in [300, 1_100] {
            assert!(around(&spectrum, freq) < 5.0, "{freq} should be left out");
        }
    }

    #[test]
    fn heard_by_is_ordered_and_honours_declared_levels() {
        let mut mixer = MixMinus::new(MixConfig::default());
        let len = mixer.frame_len();
        assert_eq!(len, 160);
        mixer.begin_frame();
        mixer.add("quiet", &vec![100; len]);
        mixer.add("loud", &vec![10_000; len]);
        // Quiet samples but a loud declared level (-15 dBov; "loud" is at
        // -10.3, "quiet" at -50.3) rank by the level.
        mixer.add_with_audio_level("declared", &vec![1; len], 15);
        mixer.add("silent", &vec![0; len]);
        mixer.add("me", &vec![20_000; len]);
        let heard: Vec<_> = mixer.heard_by(&"me").copied().collect();
        assert_eq!(heard, ["loud", "declared", "quiet"]);
        // Digital silence is never picked, even with room to spare.
        let mut mixer = MixMinus::new(MixConfig {
            max_speakers: 10,
            ..MixConfig::default()
        });
        mixer.begin_frame();
        mixer.add("silent", &vec![0; len]);
        mixer.add("a", &vec![5; len]);
        assert_eq!(mixer.heard_by(&"me").copied().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn silence_when_nobody_else_speaks() {
        let mut mixer = MixMinus::new(MixConfig::default());
        let len = mixer.frame_len();
        mixer.begin_frame();
        assert_eq!(mixer.mix_for(&1), vec![0; len].as_slice());
        mixer.add(1, &vec![12_345; len]);
        assert_eq!(mixer.mix_for(&1), vec![0; len].as_slice());
        assert_eq!(mixer.mix_for(&2), vec![12_345; len].as_slice());
        // The next period forgets the previous one.
        mixer.begin_frame();
        assert_eq!(mixer.participants(), 0);
        assert_eq!(mixer.mix_for(&2), vec![0; len].as_slice());
    }

    #[test]
    fn short_long_and_repeated_frames() {
        let mut mixer = MixMinus::new(MixConfig::default());
        let len = mixer.frame_len();
        mixer.begin_frame();
        mixer.add(1, &[1_000; 10]);
        mixer.add(2, &vec![7; len + 5]);
        assert_eq!(mixer.mismatched_frames(), 2);
        let out = mixer.mix_for(&0);
        assert_eq!(out.len(), len);
        assert_eq!(out[..10], [1_007; 10]);
        assert_eq!(out[10..], vec![7; len - 10][..]);
        // A second frame of participant 1 replaces its first.
        mixer.add(1, &vec![-3; len]);
        assert_eq!(mixer.participants(), 2);
        assert_eq!(mixer.mix_for(&0), vec![4; len].as_slice());
        // A short frame in a later period is padded with silence, not with
        // what its reused buffer held before.
        mixer.begin_frame();
        mixer.add(2, &[5; 10]);
        let out = mixer.mix_for(&0);
        assert_eq!(out[..10], [5; 10]);
        assert!(out[10..].iter().all(|&s| s == 0));
    }

    #[test]
    fn loud_sums_saturate_instead_of_wrapping() {
        let mut mixer = MixMinus::new(MixConfig::default());
        let len = mixer.frame_len();
        mixer.begin_frame();
        mixer.add(1, &tone_frame(100.0, 30_000.0, 0, len));
        mixer.add(2, &tone_frame(100.0, 30_000.0, 0, len));
        mixer.add(3, &tone_frame(100.0, 30_000.0, 0, len));
        let expected: Vec<i16> = tone_frame(100.0, 30_000.0, 0, len)
            .iter()
            .map(|&s| (3 * i32::from(s)).clamp(-32_768, 32_767) as i16)
            .collect();
        let out = mixer.mix_for(&0);
        assert_eq!(out, expected.as_slice());
        assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
    }

    #[test]
    fn soft_limit_bends_loud_sums_and_keeps_quiet_ones() {
        let config = MixConfig {
            limit: Limit::Soft,
            ..MixConfig::default()
        };
        let mut mixer = MixMinus::new(config);
        let len = mixer.frame_len();
        mixer.begin_frame();
        mixer.add(1, &vec![20_000; len]);
        mixer.add(2, &vec![20_000; len]);
        let loud = mixer.mix_for(&0)[0];
        assert!(loud > 30_000 && loud < i16::MAX, "{loud}");
        assert_eq!(mixer.mix_for(&1)[0], 20_000, "below the knee: unchanged");
        // Monotonic and odd over the whole range of sums of three.
        let mut previous = i16::MIN;
        for acc in (-98_304..=98_301).step_by(3) {
            let y = limit_sample(Limit::Soft, acc);
            assert!(y >= previous, "{acc}");
            assert_eq!(limit_sample(Limit::Soft, -acc), -y);
            previous = y;
        }
    }

    #[test]
    fn rms_levels() {
        assert_eq!(rms_dbov(&[]), -127.0);
        assert_eq!(rms_dbov(&[0; 160]), -127.0);
        assert!(rms_dbov(&[i16::MIN; 160]).abs() < 0.01);
        let sine = tone_frame(400.0, 32_767.0, 0, 160);
        assert!((rms_dbov(&sine) + 3.01).abs() < 0.05, "{}", rms_dbov(&sine));
        assert!((rms_dbov(&[3_277; 160]) + 20.0).abs() < 0.01);
    }

    #[test]
    fn rate_and_speaker_count_are_parameters() {
        let mixer: MixMinus<u32> = MixMinus::new(MixConfig {
            sample_rate: 48_000,
            max_speakers: 1_000,
            limit: Limit::Saturate,
        });
        assert_eq!(mixer.frame_len(), 960);
        assert_eq!(mixer.config().max_speakers, MAX_SPEAKERS);
        let mut mixer = MixMinus::new(MixConfig {
            max_speakers: 0,
            ..MixConfig::default()
        });
        mixer.begin_frame();
        mixer.add(1, &[1_000; 160]);
        assert_eq!(mixer.mix_for(&2), [0; 160].as_slice());
    }
}
