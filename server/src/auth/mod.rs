//! Opt-in authorization by JWT (`--auth-secret` for HS256, `--auth-public-key` for ES256 or
//! RS256): who may read whose streams, and publish to whom.
//!
//! Off, every check lets everything through and costs nothing. On, a token is checked once when
//! a stream opens and once per POST, never per message; a stream ends when its token expires.
//! Kafka records are not checked: who may write the topic is the broker's business.

mod claims;
pub mod expiry;
pub mod mint;
mod token;

pub use claims::{Claims, Users};
pub use expiry::Expiry;
pub use token::{Token, redacted};

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use token::Offered;

use crate::config::Config;

/// A shorter HS256 secret is refused at start-up: it would be weaker than the hash (RFC 7518
/// §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// The verifier, shared by every handler; `None` when authorization is off.
#[derive(Clone, Default)]
pub struct Auth(Option<Arc<Verifier>>);

struct Verifier {
    key: DecodingKey,
    validation: Validation,
    cookie: String,
    notice: Duration,
    /// Tokens whose signature was verified, by their exact text: a publisher sends the same
    /// token with every POST, and checking its signature again costs ~25,000 instructions, more
    /// than the rest of the POST. Only valid tokens get in, so its size bounds what a client can
    /// make it hold; their times are checked again on every use.
    verified: Mutex<HashMap<Box<str>, Arc<Claims>>>,
}

/// Verified tokens remembered at most; past it the cache starts afresh.
const VERIFIED_CACHE: usize = 4096;

/// Why a request is refused.
#[derive(Debug)]
pub enum Denied {
    /// No token: 401.
    Missing,
    /// A token that is not valid, whatever the reason: 401 with one body for all, so a client
    /// learns nothing about the key or the clock. The reason goes only to the debug log.
    Invalid,
    /// A valid token that does not allow this: 403.
    Forbidden(String),
}

/// A stream's permission, once checked: when it lapses, if ever.
#[derive(Debug, Default)]
pub struct Grant {
    pub expiry: Option<Expiry>,
}

impl Auth {
    /// Reads the key the configuration names; `Auth::default()` (off) when it names none.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&config.auth_secret, &config.auth_public_key) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                public_key(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            (None, None) => return Ok(Self::default()),
        };
        let mut validation = Validation::new(algorithm);
        // The stream ends at `exp`; accepting a token past it would only make it end at once.
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &config.auth_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        tracing::info!(?algorithm, "authorization is on");
        Ok(Self(Some(Arc::new(Verifier {
            key,
            validation,
            cookie: config.auth_cookie.clone(),
            notice: config.token_expiry_notice,
            verified: Mutex::default(),
        }))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Checks the token a stream request offers (header, cookie or query) before anything
    /// else is looked at. `Ok(None)` when authorization is off.
    pub fn stream_token(
        &self,
        headers: &HeaderMap,
        query: Option<&Token>,
    ) -> Result<Option<Checked>, Denied> {
        let Some(v) = &self.0 else { return Ok(None) };
        v.check(token::for_stream(headers, &v.cookie, query))
            .map(Some)
    }

    /// Checks a POST's token. Only the `Authorization` header counts: a cookie would let any
    /// site's form publish in the name of a visitor (a simple POST needs no preflight).
    pub fn bearer(&self, headers: &HeaderMap) -> Result<Option<Checked>, Denied> {
        let Some(v) = &self.0 else { return Ok(None) };
        v.check(token::bearer(headers)).map(Some)
    }
}

/// A token whose signature and times were checked, and what it allows.
pub struct Checked {
    claims: Arc<Claims>,
    notice: Duration,
}

/// May `checked` read `user`'s streams? With authorization off (`None`), yes, for ever.
pub fn subscribe(checked: Option<Checked>, user: &str) -> Result<Grant, Denied> {
    let Some(checked) = checked else {
        return Ok(Grant::default());
    };
    if !checked.claims.may_subscribe(user) {
        return Err(Denied::Forbidden(format!(
            "this token may not read the streams of user {user:?}"
        )));
    }
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(checked.claims.exp);
    Ok(Grant {
        expiry: Some(Expiry::new(at, checked.notice)),
    })
}

/// May `checked` publish to `user`? With authorization off (`None`), yes.
pub fn publish(checked: Option<&Checked>, user: &str) -> Result<(), Denied> {
    match checked {
        Some(checked) if !checked.claims.may_publish(user) => Err(Denied::Forbidden(format!(
            "this token may not publish to user {user:?}"
        ))),
        _ => Ok(()),
    }
}

/// May `checked` read the operator's endpoints (`/metrics`)? Only a token that may publish
/// to everyone.
pub fn operate(checked: Option<&Checked>) -> Result<(), Denied> {
    match checked {
        Some(checked) if !checked.claims.may_publish("*") => Err(Denied::Forbidden(
            "/metrics needs a token that may publish to `*`".into(),
        )),
        _ => Ok(()),
    }
}

impl Verifier {
    fn check(&self, offered: Offered<'_>) -> Result<Checked, Denied> {
        let token = match offered {
            Offered::None => return Err(Denied::Missing),
            Offered::Malformed => {
                tracing::debug!(reason = "not a bearer token", "token refused");
                return Err(Denied::Invalid);
            }
            Offered::Token(token) => token,
        };
        let known = self.verified_lock().get(token).cloned();
        let claims = match known {
            Some(claims) => {
                // What `decode` checks besides the signature, at this moment.
                let now = jsonwebtoken::get_current_timestamp();
                if claims.exp <= now {
                    tracing::debug!(
                        reason = "ExpiredSignature (remembered token)",
                        "token refused"
                    );
                    return Err(Denied::Invalid);
                }
                if claims.nbf.is_some_and(|nbf| nbf > now) {
                    tracing::debug!(
                        reason = "ImmatureSignature (remembered token)",
                        "token refused"
                    );
                    return Err(Denied::Invalid);
                }
                claims
            }
            None => match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
                Ok(data) => {
                    let claims = Arc::new(data.claims);
                    let mut verified = self.verified_lock();
                    if verified.len() >= VERIFIED_CACHE {
                        verified.clear();
                    }
                    verified.insert(token.into(), claims.clone());
                    claims
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "token refused");
                    return Err(Denied::Invalid);
                }
            },
        };
        Ok(Checked {
            claims,
            notice: self.notice,
        })
    }

    fn verified_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Claims>>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A public key and the algorithm it verifies: ES256 for a P-256 key, RS256 for an RSA key.
fn public_key(pem: &[u8]) -> anyhow::Result<(DecodingKey, Algorithm)> {
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    anyhow::bail!("not a PEM public key of type EC (P-256) or RSA")
}
