//! Deterministic inputs for the in-CI twins of the libFuzzer targets.
//!
//! Every fuzz target calls one harness function (in its crate's
//! `fuzz/harness.rs`), and a normal `#[test]` calls the same function through
//! [`run`] with a few hundred thousand inputs: each seed as is and cut to
//! every length, stacked mutations of the seeds (bit flips, byte and length
//! overwrites, insertions, deletions, duplicated ranges, splices of two
//! seeds) and random bytes. The generator is seeded, so a failure repeats;
//! the input that failed is printed before the panic goes on.
//!
//! No dependencies, no clock: it builds in a moment in every profile.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// A small, fast, seeded generator (SplitMix64). Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// What kind of bytes the generator makes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// Any byte.
    Binary,
    /// Printable ASCII, space, tab, CR and LF: for text parsers, which
    /// refuse most random binary before they parse anything.
    Text,
}

/// Byte values that parsers treat specially: zero, one, sign and top bits.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x3a, 0x0d, 0x0a];

/// Generates inputs from seeds; see [`run`].
#[derive(Debug, Clone)]
pub struct Inputs {
    rng: Rng,
    seeds: Vec<Vec<u8>>,
    alphabet: Alphabet,
    max_len: usize,
}

impl Inputs {
    pub fn new(seed: u64, seeds: &[&[u8]], alphabet: Alphabet, max_len: usize) -> Inputs {
        Inputs {
            rng: Rng::new(seed),
            seeds: seeds.iter().map(|s| s.to_vec()).collect(),
            alphabet,
            max_len: max_len.max(1),
        }
    }

    fn made_up(&mut self) -> u8 {
        match self.alphabet {
            Alphabet::Binary => self.rng.byte(),
            Alphabet::Text => match self.rng.below(20) {
                0 => b'\r',
                1 => b'\n',
                2 => b'\t',
                _ => 0x20 + self.rng.below(0x5f) as u8,
            },
        }
    }

    /// Random bytes of a random length up to the maximum.
    pub fn random(&mut self, out: &mut Vec<u8>) {
        out.clear();
        let len = self.rng.below(self.max_len + 1);
        for _ in 0..len {
            let b = self.made_up();
            out.push(b);
        }
    }

    /// One to four stacked mutations of a random seed.
    pub fn mutated(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if self.seeds.is_empty() {
            return self.random(out);
        }
        let i = self.rng.below(self.seeds.len());
        out.extend_from_slice(&self.seeds[i]);
        for _ in 0..1 + self.rng.below(4) {
            self.mutate(out);
        }
        out.truncate(self.max_len.max(self.seeds[i].len()) * 2);
    }

    fn mutate(&mut self, d: &mut Vec<u8>) {
        let len = d.len();
        let at = self.rng.below(len);
        match self.rng.below(10) {
            0 if len > 0 => d[at] ^= 1 << self.rng.below(8),
            1 if len > 0 => d[at] = self.made_up(),
            2 if len > 0 => d[at] = INTERESTING[self.rng.below(INTERESTING.len())],
            3 => d.truncate(self.rng.below(len + 1)),
            4 => {
                let at = self.rng.below(len + 1);
                let n = 1 + self.rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| self.made_up()).collect();
                d.splice(at..at, junk);
            }
            5 if len > 0 => {
                let end = (at + 1 + self.rng.below(16)).min(len);
                d.drain(at..end);
            }
            6 if len > 0 => {
                let end = (at + 1 + self.rng.below(32)).min(len);
                let copy = d[at..end].to_vec();
                let to = self.rng.below(len + 1);
                d.splice(to..to, copy);
            }
            7 => {
                let other = &self.seeds[self.rng.below(self.seeds.len())];
                let from = self.rng.below(other.len() + 1);
                d.truncate(self.rng.below(len + 1));
                d.extend_from_slice(&other[from..]);
            }
            8 if len > 1 => {
                // A 16-bit big-endian length or count set to an edge value.
                let at = at.min(len - 2);
                let v: u16 = match self.rng.below(4) {
                    0 => 0,
                    1 => 0xffff,
                    2 => len as u16,
                    _ => (len - at) as u16,
                };
                d[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                let n = 1 + self.rng.below(8);
                for _ in 0..n {
                    let b = self.made_up();
                    d.push(b);
                }
            }
        }
    }
}

/// Calls `check` with `count` inputs (at least each seed cut to every
/// length): first the seeds and all their prefixes, then three mutated seeds
/// for each random input. `seed` fixes the sequence.
///
/// If `check` panics, the input and its number are printed to stderr and the
/// panic continues, so that the test fails with the input to replay.
pub fn run(
    seed: u64,
    seeds: &[&[u8]],
    alphabet: Alphabet,
    max_len: usize,
    count: usize,
    mut check: impl FnMut(&[u8]),
) -> usize {
    let mut inputs = Inputs::new(seed, seeds, alphabet, max_len);
    let mut done = 0usize;
    let mut one = |n: usize, data: &[u8]| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(data))) {
            eprintln!("input {n} (seed {seed:#x}) failed: {data:02x?}");
            if let Ok(text) = std::str::from_utf8(data) {
                eprintln!("as text: {text:?}");
            }
            resume_unwind(panic);
        }
    };
    for s in seeds {
        for len in 0..=s.len() {
            one(done, &s[..len]);
            done += 1;
        }
    }
    let mut buf = Vec::new();
    while done < count {
        if inputs.rng.below(4) == 0 {
            inputs.random(&mut buf);
        } else {
            inputs.mutated(&mut buf);
        }
        one(done, &buf);
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        run(7, &[b"abc", b"hello"], Alphabet::Binary, 64, 1000, |d| {
            a.push(d.to_vec())
        });
        run(7, &[b"abc", b"hello"], Alphabet::Binary, 64, 1000, |d| {
            b.push(d.to_vec())
        });
        assert_eq!(a, b);
        assert_eq!(a.len(), 1000);
        assert_eq!(&a[..4], &[&b""[..], b"a", b"ab", b"abc"]);
        assert!(a.iter().any(|d| d.len() > 5));
    }

    #[test]
    fn text_inputs_made_up_are_printable() {
        let mut inputs = Inputs::new(1, &[], Alphabet::Text, 100);
        let mut buf = Vec::new();
        for _ in 0..100 {
            inputs.random(&mut buf);
            assert!(std::str::from_utf8(&buf).is_ok());
        }
    }
}
