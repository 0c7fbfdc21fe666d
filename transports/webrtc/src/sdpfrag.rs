//! `application/trickle-ice-sdpfrag` bodies (RFC 8840) as WHIP/WHEP PATCH uses them.

use crate::Error;

/// The ICE part of a PATCH body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IceFragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:...` values (without the `a=`).
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

/// Longest fragment accepted, in bytes.
const MAX_FRAGMENT: usize = 64 * 1024;

/// Parses a trickle-ice-sdpfrag body. Unknown lines are ignored, as RFC 8840
/// asks; a line that is not text, or an oversized body, is an error.
pub fn parse_sdpfrag(body: &str) -> Result<IceFragment, Error> {
    if body.len() > MAX_FRAGMENT {
        return Err(Error::BadFragment(format!(
            "longer than {MAX_FRAGMENT} bytes"
        )));
    }
    let mut frag = IceFragment::default();
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        if let Some(v) = attr.strip_prefix("ice-ufrag:") {
            frag.ufrag = Some(non_empty(v, "ice-ufrag")?);
        } else if let Some(v) = attr.strip_prefix("ice-pwd:") {
            frag.pwd = Some(non_empty(v, "ice-pwd")?);
        } else if attr.starts_with("candidate:") {
            frag.candidates.push(attr.to_string());
        } else if attr == "end-of-candidates" {
            frag.end_of_candidates = true;
        }
    }
    if frag.ufrag.is_some() != frag.pwd.is_some() {
        return Err(Error::BadFragment(
            "ice-ufrag and ice-pwd come together".into(),
        ));
    }
    Ok(frag)
}

fn non_empty(v: &str, what: &str) -> Result<String, Error> {
    let v = v.trim();
    if v.is_empty() {
        return Err(Error::BadFragment(format!("empty {what}")));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_candidates_and_credentials() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\na=end-of-candidates\r\n";
        let f = parse_sdpfrag(body).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
    }

    #[test]
    fn refuses_half_credentials_and_huge_bodies() {
        assert!(parse_sdpfrag("a=ice-ufrag:x\r\n").is_err());
        assert!(parse_sdpfrag(&"a".repeat(MAX_FRAGMENT + 1)).is_err());
        assert!(parse_sdpfrag("a=ice-ufrag:\r\na=ice-pwd:y\r\n").is_err());
    }
}
