//! Who may do what: the static bearer token and signed tokens (JWT, HS256).
//!
//! A request carries `Authorization: Bearer …`. The static `--token`, when
//! set, allows everything. A JWT signed with `--auth-secret` allows what its
//! claims say: one room, publish and/or subscribe, optionally only some
//! transports, between `nbf` and `exp`. With neither configured, the node
//! is open. Time comes in as seconds since the Unix epoch: nothing here reads
//! a clock.
//!
//! Answers: a missing, malformed, wrongly signed, expired or not yet valid
//! token is `401` with the reason; a valid token without the permission
//! (another room, no publish right, another transport) is `403`.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::http::constant_time_eq;

/// Shortest `--auth-secret` accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_LEN: usize = 16;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// A request's target: a room, an action, through a transport (`whip`,
/// `whep`, and later `sdk`, `rtmp`, `sip`, `moq`).
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub room: &'a str,
    pub action: Action,
    pub transport: &'a str,
}

/// The claims of a corecast token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one room the token is for.
    pub room: String,
    /// The peer the holder joins as (rooms with peers use it; WHIP and WHEP
    /// do not check it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    /// The transports the token may be used with; absent: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials, or ones that prove nothing.
    Unauthorized(String),
    /// 403: a valid token that does not allow this.
    Forbidden(String),
}

/// The node's credentials.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<String>,
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Auth {
    pub fn new(token: Option<String>, secret: Option<String>) -> Auth {
        Auth {
            token,
            secret: secret.map(String::into_bytes),
        }
    }

    /// Whether requests need credentials at all.
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.secret.is_none()
    }

    /// Checks an `Authorization` header value for `access` at `now_unix`.
    /// Returns the token's claims when a JWT allowed it.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        access: &Access<'_>,
        now_unix: u64,
    ) -> Result<Option<Claims>, Denied> {
        if self.is_open() {
            return Ok(None);
        }
        let Some(bearer) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return Err(Denied::Unauthorized(
                "missing Authorization: Bearer token".to_string(),
            ));
        };
        if let Some(token) = &self.token {
            if constant_time_eq(bearer, token.as_bytes()) {
                return Ok(None);
            }
        }
        let Some(secret) = &self.secret else {
            return Err(Denied::Unauthorized(
                "wrong Authorization: Bearer token".to_string(),
            ));
        };
        let text = std::str::from_utf8(bearer)
            .map_err(|_| Denied::Unauthorized("the token is not text".to_string()))?;
        let claims = verify(secret, text, now_unix)?;
        allow(&claims, access)?;
        Ok(Some(claims))
    }
}

/// Signs `claims` with `secret` (HS256).
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}

/// Checks the signature, the shape and the time window of a token.
fn verify(secret: &[u8], token: &str, now_unix: u64) -> Result<Claims, Denied> {
    let key = DecodingKey::from_secret(secret)
        .map_err(|e| Denied::Unauthorized(format!("token key: {e}")))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Time is checked below, against the time passed in.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = ["exp".to_string()].into();
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
        let why = match e.kind() {
            ErrorKind::InvalidSignature => "the token's signature does not match --auth-secret",
            ErrorKind::InvalidAlgorithm => "the token is not signed with HS256",
            ErrorKind::MissingRequiredClaim(_) => "the token has no exp (expiry) claim",
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                "the token's claims are not corecast's (room, publish, subscribe, exp)"
            }
            _ => "the token is malformed",
        };
        Denied::Unauthorized(why.to_string())
    })?;
    let claims = data.claims;
    if now_unix >= claims.exp {
        return Err(Denied::Unauthorized(format!(
            "the token expired {} s ago",
            now_unix - claims.exp
        )));
    }
    if let Some(nbf) = claims.nbf {
        if now_unix < nbf {
            return Err(Denied::Unauthorized(format!(
                "the token is valid only in {} s",
                nbf - now_unix
            )));
        }
    }
    Ok(claims)
}

/// Whether valid claims allow `access`.
fn allow(claims: &Claims, access: &Access<'_>) -> Result<(), Denied> {
    if claims.room != access.room {
        return Err(Denied::Forbidden(format!(
            "the token is for room '{}', not '{}'",
            claims.room, access.room
        )));
    }
    let allowed = match access.action {
        Action::Publish => claims.publish,
        Action::Subscribe => claims.subscribe,
    };
    if !allowed {
        return Err(Denied::Forbidden(format!(
            "the token does not allow {}",
            access.action.name()
        )));
    }
    if let Some(list) = &claims.transports {
        if !list
            .iter()
            .any(|t| t.eq_ignore_ascii_case(access.transport))
        {
            return Err(Denied::Forbidden(format!(
                "the token does not allow {} (only {})",
                access.transport,
                list.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a test secret of some length";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            room: "r1".into(),
            peer: None,
            publish: true,
            subscribe: false,
            transports: None,
            exp: NOW + 60,
            nbf: None,
        }
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    fn access<'a>(room: &'a str, action: Action, transport: &'static str) -> Access<'a> {
        Access {
            room,
            action,
            transport,
        }
    }

    #[test]
    fn a_minted_token_allows_what_its_claims_say() {
        let auth = Auth::new(None, Some(SECRET.into()));
        let t = mint(SECRET.as_bytes(), &claims()).unwrap();
        let got = auth
            .check(
                Some(&bearer(&t)),
                &access("r1", Action::Publish, "whip"),
                NOW,
            )
            .unwrap();
        assert_eq!(got, Some(claims()));
        let no = auth.check(
            Some(&bearer(&t)),
            &access("r1", Action::Subscribe, "whep"),
            NOW,
        );
        assert_eq!(
            no,
            Err(Denied::Forbidden(
                "the token does not allow subscribe".into()
            ))
        );
        let other = auth.check(
            Some(&bearer(&t)),
            &access("r2", Action::Publish, "whip"),
            NOW,
        );
        assert!(matches!(other, Err(Denied::Forbidden(m)) if m.contains("room 'r1'")));
    }

    #[test]
    fn time_window_signature_and_shape_are_checked() {
        let auth = Auth::new(None, Some(SECRET.into()));
        let a = access("r1", Action::Publish, "whip");
        let t = mint(SECRET.as_bytes(), &claims()).unwrap();
        assert!(matches!(
            auth.check(Some(&bearer(&t)), &a, NOW + 60),
            Err(Denied::Unauthorized(m)) if m.contains("expired")
        ));
        let later = Claims {
            nbf: Some(NOW + 10),
            ..claims()
        };
        let t2 = mint(SECRET.as_bytes(), &later).unwrap();
        assert!(matches!(
            auth.check(Some(&bearer(&t2)), &a, NOW),
            Err(Denied::Unauthorized(m)) if m.contains("valid only in 10 s")
        ));
        assert!(auth.check(Some(&bearer(&t2)), &a, NOW + 10).is_ok());
        let forged = mint(b"another secret, same length", &claims()).unwrap();
        assert!(matches!(
            auth.check(Some(&bearer(&forged)), &a, NOW),
            Err(Denied::Unauthorized(m)) if m.contains("signature")
        ));
        for junk in ["", "x", "a.b.c", "Bearer", "\u{0}\u{1}"] {
            assert!(matches!(
                auth.check(Some(&bearer(junk)), &a, NOW),
                Err(Denied::Unauthorized(_))
            ));
        }
        assert!(matches!(
            auth.check(None, &a, NOW),
            Err(Denied::Unauthorized(m)) if m.contains("missing")
        ));
        // A token signed with "none" or another algorithm is refused.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0".into(); // {"alg":"none","typ":"JWT"}
        let none = format!("{}.{}.", parts[0], parts[1]);
        assert!(matches!(
            auth.check(Some(&bearer(&none)), &a, NOW),
            Err(Denied::Unauthorized(_))
        ));
    }

    #[test]
    fn transports_can_be_restricted() {
        let auth = Auth::new(None, Some(SECRET.into()));
        let c = Claims {
            subscribe: true,
            transports: Some(vec!["whep".into()]),
            ..claims()
        };
        let t = mint(SECRET.as_bytes(), &c).unwrap();
        assert!(auth
            .check(
                Some(&bearer(&t)),
                &access("r1", Action::Subscribe, "whep"),
                NOW
            )
            .is_ok());
        assert!(matches!(
            auth.check(Some(&bearer(&t)), &access("r1", Action::Publish, "whip"), NOW),
            Err(Denied::Forbidden(m)) if m.contains("whip")
        ));
    }

    #[test]
    fn the_static_token_allows_everything_and_an_open_node_everyone() {
        let both = Auth::new(Some("static-one".into()), Some(SECRET.into()));
        let a = access("any", Action::Subscribe, "whep");
        assert_eq!(both.check(Some(b"Bearer static-one"), &a, NOW), Ok(None));
        assert!(matches!(
            both.check(Some(b"Bearer static-two"), &a, NOW),
            Err(Denied::Unauthorized(_))
        ));
        let only = Auth::new(Some("static-one".into()), None);
        assert!(matches!(
            only.check(Some(b"Bearer nope"), &a, NOW),
            Err(Denied::Unauthorized(m)) if m.contains("wrong")
        ));
        assert_eq!(Auth::default().check(None, &a, NOW), Ok(None));
    }
}
