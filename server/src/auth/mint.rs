//! `ssepush token`: signs a token for development and scripts, with the key the server checks.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::{path::PathBuf, time::Duration};

use super::{Claims, MIN_SECRET_BYTES, Users};

#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user the token is for (`sub`): it may read this user's streams.
    #[arg(long)]
    pub user: Option<String>,
    /// More users whose streams it may read; `*` for everyone (repeatable).
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// Users it may publish to; `*` for everyone (repeatable).
    #[arg(long)]
    pub publish: Vec<String>,
    /// How long it is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The server's HS256 secret.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// A private key (PEM, PKCS#8) for ES256 (P-256) or RS256 (RSA) tokens, the pair of the
    /// server's --auth-public-key.
    #[arg(long, env = "AUTH_PRIVATE_KEY", conflicts_with = "auth_secret")]
    pub auth_private_key: Option<PathBuf>,
}

/// The signed token `args` describe.
pub fn token(args: &TokenArgs) -> anyhow::Result<String> {
    if args.user.is_none() && args.subscribe.is_empty() && args.publish.is_empty() {
        anyhow::bail!("a token needs --user, --subscribe or --publish");
    }
    for name in args.user.iter().chain(&args.subscribe).chain(&args.publish) {
        if name != "*" {
            wire::validate_username(name).map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
        }
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: args.user.clone(),
        subscribe: Users(args.subscribe.clone()),
        publish: Users(args.publish.clone()),
        exp: now + args.ttl.as_secs(),
        nbf: None,
        iat: Some(now),
    };
    let (key, algorithm) = match (&args.auth_secret, &args.auth_private_key) {
        (Some(secret), _) => {
            if secret.len() < MIN_SECRET_BYTES {
                anyhow::bail!("--auth-secret must be at least {MIN_SECRET_BYTES} bytes");
            }
            (
                EncodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        }
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            private_key(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        (None, None) => {
            anyhow::bail!("no key: give --auth-secret (or AUTH_SECRET) or --auth-private-key")
        }
    };
    Ok(jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &key,
    )?)
}

fn private_key(pem: &[u8]) -> anyhow::Result<(EncodingKey, Algorithm)> {
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    anyhow::bail!("not a PEM private key of type EC (P-256, PKCS#8) or RSA")
}
