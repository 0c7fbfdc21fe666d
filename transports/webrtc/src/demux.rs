//! First-byte demultiplexing (RFC 7983) and STUN username extraction.

/// What a datagram on the media port is, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    Stun,
    Dtls,
    /// RTP or RTCP (SRTP/SRTCP).
    Rtp,
    Unknown,
}

/// Classifies a datagram without parsing it.
pub fn classify(datagram: &[u8]) -> PacketClass {
    match datagram.first() {
        Some(0..=3) => PacketClass::Stun,
        Some(20..=63) => PacketClass::Dtls,
        Some(128..=191) => PacketClass::Rtp,
        _ => PacketClass::Unknown,
    }
}

/// The local (server side) ICE ufrag of a STUN binding request.
///
/// A client's connectivity check carries `USERNAME = <server ufrag>:<client
/// ufrag>`; the server ufrag says which endpoint the request is for before
/// the client's address is known. Anything else returns `None`.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: u16 = 0x0001;
    const MAGIC_COOKIE: u32 = 0x2112_A442;
    const USERNAME: u16 = 0x0006;
    let header = datagram.get(..20)?;
    let msg_type = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if msg_type != BINDING_REQUEST || cookie != MAGIC_COOKIE {
        return None;
    }
    // Only the attributes the header announces, and no more than arrived.
    let mut attrs = datagram.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + alen)?;
        if typ == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (local, _remote) = username.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        let padded = (4 + alen + 3) & !3;
        attrs = attrs.get(padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with USERNAME "srv1:cli1", built by hand.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&0x0001u16.to_be_bytes());
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&[0, 1]), PacketClass::Stun);
        assert_eq!(classify(&[22, 254]), PacketClass::Dtls);
        assert_eq!(classify(&[0x80, 96]), PacketClass::Rtp);
        assert_eq!(classify(&[]), PacketClass::Unknown);
        assert_eq!(classify(&[255]), PacketClass::Unknown);
    }

    #[test]
    fn extracts_the_server_ufrag() {
        assert_eq!(
            stun_local_ufrag(&binding_request("srv1:cli1")),
            Some("srv1")
        );
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let full = binding_request("srv1:cli1");
        for len in 0..full.len() {
            let _ = stun_local_ufrag(&full[..len]);
        }
        assert_eq!(stun_local_ufrag(&[0u8; 20]), None);
        assert_eq!(stun_local_ufrag(b"\x80garbage"), None);
    }
}
