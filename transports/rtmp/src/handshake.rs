//! The server side of the RTMP handshake (RTMP 1.0 §5.2).
//!
//! The client sends C0 (version 3) and C1 (1536 bytes); the server answers
//! S0, S1 and S2 (an echo of C1) at once; the client's C2 (1536 bytes)
//! completes it. S1 carries zeros where the "complex" (Flash digest)
//! handshake would put a version, so every client (ffmpeg, OBS/librtmp,
//! GStreamer) falls back to this simple one: corecast does not implement the
//! digest scheme, which protects nothing and is documented nowhere official.

/// The protocol version in C0/S0.
pub const VERSION: u8 = 3;
/// C1, S1, C2 and S2 are this long.
pub const PACKET: usize = 1536;

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for C0 and C1.
    Hello,
    /// S0-S2 sent; waiting for C2.
    Ack,
    Done,
}

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0 asked for another version (6 is RTMPE, encrypted RTMP).
    Version(u8),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Version(v) => write!(f, "RTMP version {v} not supported (only 3)"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The server's handshake state.
#[derive(Debug)]
pub struct Handshake {
    stage: Stage,
    buf: Vec<u8>,
    /// S1's random bytes (1528), from the caller.
    random: Vec<u8>,
}

impl Handshake {
    /// `random` fills S1 (1528 bytes are used; fewer are repeated).
    pub fn new(random: &[u8]) -> Handshake {
        let random = if random.is_empty() {
            vec![0; PACKET - 8]
        } else {
            random.iter().copied().cycle().take(PACKET - 8).collect()
        };
        Handshake {
            stage: Stage::Hello,
            buf: Vec::new(),
            random,
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes the bytes the handshake needs from `input` and appends what to
    /// send to `out`. Returns how many bytes of `input` it used: the rest
    /// (once [`Handshake::is_done`]) is the chunk stream.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HandshakeError> {
        let mut used = 0;
        loop {
            let need = match self.stage {
                Stage::Hello => 1 + PACKET,
                Stage::Ack => PACKET,
                Stage::Done => return Ok(used),
            };
            let take = (need - self.buf.len()).min(input.len() - used);
            self.buf.extend_from_slice(&input[used..used + take]);
            used += take;
            if self.buf.len() < need {
                return Ok(used);
            }
            match self.stage {
                Stage::Hello => {
                    if self.buf[0] != VERSION {
                        return Err(HandshakeError::Version(self.buf[0]));
                    }
                    out.push(VERSION);
                    // S1: time 0, zeros (simple handshake), random.
                    out.extend_from_slice(&[0; 8]);
                    out.extend_from_slice(&self.random);
                    // S2: C1 echoed.
                    out.extend_from_slice(&self.buf[1..]);
                    self.stage = Stage::Ack;
                }
                Stage::Ack | Stage::Done => self.stage = Stage::Done,
            }
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1() -> Vec<u8> {
        let mut c = vec![VERSION];
        c.extend((0..PACKET).map(|i| i as u8));
        c
    }

    #[test]
    fn answers_c1_with_s0_s1_s2_and_completes_on_c2() {
        let mut h = Handshake::new(&[9]);
        let mut out = Vec::new();
        let c = c0c1();
        // Byte by byte.
        for b in &c {
            assert_eq!(h.push(std::slice::from_ref(b), &mut out), Ok(1));
        }
        assert_eq!(out.len(), 1 + 2 * PACKET);
        assert_eq!(out[0], VERSION);
        assert_eq!(&out[1..9], &[0; 8]);
        assert_eq!(&out[1 + PACKET..], &c[1..], "S2 echoes C1");
        assert!(!h.is_done());
        // C2 and the first chunk bytes in one read.
        let mut rest = vec![0u8; PACKET];
        rest.extend_from_slice(&[1, 2, 3]);
        let used = h.push(&rest, &mut out).unwrap();
        assert_eq!(used, PACKET);
        assert!(h.is_done());
        assert_eq!(out.len(), 1 + 2 * PACKET);
    }

    #[test]
    fn everything_at_once_and_other_versions() {
        let mut h = Handshake::new(&[]);
        let mut all = c0c1();
        all.extend_from_slice(&[0; PACKET]);
        all.push(0x42);
        let mut out = Vec::new();
        assert_eq!(h.push(&all, &mut out), Ok(all.len() - 1));
        assert!(h.is_done());
        let mut h = Handshake::new(&[]);
        assert_eq!(h.push(&[6, 0, 0], &mut out), Ok(3));
        let mut c = vec![6];
        c.extend_from_slice(&[0; PACKET]);
        let mut h = Handshake::new(&[]);
        assert_eq!(h.push(&c, &mut out), Err(HandshakeError::Version(6)));
    }
}
