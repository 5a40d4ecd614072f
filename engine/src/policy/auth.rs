//! JWT authentication (HS256, RS256, ES256 via `jsonwebtoken`) and channel
//! permissions: token patterns first, then the namespace's defaults.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// `[auth]`: which keys verify tokens. With none set, connections are anonymous.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub hmac_secret: Option<String>,
    /// PEM file with the RS256 public key.
    pub rsa_public_key_file: Option<String>,
    /// PEM file with the ES256 (P-256) public key.
    pub ec_public_key_file: Option<String>,
    /// Refuse tokens without an `exp` claim (as invalid). On by default: a token
    /// without one never expires, so a leaked one works forever.
    pub exp_required: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret: None,
            rsa_public_key_file: None,
            ec_public_key_file: None,
            exp_required: true,
        }
    }
}

/// Per-namespace options (`[namespaces.<name>]`; the namespace of `chat:7` is `chat`,
/// channels without `:` use `[namespaces.""]` or the defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Namespace {
    /// Clients may publish when their token has no `publish` claim.
    pub client_publish: bool,
    /// Clients may subscribe when their token has no `subscribe` claim.
    pub client_subscribe: bool,
    /// Publications kept per channel for recovery (`since`) and `history`; 0: none.
    pub history_size: usize,
    /// How long a kept publication stays recoverable.
    pub history_ttl_ms: u64,
    /// Track members and push join/leave events; answer `presence`.
    pub presence: bool,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            client_publish: true,
            client_subscribe: true,
            history_size: 0,
            history_ttl_ms: 300_000,
            presence: false,
        }
    }
}

/// The claims shardcast reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// Channel patterns (`*` allowed at the end) this token may subscribe to.
    pub subscribe: Option<Vec<String>>,
    pub publish: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token, bad signature, wrong algorithm, malformed: close 4501 / error 101.
    Invalid,
    /// Signature fine but `exp` passed: close 4503 / error 109.
    Expired,
}

/// Verifies tokens; built once at start and shared read-only by the shards.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    exp_required: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.keys.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Verifier")
            .field("algorithms", &algs)
            .finish()
    }
}

impl Verifier {
    /// None when no key is configured (anonymous mode).
    pub fn from_config(c: &AuthConfig) -> Result<Option<Verifier>, String> {
        let mut keys = Vec::new();
        if let Some(s) = &c.hmac_secret {
            if s.is_empty() {
                return Err("auth.hmac_secret is empty".into());
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(s.as_bytes())));
        }
        let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
        if let Some(p) = &c.rsa_public_key_file {
            let k = DecodingKey::from_rsa_pem(&read(p)?).map_err(|e| format!("{p}: {e}"))?;
            keys.push((Algorithm::RS256, k));
        }
        if let Some(p) = &c.ec_public_key_file {
            let k = DecodingKey::from_ec_pem(&read(p)?).map_err(|e| format!("{p}: {e}"))?;
            keys.push((Algorithm::ES256, k));
        }
        let exp_required = c.exp_required;
        Ok((!keys.is_empty()).then_some(Verifier { keys, exp_required }))
    }

    /// Check the signature with the key of the token's algorithm, then `exp` (no
    /// leeway; a token without one is invalid unless `auth.exp_required = false`).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let (alg, key) = self
            .keys
            .iter()
            .find(|(a, _)| *a == header.alg)
            .ok_or(AuthError::Invalid)?;
        let mut v = Validation::new(*alg);
        v.leeway = 0;
        v.required_spec_claims.clear();
        if self.exp_required {
            v.required_spec_claims.insert("exp".to_string());
        }
        v.validate_aud = false;
        match jsonwebtoken::decode::<Claims>(token, key, &v) {
            Ok(d) => Ok(d.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid),
        }
    }
}

/// `pattern` is a channel name, or a prefix followed by `*`.
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// What a connection may do: its claims (if authenticated) over namespace defaults.
pub fn allowed(
    claims: Option<&Claims>,
    namespaces: &HashMap<String, Namespace>,
    channel: &str,
    publish: bool,
) -> bool {
    let patterns = claims.and_then(|c| {
        if publish {
            c.publish.as_ref()
        } else {
            c.subscribe.as_ref()
        }
    });
    if let Some(p) = patterns {
        return p.iter().any(|p| pattern_matches(p, channel));
    }
    let ns = namespaces.get(shardcast_proto::command::namespace(channel));
    let ns = ns.cloned().unwrap_or_default();
    if publish {
        ns.client_publish
    } else {
        ns.client_subscribe
    }
}

/// Whether a secret offered by a client equals the configured one, in a time
/// that depends only on their lengths: `==` stops at the first differing byte,
/// which lets a client find the API key byte by byte by timing the answers.
pub fn constant_time_eq(given: &[u8], want: &[u8]) -> bool {
    let mut diff = (given.len() != want.len()) as u8;
    for (i, g) in given.iter().enumerate() {
        // Cycling over `want` keeps the work proportional to what the client sent.
        let w = want.get(i % want.len().max(1)).copied().unwrap_or(0);
        diff |= g ^ w;
    }
    // Keep the optimizer from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"), "a prefix");
        assert!(
            !constant_time_eq(b"s3crets3cret", b"s3cret"),
            "a repetition"
        );
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"x", b""));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn tokens_need_exp_unless_allowed() {
        let claims = |exp: Option<u64>| {
            let body = match exp {
                Some(e) => format!(r#"{{"sub":"u","exp":{e}}}"#),
                None => r#"{"sub":"u"}"#.to_string(),
            };
            let key = jsonwebtoken::EncodingKey::from_secret(b"k");
            let header = jsonwebtoken::Header::new(Algorithm::HS256);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            jsonwebtoken::encode(&header, &value, &key).unwrap()
        };
        let mut cfg = AuthConfig {
            hmac_secret: Some("k".into()),
            ..AuthConfig::default()
        };
        let v = Verifier::from_config(&cfg).unwrap().unwrap();
        assert_eq!(v.verify(&claims(None)), Err(AuthError::Invalid));
        assert!(v.verify(&claims(Some(unix_now() + 60))).is_ok());
        cfg.exp_required = false;
        let v = Verifier::from_config(&cfg).unwrap().unwrap();
        assert_eq!(v.verify(&claims(None)).map(|c| c.exp), Ok(None));
        assert_eq!(
            v.verify(&claims(Some(unix_now() - 10))),
            Err(AuthError::Expired),
            "a present exp is still checked"
        );
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert!(pattern_matches("news", "news"));
        assert!(!pattern_matches("news", "news2"));
        assert!(pattern_matches("chat:*", "chat:7"));
        assert!(!pattern_matches("chat:*", "chats:7"));
        assert!(pattern_matches("*", "anything"));
    }

    #[test]
    fn claims_override_namespace_defaults() {
        let mut ns = HashMap::new();
        ns.insert(
            "ro".to_string(),
            Namespace {
                client_publish: false,
                ..Namespace::default()
            },
        );
        assert!(!allowed(None, &ns, "ro:1", true));
        assert!(allowed(None, &ns, "ro:1", false));
        assert!(allowed(None, &ns, "other:1", true));
        let c = Claims {
            subscribe: Some(vec!["a:*".into()]),
            ..Default::default()
        };
        assert!(allowed(Some(&c), &ns, "a:1", false));
        assert!(!allowed(Some(&c), &ns, "b:1", false));
        assert!(
            !allowed(Some(&c), &ns, "ro:1", true),
            "no publish claim: namespace decides"
        );
    }
}
