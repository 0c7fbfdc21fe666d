//! The server's certificate: read from PEM files, or generated at start
//! (ECDSA P-256, valid 14 days) so that a browser can pin its SHA-256
//! with WebTransport's `serverCertificateHashes` without any CA.

use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// The longest validity a browser accepts for a pinned certificate.
pub const PINNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate chain and its key, as the TLS layer takes them.
#[derive(Debug)]
pub struct Certificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Pem(String, String),
}

impl Certificate {
    /// A self-signed ECDSA P-256 certificate for `names`, valid from an hour
    /// before `now` (clock skew) until 14 days after that hour.
    pub fn generate(names: &[String], now: SystemTime) -> Result<Certificate, CertError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        let start = now - Duration::from_secs(3600);
        params.not_before = start.into();
        params.not_after = (start + PINNED_VALIDITY).into();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "corecast");
        let cert = params.self_signed(&key)?;
        Ok(Certificate {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A chain and key from PEM text (`--moq-cert`, `--moq-key`); `what`
    /// names the files in errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, what: &str) -> Result<Certificate, CertError> {
        use rustls_pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Pem(what.to_string(), format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(CertError::Pem(
                what.to_string(),
                "no certificate in it".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CertError::Pem(what.to_string(), format!("key: {e}")))?;
        Ok(Certificate { chain, key })
    }

    /// The SHA-256 of the leaf certificate, as 64 lowercase hex digits: what
    /// `serverCertificateHashes` pins and `/certificate.sha256` serves.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.chain[0].as_ref());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_can_be_pinned() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cert = Certificate::generate(&["localhost".into()], now).unwrap();
        let fp = cert.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let (_, x509) = x509_parser::parse_x509_certificate(cert.chain[0].as_ref()).unwrap();
        let validity = x509.validity();
        let seconds = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert!(
            seconds as u64 <= PINNED_VALIDITY.as_secs(),
            "valid for {seconds} s"
        );
        assert!(validity.not_before.timestamp() < 1_800_000_000);
        assert!(validity.not_after.timestamp() > 1_800_000_000);
        // ECDSA with SHA-256 (1.2.840.10045.4.3.2): what browsers pin.
        assert_eq!(
            x509.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.10045.4.3.2"
        );
    }

    #[test]
    fn pem_round_trip_and_clear_errors() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let loaded = Certificate::from_pem(&cert.pem(), &key.serialize_pem(), "test").unwrap();
        assert_eq!(loaded.chain.len(), 1);
        let err = Certificate::from_pem("", &key.serialize_pem(), "a.pem").unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = Certificate::from_pem(&cert.pem(), "garbage", "a.pem").unwrap_err();
        assert!(err.to_string().starts_with("a.pem: key"), "{err}");
    }
}
