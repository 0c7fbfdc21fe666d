//! SIP digest authentication, the registrar/UAS side (RFC 3261 §22 on top
//! of RFC 2617; SHA-256 from RFC 7616 as RFC 8760 brings it to SIP).
//!
//! The flow: a REGISTER or INVITE without credentials is answered 401 (407
//! from a proxy) with [`Authenticator::challenge`] as the `WWW-Authenticate`
//! (`Proxy-Authenticate`) value; the phone repeats the request with an
//! `Authorization` (`Proxy-Authorization`) header, which
//! [`Credentials::parse`] reads and [`Authenticator::verify`] checks against
//! the user's [`Ha1`] (or [`Authenticator::verify_header`] does both, looking
//! the user up through a closure).
//!
//! Nonces are stateless: a nonce is the issue time (Unix seconds), 8 bytes
//! the caller supplies at random, and an HMAC-SHA-256 over both and the
//! realm with the server secret, truncated to 128 bits and encoded in
//! base64url (40 characters). Any node holding the secret verifies any
//! node's nonce; their wall clocks must agree to within a few seconds.
//! The crate reads no clock: an [`Authenticator`] is given one anchor, an
//! [`Instant`] and the Unix time read by the caller at that instant, and
//! converts later `Instant`s from it.
//!
//! Replay: within its lifetime a nonce, with its `nc`, can be presented
//! again. Tracking the highest `nc` seen per nonce (RFC 2617 §3.2.2) needs
//! state and is left to the caller ([`Credentials::nonce_count`] gives the
//! value); the response still binds the method and the request URI, so a
//! captured `Authorization` only replays the same request.
//!
//! Not supported: the `-sess` algorithms, SHA-512-256, `qop=auth-int`,
//! `userhash` and `username*` (RFC 7616): such credentials parse as errors.

use std::fmt;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// How long a nonce stays valid unless configured otherwise.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// The shortest server secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest `Authorization` value read; longer ones are malformed.
pub const MAX_HEADER_LEN: usize = 4096;

/// Bytes of a decoded nonce: issue time (6), random (8), MAC (16).
const NONCE_BYTES: usize = 30;
const MAC_BYTES: usize = 16;
/// How far in the future a nonce's issue time may lie (another node's
/// clock running ahead) before the nonce counts as stale.
const MAX_CLOCK_SKEW_SECS: u64 = 30;

/// The hash behind HA1, HA2 and the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617), what every phone speaks.
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token in `algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Reads an `algorithm=` token (case-insensitive); `None` for the ones
    /// not supported.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        if name.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of a digest in lowercase hex.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }

    /// The lowercase hex digest of `parts` joined with `:`.
    fn hash_hex(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => {
                let mut ctx = md5::Context::new();
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        ctx.consume(b":");
                    }
                    ctx.consume(part);
                }
                hex(&ctx.compute().0)
            }
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        h.update(b":");
                    }
                    h.update(part);
                }
                hex(&h.finalize())
            }
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user's HA1, `H(username:realm:password)` in lowercase hex: what a
/// user table stores instead of the password. It is password-equivalent
/// for this realm, so `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Ha1 {
    algorithm: Algorithm,
    hex: String,
}

impl Ha1 {
    /// Computes HA1 from a password.
    pub fn from_password(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> Ha1 {
        Ha1 {
            algorithm,
            hex: algorithm.hash_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]),
        }
    }

    /// Takes a stored HA1 in hex (either case); `None` unless it is hex of
    /// the algorithm's length.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Option<Ha1> {
        let hex = hex.trim();
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Ha1 {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The algorithm it was computed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex value.
    pub fn as_hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Debug for Ha1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ha1")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The `response` a client computes (RFC 2617 §3.2.2.1), lowercase hex.
/// With `qop = Some((nc, cnonce))` it is `H(HA1:nonce:nc:cnonce:auth:HA2)`,
/// without qop (RFC 2069) `H(HA1:nonce:HA2)`; `HA2 = H(method:uri)`.
pub fn response(
    ha1: &Ha1,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let alg = ha1.algorithm;
    let ha2 = alg.hash_hex(&[method.as_bytes(), uri.as_bytes()]);
    match qop {
        Some((nc, cnonce)) => alg.hash_hex(&[
            ha1.hex.as_bytes(),
            nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]),
        None => alg.hash_hex(&[ha1.hex.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Why an `Authorization` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("authorization header too long")]
    TooLong,
    /// Another scheme than `Digest`.
    #[error("not a Digest authorization")]
    NotDigest,
    /// Bad syntax: an unterminated quote, a parameter without `=`, …
    #[error("authorization syntax error")]
    Syntax,
    /// A parameter given twice.
    #[error("parameter {0} given twice")]
    Duplicate(&'static str),
    /// A required parameter is missing.
    #[error("parameter {0} missing")]
    Missing(&'static str),
    /// A parameter's value is out of its form (`nc` not 8 hex digits, a
    /// `response` of the wrong length).
    #[error("parameter {0} invalid")]
    Invalid(&'static str),
    /// A feature this server does not implement (an algorithm, a qop,
    /// `userhash`).
    #[error("{0} not supported")]
    Unsupported(&'static str),
}

/// A parsed `Authorization` / `Proxy-Authorization` value. Every field
/// is already checked for form: `response` is lowercase hex of the
/// algorithm's length, `nc` and `cnonce` are there exactly when `qop` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`, unescaped.
    pub username: String,
    /// `realm`, unescaped.
    pub realm: String,
    /// `nonce` as sent.
    pub nonce: String,
    /// `uri`, the digest-uri the response covers.
    pub uri: String,
    /// `response`, lowercased.
    pub response: String,
    /// `algorithm`; MD5 when absent.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` was used (false: RFC 2069 style).
    pub qop: bool,
    /// `nc`, as sent (8 hex digits), with qop.
    pub nc: Option<String>,
    /// `cnonce`, with qop.
    pub cnonce: Option<String>,
    /// `opaque`, if any (this server sends none).
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses a header value such as `Digest username="bob", realm="…", …`.
    /// The scheme and parameter names are case-insensitive, values may be
    /// tokens or quoted strings (with `\` escapes), whitespace and empty
    /// list elements around commas are tolerated, unknown parameters are
    /// ignored. Never panics, whatever the input.
    pub fn parse(value: &str) -> Result<Credentials, ParseError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(ParseError::TooLong);
        }
        let mut cur = Cursor {
            s: value.as_bytes(),
            i: 0,
        };
        cur.skip_ws();
        let scheme = cur.token();
        if !scheme.eq_ignore_ascii_case(b"Digest") {
            return Err(ParseError::NotDigest);
        }
        if !cur.at_end() && !cur.skip_ws() {
            // "Digestfoo" or "Digest," : the scheme must end in whitespace.
            return Err(ParseError::NotDigest);
        }

        let mut raw = RawParams::default();
        loop {
            while cur.skip_ws() || cur.eat(b',') {}
            if cur.at_end() {
                break;
            }
            let name = cur.token();
            if name.is_empty() {
                return Err(ParseError::Syntax);
            }
            cur.skip_ws();
            if !cur.eat(b'=') {
                return Err(ParseError::Syntax);
            }
            cur.skip_ws();
            let value = cur.value()?;
            raw.set(name, value)?;
            cur.skip_ws();
            if !cur.at_end() && !cur.eat(b',') {
                return Err(ParseError::Syntax);
            }
        }
        raw.finish()
    }

    /// `nc` as a number, for a caller that tracks replays.
    pub fn nonce_count(&self) -> Option<u32> {
        self.nc
            .as_deref()
            .and_then(|nc| u32::from_str_radix(nc, 16).ok())
    }
}

/// The parameters seen so far, before their checks.
#[derive(Default)]
struct RawParams {
    username: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    userhash: Option<String>,
}

impl RawParams {
    fn set(&mut self, name: &[u8], value: String) -> Result<(), ParseError> {
        let lower = name.to_ascii_lowercase();
        let (slot, label) = match lower.as_slice() {
            b"username" => (&mut self.username, "username"),
            b"realm" => (&mut self.realm, "realm"),
            b"nonce" => (&mut self.nonce, "nonce"),
            b"uri" => (&mut self.uri, "uri"),
            b"response" => (&mut self.response, "response"),
            b"algorithm" => (&mut self.algorithm, "algorithm"),
            b"qop" => (&mut self.qop, "qop"),
            b"nc" => (&mut self.nc, "nc"),
            b"cnonce" => (&mut self.cnonce, "cnonce"),
            b"opaque" => (&mut self.opaque, "opaque"),
            b"userhash" => (&mut self.userhash, "userhash"),
            b"username*" => return Err(ParseError::Unsupported("username*")),
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(ParseError::Duplicate(label));
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<Credentials, ParseError> {
        if self
            .userhash
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case("true"))
        {
            return Err(ParseError::Unsupported("userhash"));
        }
        let algorithm = match self.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(name) => Algorithm::from_name(name).ok_or(ParseError::Unsupported("algorithm"))?,
        };
        let qop = match self.qop.as_deref() {
            None => false,
            Some(q) if q.eq_ignore_ascii_case("auth") => true,
            Some(_) => return Err(ParseError::Unsupported("qop")),
        };
        let username = self.username.ok_or(ParseError::Missing("username"))?;
        let realm = self.realm.ok_or(ParseError::Missing("realm"))?;
        let nonce = self.nonce.ok_or(ParseError::Missing("nonce"))?;
        let uri = self.uri.ok_or(ParseError::Missing("uri"))?;
        let response = self.response.ok_or(ParseError::Missing("response"))?;
        if response.len() != algorithm.hex_len() || !response.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ParseError::Invalid("response"));
        }
        let (nc, cnonce) = if qop {
            let nc = self.nc.ok_or(ParseError::Missing("nc"))?;
            if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::Invalid("nc"));
            }
            let cnonce = self.cnonce.ok_or(ParseError::Missing("cnonce"))?;
            if cnonce.is_empty() {
                return Err(ParseError::Invalid("cnonce"));
            }
            (Some(nc), Some(cnonce))
        } else {
            // RFC 2617 §3.2.2: without qop, nc and cnonce must not be
            // sent; ignore them if they are.
            (None, None)
        };
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response: response.to_ascii_lowercase(),
            algorithm,
            qop,
            nc,
            cnonce,
            opaque: self.opaque,
        })
    }
}

/// A byte cursor over a header value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    /// Skips spaces, tabs and line breaks (folded headers); true if any.
    fn skip_ws(&mut self) -> bool {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            self.i += 1;
        }
        self.i > start
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// An RFC 3261 token (plus `*` for `username*`), possibly empty.
    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| is_token_char(b)) {
            self.i += 1;
        }
        self.s.get(start..self.i).unwrap_or_default()
    }

    /// A token or a quoted string, unescaped.
    fn value(&mut self) -> Result<String, ParseError> {
        if !self.eat(b'"') {
            let token = self.token();
            if token.is_empty() {
                return Err(ParseError::Syntax);
            }
            return String::from_utf8(token.to_vec()).map_err(|_| ParseError::Syntax);
        }
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i).copied() {
                None => return Err(ParseError::Syntax),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    // quoted-pair: the next byte stands for itself. A
                    // multi-byte character's later bytes follow as
                    // ordinary bytes, so the result stays UTF-8.
                    let next = self.s.get(self.i + 1).copied().ok_or(ParseError::Syntax)?;
                    if matches!(next, b'\r' | b'\n') {
                        return Err(ParseError::Syntax);
                    }
                    out.push(next);
                    self.i += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| ParseError::Syntax)
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~' | b'/' | b':'
        )
}

/// What [`Authenticator::verify`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The credentials are good; the authenticated username.
    Ok(String),
    /// The response was right but the nonce has expired (or lies too far
    /// in the future): challenge again with `stale = true`, the phone
    /// retries without asking for the password. Not a failure.
    Stale,
    /// Bad credentials: a wrong response, a nonce this server did not
    /// issue (another secret, altered), another realm, another request
    /// URI, or an unknown user. Answer 401/407 with a fresh challenge and
    /// count a failure (see [`crate::limits`]).
    Wrong,
    /// The header could not be read, or uses what this server does not
    /// support (or RFC 2069 style when that is turned off): answer 400.
    Malformed,
}

/// Why an [`Authenticator`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("digest secret shorter than {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    /// The realm is empty or holds control characters.
    #[error("digest realm empty or with control characters")]
    BadRealm,
}

/// What an [`Authenticator`] is built from.
#[derive(Clone)]
pub struct DigestConfig {
    /// The realm in challenges; credentials for another realm are wrong.
    pub realm: String,
    /// The key of the nonce MAC, shared by every node of the realm; at
    /// least [`MIN_SECRET_LEN`] random bytes.
    pub secret: Vec<u8>,
    /// How long a nonce is accepted after it was issued; afterwards the
    /// client is re-challenged with `stale=true`. Default 5 minutes.
    pub nonce_lifetime: Duration,
    /// Whether responses without qop (RFC 2069) are accepted. Default
    /// true: old phones still answer that way. Challenges always offer
    /// `qop="auth"`.
    pub allow_rfc2069: bool,
}

impl DigestConfig {
    /// A configuration whose nonce key is derived from a secret the nodes
    /// of a cluster share already (any length): SHA-256 of a label and the
    /// secret, so that the nonce key is not the cluster key itself.
    pub fn from_shared_secret(realm: impl Into<String>, shared: &[u8]) -> DigestConfig {
        let mut h = Sha256::new();
        h.update(b"corecast sip digest nonce key\0");
        h.update(shared);
        DigestConfig::new(realm, h.finalize().to_vec())
    }

    /// A configuration with the defaults.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>) -> DigestConfig {
        DigestConfig {
            realm: realm.into(),
            secret: secret.into(),
            nonce_lifetime: DEFAULT_NONCE_LIFETIME,
            allow_rfc2069: true,
        }
    }
}

impl fmt::Debug for DigestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestConfig")
            .field("realm", &self.realm)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("allow_rfc2069", &self.allow_rfc2069)
            .finish_non_exhaustive()
    }
}

/// Issues challenges and checks credentials for one realm. Holds no
/// per-client state.
#[derive(Debug, Clone)]
pub struct Authenticator {
    config: DigestConfig,
    anchor: Instant,
    anchor_unix: Duration,
}

impl Authenticator {
    /// `anchor_unix` is the wall-clock time since the Unix epoch at
    /// `anchor`, read once by the caller; nonces carry wall-clock seconds
    /// so that other nodes can check them.
    pub fn new(
        config: DigestConfig,
        anchor: Instant,
        anchor_unix: Duration,
    ) -> Result<Authenticator, ConfigError> {
        if config.secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::ShortSecret);
        }
        if config.realm.is_empty() || config.realm.chars().any(char::is_control) {
            return Err(ConfigError::BadRealm);
        }
        Ok(Authenticator {
            config,
            anchor,
            anchor_unix,
        })
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.config.realm
    }

    /// Unix seconds at `now`.
    fn unix_secs(&self, now: Instant) -> u64 {
        let unix = match now.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_unix.saturating_add(after),
            None => self
                .anchor_unix
                .saturating_sub(self.anchor.saturating_duration_since(now)),
        };
        unix.as_secs()
    }

    fn mac(&self, issued: &[u8], random: &[u8]) -> [u8; 32] {
        hmac_sha256(
            &self.config.secret,
            &[issued, random, self.config.realm.as_bytes()],
        )
    }

    /// A fresh nonce; `random` should come from a CSPRNG (it makes two
    /// nonces of one second differ).
    pub fn nonce(&self, now: Instant, random: u64) -> String {
        let secs = self.unix_secs(now).to_be_bytes();
        let issued = &secs[2..];
        let random = random.to_be_bytes();
        let mac = self.mac(issued, &random);
        let mut raw = Vec::with_capacity(NONCE_BYTES);
        raw.extend_from_slice(issued);
        raw.extend_from_slice(&random);
        raw.extend_from_slice(&mac[..MAC_BYTES]);
        base64url_encode(&raw)
    }

    /// The issue time (Unix seconds) of a nonce this server's secret made,
    /// `None` for any other string.
    fn nonce_issued(&self, nonce: &str) -> Option<u64> {
        let raw = base64url_decode(nonce)?;
        if raw.len() != NONCE_BYTES {
            return None;
        }
        let (issued, rest) = raw.split_at(6);
        let (random, mac) = rest.split_at(8);
        let expected = self.mac(issued, random);
        if !ct_eq(mac, &expected[..MAC_BYTES]) {
            return None;
        }
        let mut secs = [0u8; 8];
        secs[2..].copy_from_slice(issued);
        Some(u64::from_be_bytes(secs))
    }

    /// A `WWW-Authenticate` / `Proxy-Authenticate` value with a fresh
    /// nonce: `Digest realm="…", nonce="…", algorithm=…, qop="auth"`, and
    /// `, stale=true` after an [`Outcome::Stale`]. To offer both
    /// algorithms, send two headers, SHA-256 first (RFC 8760 §2.4).
    pub fn challenge(
        &self,
        algorithm: Algorithm,
        stale: bool,
        now: Instant,
        random: u64,
    ) -> String {
        let mut out = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
            escape_quoted(&self.config.realm),
            self.nonce(now, random),
            algorithm.name(),
        );
        if stale {
            out.push_str(", stale=true");
        }
        out
    }

    /// Checks parsed credentials of a request with `method` and
    /// `request_uri` against the user's HA1 (looked up by
    /// `creds.username` and `creds.algorithm`). The digest-uri must equal
    /// the request URI (ASCII case aside): otherwise the credentials were
    /// made for another request, and the outcome is [`Outcome::Wrong`].
    pub fn verify(
        &self,
        creds: &Credentials,
        ha1: &Ha1,
        method: &str,
        request_uri: &str,
        now: Instant,
    ) -> Outcome {
        let qop = match (creds.qop, &creds.nc, &creds.cnonce) {
            (true, Some(nc), Some(cnonce)) => Some((nc.as_str(), cnonce.as_str())),
            (false, _, _) if self.config.allow_rfc2069 => None,
            _ => return Outcome::Malformed,
        };
        // Computed before any early return on the nonce or the realm, so
        // that the time taken says little about why a request failed.
        let expected = response(ha1, method, &creds.uri, &creds.nonce, qop);
        let response_ok = ct_eq(expected.as_bytes(), creds.response.as_bytes());

        if creds.realm != self.config.realm
            || creds.algorithm != ha1.algorithm
            || !creds.uri.trim().eq_ignore_ascii_case(request_uri.trim())
        {
            return Outcome::Wrong;
        }
        let Some(issued) = self.nonce_issued(&creds.nonce) else {
            return Outcome::Wrong;
        };
        if !response_ok {
            return Outcome::Wrong;
        }
        let now_secs = self.unix_secs(now);
        let age = now_secs.saturating_sub(issued);
        let ahead = issued.saturating_sub(now_secs);
        if age > self.config.nonce_lifetime.as_secs() || ahead > MAX_CLOCK_SKEW_SECS {
            return Outcome::Stale;
        }
        Outcome::Ok(creds.username.clone())
    }

    /// Parses `header` and verifies it, looking the user's HA1 up with
    /// `lookup(username, algorithm)`. An unknown user (`None`) is
    /// [`Outcome::Wrong`], after the same hashing as a known one.
    pub fn verify_header(
        &self,
        header: &str,
        method: &str,
        request_uri: &str,
        now: Instant,
        lookup: impl FnOnce(&str, Algorithm) -> Option<Ha1>,
    ) -> Outcome {
        let Ok(creds) = Credentials::parse(header) else {
            return Outcome::Malformed;
        };
        match lookup(&creds.username, creds.algorithm) {
            Some(ha1) => self.verify(&creds, &ha1, method, request_uri, now),
            None => {
                // A stand-in user keeps the timing of a known one.
                let dummy = Ha1 {
                    algorithm: creds.algorithm,
                    hex: "0".repeat(creds.algorithm.hex_len()),
                };
                match self.verify(&creds, &dummy, method, request_uri, now) {
                    Outcome::Malformed => Outcome::Malformed,
                    _ => Outcome::Wrong,
                }
            }
        }
    }
}

/// Escapes `"` and `\` for a quoted string.
fn escape_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Equality that takes as long whichever byte differs.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// HMAC-SHA-256 (RFC 2104) over the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Base64url without padding (RFC 4648 §5).
fn base64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The inverse of [`base64url_encode`]; `None` on any other character,
/// padding or an impossible length.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const REALM: &str = "sip.example.com";
    /// 2023-11-14T22:13:20Z, the wall clock at the test anchor.
    const UNIX: Duration = Duration::from_secs(1_700_000_000);

    fn auth(t0: Instant) -> Authenticator {
        Authenticator::new(DigestConfig::new(REALM, SECRET), t0, UNIX).unwrap()
    }

    /// What a phone sends, computed with the (vector-checked) response().
    fn client_header(
        ha1: &Ha1,
        username: &str,
        nonce: &str,
        method: &str,
        uri: &str,
        qop: bool,
    ) -> String {
        let alg = ha1.algorithm().name();
        if qop {
            let r = response(ha1, method, uri, nonce, Some(("00000001", "0a4f113b")));
            format!(
                "Digest username=\"{username}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{r}\", algorithm={alg}, qop=auth, nc=00000001, \
                 cnonce=\"0a4f113b\""
            )
        } else {
            let r = response(ha1, method, uri, nonce, None);
            format!(
                "Digest username=\"{username}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{r}\", algorithm={alg}"
            )
        }
    }

    fn nonce_of(challenge: &str) -> String {
        let start = challenge.find("nonce=\"").unwrap() + 7;
        let end = start + challenge[start..].find('"').unwrap();
        challenge[start..end].to_string()
    }

    /// RFC 2617 §3.5: Mufasa, "Circle Of Life", GET /dir/index.html. The
    /// response 6629fae49393a05397450978507c4ef1 is the RFC's and was
    /// recomputed with Python's hashlib (HA1 939e7578ed9e3c518a452acee763bce9).
    #[test]
    fn rfc2617_example() {
        let header = "Digest username=\"Mufasa\",\n                 realm=\"testrealm@host.com\",\n                 nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\n                 uri=\"/dir/index.html\",\n                 qop=auth,\n                 nc=00000001,\n                 cnonce=\"0a4f113b\",\n                 response=\"6629fae49393a05397450978507c4ef1\",\n                 opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let c = Credentials::parse(header).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.realm, "testrealm@host.com");
        assert_eq!(c.uri, "/dir/index.html");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop);
        assert_eq!(c.nonce_count(), Some(1));
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        let ha1 = Ha1::from_password(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(ha1.as_hex(), "939e7578ed9e3c518a452acee763bce9");
        let r = response(
            &ha1,
            "GET",
            &c.uri,
            &c.nonce,
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
        assert_eq!(r, c.response);
    }

    /// RFC 7616 §3.9.1 (both algorithms), also recomputed with hashlib:
    /// MD5 8ca523f5e9506fed4657c9700eebdbec, SHA-256
    /// 753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1.
    #[test]
    fn rfc7616_examples() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, want) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let ha1 = Ha1::from_password(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
            let r = response(
                &ha1,
                "GET",
                "/dir/index.html",
                nonce,
                Some(("00000001", cnonce)),
            );
            assert_eq!(r, want, "{alg}");
        }
    }

    /// SIP with SHA-256, expected values from Python:
    /// sha256("alice:sip.example.com:s3cret") =
    ///   26290d515c6bc2f919be41fa0ed30fc9c24ded12f2e2a7bba02eb911a04aed70
    /// HA2 = sha256("REGISTER:sip:sip.example.com"), then
    /// qop=auth (nonce abc123nonce, nc 00000001, cnonce deadbeef):
    ///   eed1aa2d8b83d8c172b3cb33af873c50ecc2971acdcf33b262aca182d1b9330a
    /// no qop: 25a0ca52ed065a967a24f72fe56235a6b7891933328c66ecaa743047223bd27f
    /// and MD5 without qop: 6e7ae1b8adbe05d9fe7cd559b849de05.
    #[test]
    fn sha256_and_rfc2069_vectors() {
        let ha1 = Ha1::from_password(Algorithm::Sha256, "alice", REALM, "s3cret");
        assert_eq!(
            ha1.as_hex(),
            "26290d515c6bc2f919be41fa0ed30fc9c24ded12f2e2a7bba02eb911a04aed70"
        );
        let uri = "sip:sip.example.com";
        assert_eq!(
            response(
                &ha1,
                "REGISTER",
                uri,
                "abc123nonce",
                Some(("00000001", "deadbeef"))
            ),
            "eed1aa2d8b83d8c172b3cb33af873c50ecc2971acdcf33b262aca182d1b9330a"
        );
        assert_eq!(
            response(&ha1, "REGISTER", uri, "abc123nonce", None),
            "25a0ca52ed065a967a24f72fe56235a6b7891933328c66ecaa743047223bd27f"
        );
        let md5 = Ha1::from_hex(Algorithm::Md5, "C2259BF057179DAE2DE80A2DFA26DAC2").unwrap();
        assert_eq!(
            md5,
            Ha1::from_password(Algorithm::Md5, "alice", REALM, "s3cret")
        );
        assert_eq!(
            response(&md5, "REGISTER", uri, "abc123nonce", None),
            "6e7ae1b8adbe05d9fe7cd559b849de05"
        );
    }

    /// RFC 4231 test case 2 (key "Jefe"), and a key longer than a block
    /// (case 6), as a check of how the keyed hash is used.
    #[test]
    fn hmac_vectors() {
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn base64url_round_trip() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let s = base64url_encode(&bytes);
            assert!(!s.contains('='));
            assert_eq!(base64url_decode(&s).unwrap(), bytes, "{len}");
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("ab+c"), None);
    }

    #[test]
    fn challenge_form() {
        let t0 = Instant::now();
        let a = auth(t0);
        let c = a.challenge(Algorithm::Sha256, false, t0, 7);
        let nonce = nonce_of(&c);
        assert_eq!(nonce.len(), 40);
        assert_eq!(
            c,
            format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\"")
        );
        let stale = a.challenge(Algorithm::Md5, true, t0, 8);
        assert!(
            stale.ends_with("algorithm=MD5, qop=\"auth\", stale=true"),
            "{stale}"
        );
        // Another random, another nonce; the same, the same.
        assert_ne!(a.nonce(t0, 1), a.nonce(t0, 2));
        assert_eq!(a.nonce(t0, 1), a.nonce(t0, 1));
        // The realm is escaped.
        let odd = Authenticator::new(DigestConfig::new("a\"b\\c", SECRET), t0, UNIX).unwrap();
        assert!(odd
            .challenge(Algorithm::Md5, false, t0, 1)
            .starts_with("Digest realm=\"a\\\"b\\\\c\""));
    }

    #[test]
    fn rejects_bad_config() {
        let t0 = Instant::now();
        assert_eq!(
            Authenticator::new(DigestConfig::new(REALM, &b"short"[..]), t0, UNIX).unwrap_err(),
            ConfigError::ShortSecret
        );
        for realm in ["", "a\r\nVia: x"] {
            assert_eq!(
                Authenticator::new(DigestConfig::new(realm, SECRET), t0, UNIX).unwrap_err(),
                ConfigError::BadRealm
            );
        }
    }

    #[test]
    fn register_round_trip_both_algorithms_and_rfc2069() {
        let t0 = Instant::now();
        let a = auth(t0);
        let uri = "sip:sip.example.com";
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            for qop in [true, false] {
                let nonce = nonce_of(&a.challenge(alg, false, t0, 42));
                let ha1 = Ha1::from_password(alg, "alice", REALM, "s3cret");
                let h = client_header(&ha1, "alice", &nonce, "REGISTER", uri, qop);
                let now = t0 + Duration::from_secs(2);
                let out = a.verify_header(&h, "REGISTER", uri, now, |u, got| {
                    assert_eq!((u, got), ("alice", alg));
                    Some(ha1.clone())
                });
                assert_eq!(out, Outcome::Ok("alice".into()), "{alg} qop={qop}");
                // Another method with the same header: wrong.
                let out = a.verify_header(&h, "INVITE", uri, now, |_, _| Some(ha1.clone()));
                assert_eq!(out, Outcome::Wrong, "{alg} qop={qop}");
                // Another request URI: wrong; case differences are fine.
                let out = a.verify_header(&h, "REGISTER", "sip:evil.example.com", now, |_, _| {
                    Some(ha1.clone())
                });
                assert_eq!(out, Outcome::Wrong);
                let out = a.verify_header(&h, "REGISTER", "SIP:SIP.example.com", now, |_, _| {
                    Some(ha1.clone())
                });
                assert_eq!(out, Outcome::Ok("alice".into()));
            }
        }
    }

    #[test]
    fn rfc2069_can_be_refused() {
        let t0 = Instant::now();
        let mut config = DigestConfig::new(REALM, SECRET);
        config.allow_rfc2069 = false;
        let a = Authenticator::new(config, t0, UNIX).unwrap();
        let ha1 = Ha1::from_password(Algorithm::Md5, "alice", REALM, "s3cret");
        let nonce = a.nonce(t0, 1);
        let uri = "sip:sip.example.com";
        let plain = client_header(&ha1, "alice", &nonce, "REGISTER", uri, false);
        let out = a.verify_header(&plain, "REGISTER", uri, t0, |_, _| Some(ha1.clone()));
        assert_eq!(out, Outcome::Malformed);
        let qop = client_header(&ha1, "alice", &nonce, "REGISTER", uri, true);
        let out = a.verify_header(&qop, "REGISTER", uri, t0, |_, _| Some(ha1.clone()));
        assert_eq!(out, Outcome::Ok("alice".into()));
    }

    #[test]
    fn expired_nonce_is_stale_only_with_the_right_password() {
        let t0 = Instant::now();
        let a = auth(t0);
        let uri = "sip:sip.example.com";
        let ha1 = Ha1::from_password(Algorithm::Sha256, "alice", REALM, "s3cret");
        let nonce = a.nonce(t0, 9);
        let h = client_header(&ha1, "alice", &nonce, "REGISTER", uri, true);
        let at = |s| t0 + Duration::from_secs(s);
        let ok = Outcome::Ok("alice".into());
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, at(299), |_, _| Some(ha1.clone())),
            ok
        );
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, at(301), |_, _| Some(ha1.clone())),
            Outcome::Stale
        );
        // An expired nonce with a wrong password is wrong, not stale.
        let bad = Ha1::from_password(Algorithm::Sha256, "alice", REALM, "guess");
        let h_bad = client_header(&bad, "alice", &nonce, "REGISTER", uri, true);
        assert_eq!(
            a.verify_header(&h_bad, "REGISTER", uri, at(301), |_, _| Some(ha1.clone())),
            Outcome::Wrong
        );
        // A shorter lifetime; and a nonce issued far in the future (a
        // node whose clock runs ahead) is stale too.
        let mut config = DigestConfig::new(REALM, SECRET);
        config.nonce_lifetime = Duration::from_secs(30);
        let short = Authenticator::new(config, t0, UNIX).unwrap();
        let n = short.nonce(t0, 3);
        let h = client_header(&ha1, "alice", &n, "REGISTER", uri, false);
        assert_eq!(
            short.verify_header(&h, "REGISTER", uri, at(29), |_, _| Some(ha1.clone())),
            ok
        );
        assert_eq!(
            short.verify_header(&h, "REGISTER", uri, at(31), |_, _| Some(ha1.clone())),
            Outcome::Stale
        );
        let future = a.nonce(at(120), 4);
        let h = client_header(&ha1, "alice", &future, "REGISTER", uri, true);
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, t0, |_, _| Some(ha1.clone())),
            Outcome::Stale
        );
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, at(100), |_, _| Some(ha1.clone())),
            ok
        );
    }

    #[test]
    fn another_node_with_the_secret_accepts_the_nonce() {
        // Another process: another Instant anchor, the same wall clock.
        let t0 = Instant::now();
        let a = auth(t0);
        let later = t0 + Duration::from_secs(1000);
        let b = Authenticator::new(
            DigestConfig::new(REALM, SECRET),
            later,
            UNIX + Duration::from_secs(1000),
        )
        .unwrap();
        let ha1 = Ha1::from_password(Algorithm::Md5, "bob", REALM, "pw");
        let uri = "sip:sip.example.com";
        let nonce = a.nonce(t0 + Duration::from_secs(10), 5);
        let h = client_header(&ha1, "bob", &nonce, "REGISTER", uri, true);
        let now = t0 + Duration::from_secs(20);
        assert_eq!(
            b.verify_header(&h, "REGISTER", uri, now, |_, _| Some(ha1.clone())),
            Outcome::Ok("bob".into())
        );
    }

    #[test]
    fn forged_or_altered_nonce_is_wrong() {
        let t0 = Instant::now();
        let a = auth(t0);
        let other = Authenticator::new(
            DigestConfig::new(REALM, &b"another secret, 16+ bytes"[..]),
            t0,
            UNIX,
        )
        .unwrap();
        let other_realm =
            Authenticator::new(DigestConfig::new("other.example.com", SECRET), t0, UNIX).unwrap();
        let ha1 = Ha1::from_password(Algorithm::Md5, "alice", REALM, "s3cret");
        let uri = "sip:sip.example.com";
        let mut altered = a.nonce(t0, 1).into_bytes();
        altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        for nonce in [
            other.nonce(t0, 1),
            other_realm.nonce(t0, 1),
            altered,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093".to_string(),
            String::new(),
        ] {
            // The response is right for that nonce: only the nonce is bad.
            let h = client_header(&ha1, "alice", &nonce, "REGISTER", uri, true);
            let out = a.verify_header(&h, "REGISTER", uri, t0, |_, _| Some(ha1.clone()));
            assert_eq!(out, Outcome::Wrong, "{nonce}");
        }
    }

    #[test]
    fn wrong_password_unknown_user_other_realm() {
        let t0 = Instant::now();
        let a = auth(t0);
        let uri = "sip:sip.example.com";
        let nonce = a.nonce(t0, 1);
        let stored = Ha1::from_password(Algorithm::Md5, "alice", REALM, "s3cret");
        let guess = Ha1::from_password(Algorithm::Md5, "alice", REALM, "s3cret!");
        let h = client_header(&guess, "alice", &nonce, "REGISTER", uri, true);
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, t0, |_, _| Some(stored.clone())),
            Outcome::Wrong
        );
        let h = client_header(&stored, "alice", &nonce, "REGISTER", uri, true);
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, t0, |_, _| None),
            Outcome::Wrong
        );
        // Credentials naming another realm.
        let h = h.replace(&format!("realm=\"{REALM}\""), "realm=\"other\"");
        assert_eq!(
            a.verify_header(&h, "REGISTER", uri, t0, |_, _| Some(stored.clone())),
            Outcome::Wrong
        );
        // An HA1 of the other algorithm than the credentials name.
        let creds = Credentials::parse(&client_header(
            &stored, "alice", &nonce, "REGISTER", uri, true,
        ))
        .unwrap();
        let sha = Ha1::from_password(Algorithm::Sha256, "alice", REALM, "s3cret");
        assert_eq!(a.verify(&creds, &sha, "REGISTER", uri, t0), Outcome::Wrong);
        assert_eq!(
            a.verify(&creds, &stored, "REGISTER", uri, t0),
            Outcome::Ok("alice".into())
        );
    }

    #[test]
    fn parse_tolerates_spacing_case_and_escapes() {
        let h = "  digest   USERNAME = \"a\\\"li\\\\ce\" ,,Realm=x.org,NONCE=\"n\"\t,\r\n uri=\"sip:x.org\",\
                 Response=\"ABCDEF0123456789ABCDEF0123456789\", Algorithm=md5, QOP=\"AUTH\", NC=0000000A, \
                 cnonce=\"c n\", extra=\"ignored, really\", other=token ,";
        let c = Credentials::parse(h).unwrap();
        assert_eq!(c.username, "a\"li\\ce");
        assert_eq!(c.realm, "x.org");
        assert_eq!(c.nonce, "n");
        assert_eq!(c.uri, "sip:x.org");
        assert_eq!(c.response, "abcdef0123456789abcdef0123456789");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop);
        assert_eq!(c.nc.as_deref(), Some("0000000A"));
        assert_eq!(c.nonce_count(), Some(10));
        assert_eq!(c.cnonce.as_deref(), Some("c n"));
        assert_eq!(c.opaque, None);
        // Without qop, nc and cnonce are dropped; the algorithm defaults to MD5.
        let c = Credentials::parse(
            "Digest username=u,realm=r,nonce=n,uri=\"sip:r\",response=0123456789abcdef0123456789abcdef,nc=00000001",
        )
        .unwrap();
        assert!(!c.qop);
        assert_eq!((c.nc, c.cnonce), (None, None));
        // Non-ASCII inside quotes survives, escaped or not.
        let c = Credentials::parse(
            "Digest username=\"j\\ürgen\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0123456789abcdef0123456789abcdef\"",
        )
        .unwrap();
        assert_eq!(c.username, "jürgen");
    }

    #[test]
    fn parse_errors() {
        let resp = "response=\"0123456789abcdef0123456789abcdef\"";
        let base = format!("username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", {resp}");
        let cases: Vec<(String, ParseError)> = vec![
            (format!("Basic {base}"), ParseError::NotDigest),
            (format!("Digest{base}"), ParseError::NotDigest),
            ("".into(), ParseError::NotDigest),
            ("Digest".into(), ParseError::Missing("username")),
            (format!("Digest {base}, username=v"), ParseError::Duplicate("username")),
            (format!("Digest {base}, REALM=v"), ParseError::Duplicate("realm")),
            (format!("Digest {base}, algorithm=MD5-sess"), ParseError::Unsupported("algorithm")),
            (format!("Digest {base}, algorithm=SHA-512-256"), ParseError::Unsupported("algorithm")),
            (format!("Digest {base}, algorithm=SHA-256"), ParseError::Invalid("response")),
            (format!("Digest {base}, qop=auth-int, nc=00000001, cnonce=c"), ParseError::Unsupported("qop")),
            (format!("Digest {base}, qop=auth, cnonce=c"), ParseError::Missing("nc")),
            (format!("Digest {base}, qop=auth, nc=1, cnonce=c"), ParseError::Invalid("nc")),
            (format!("Digest {base}, qop=auth, nc=0000000g, cnonce=c"), ParseError::Invalid("nc")),
            (format!("Digest {base}, qop=auth, nc=00000001"), ParseError::Missing("cnonce")),
            (format!("Digest {base}, qop=auth, nc=00000001, cnonce=\"\""), ParseError::Invalid("cnonce")),
            (format!("Digest {base}, userhash=true"), ParseError::Unsupported("userhash")),
            (format!("Digest {base}, username*=UTF-8''x"), ParseError::Unsupported("username*")),
            ("Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0123456789abcdef0123456789abcdef\"".into(), ParseError::Missing("username")),
            ("Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"xyz\"".into(), ParseError::Invalid("response")),
            (format!("Digest {base}, opaque=\"unterminated"), ParseError::Syntax),
            (format!("Digest {base}, opaque=\"ends in \\"), ParseError::Syntax),
            (format!("Digest {base}, flag"), ParseError::Syntax),
            (format!("Digest {base}, =x"), ParseError::Syntax),
            (format!("Digest {base}, x="), ParseError::Syntax),
            (format!("Digest {base}, x=\"a\"b"), ParseError::Syntax),
            (format!("Digest {base} x=y"), ParseError::Syntax),
            (format!("Digest {base}, x=\"a\\\r\n\""), ParseError::Syntax),
            (format!("Digest {base}, {}", "x".repeat(MAX_HEADER_LEN)), ParseError::TooLong),
        ];
        for (h, want) in cases {
            assert_eq!(Credentials::parse(&h), Err(want), "{h:?}");
        }
    }

    #[test]
    fn hostile_values_never_panic() {
        let t0 = Instant::now();
        let a = auth(t0);
        let ha1 = Ha1::from_password(Algorithm::Md5, "u", REALM, "p");
        let pieces: [&str; 20] = [
            "Digest ",
            "username",
            "=",
            "\"",
            "\\",
            ",",
            " ",
            "nonce",
            "realm",
            "uri",
            "response",
            "qop=auth",
            "nc=",
            "0123456789abcdef",
            "é",
            "\u{0}",
            "\r\n",
            "*",
            "algorithm=SHA-256",
            "cnonce",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut h = String::new();
            let n = (state % 24) as usize;
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                h.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            let _ = Credentials::parse(&h);
            let _ = a.verify_header(&h, "REGISTER", "sip:x", t0, |_, _| Some(ha1.clone()));
            // Every prefix of a valid header, cut at char boundaries.
        }
        // Every prefix of valid headers (one with escapes), cut at char
        // boundaries.
        let valid = client_header(&ha1, "u", &a.nonce(t0, 1), "REGISTER", "sip:x", true);
        let escaped = r#"Digest username="a\"b\\cé", realm="r\\", nonce=n"#;
        assert_eq!(Credentials::parse(escaped), Err(ParseError::Missing("uri")));
        for h in [valid.as_str(), escaped] {
            for (i, _) in h.char_indices() {
                let _ = a.verify_header(&h[..i], "REGISTER", "sip:x", t0, |_, _| Some(ha1.clone()));
            }
        }
        // Nonces of every length and alphabet do not panic the decoder.
        for len in 0..64 {
            for c in ["A", "_", "=", "é", "/"] {
                assert!(a.nonce_issued(&c.repeat(len)).is_none());
            }
        }
        // Instants before the anchor, and far after it.
        let _ = a.nonce(t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0), 1);
        let _ = a.nonce(t0 + Duration::from_secs(10u64.pow(12)), 1);
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn ha1_from_hex_and_debug() {
        assert!(Ha1::from_hex(Algorithm::Md5, "xyz").is_none());
        assert!(Ha1::from_hex(Algorithm::Sha256, "939e7578ed9e3c518a452acee763bce9").is_none());
        let h = Ha1::from_hex(Algorithm::Md5, " 939e7578ed9e3c518a452acee763bce9 ").unwrap();
        assert!(!format!("{h:?}").contains("939e"));
        let cfg = DigestConfig::new(REALM, SECRET);
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
    }
}
