//! Who is asking, without a round trip to the backend: a bearer token verified locally.
//! Two kinds are accepted (either or both may be configured):
//! - a short-lived HS256 JWT the backend mints with a secret shared with genq (`sub` = the
//!   user id, `exp` required, optional `gen` = the generation ids it may read, `aud` checked
//!   when `[events] jwt_audience` is set);
//! - the user's own Supabase Auth access token: ES256/RS256 against the project's JWKS, or
//!   HS256 with the project's legacy secret; `aud` must be `authenticated`.
//!
//! The algorithm a token's header names only picks which configured key to try; each key
//! verifies its own algorithm only (`jsonwebtoken` refuses a key of another family), so
//! `alg: none` and HS256 signed with a public key are refused. Errors never echo the token.

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use super::config::EventsConfig;
use super::jwks::{matching, JwksKeys};
use crate::outbound::Guarded;

/// Seconds of clock difference tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id (`sub`).
    pub user: String,
    /// The generations the token is limited to (`gen` claim of a backend token); `None`:
    /// every generation of the user.
    pub only: Option<Arc<HashSet<Uuid>>>,
}

impl Caller {
    /// Whether the token lets its holder read generation `id` (of this user).
    pub fn may_read(&self, id: Uuid) -> bool {
        self.only.as_ref().is_none_or(|ids| ids.contains(&id))
    }
}

/// Why a request carries no usable identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token at all.
    #[error("a bearer token is required (Authorization header or token query parameter)")]
    Missing,
    /// Malformed, expired, forged, or of a kind not configured.
    #[error("invalid token")]
    Invalid,
    /// The JWKS could not be fetched and no keys are cached.
    #[error("cannot verify tokens right now: the signing keys are unavailable")]
    KeysUnavailable,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    gen: Option<Vec<Uuid>>,
}

/// The configured verifiers.
pub struct Auth {
    backend: Option<(DecodingKey, Validation)>,
    supabase_secret: Option<(DecodingKey, Validation)>,
    supabase_jwks: Option<JwksKeys>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("backend", &self.backend.is_some())
            .field("supabase_secret", &self.supabase_secret.is_some())
            .field("supabase_jwks", &self.supabase_jwks.is_some())
            .finish()
    }
}

fn validation(alg: Algorithm, audience: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.set_required_spec_claims(&["exp", "sub"]);
    match audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        None => v.validate_aud = false,
    }
    v
}

/// Supabase puts `authenticated` in `aud` of a signed-in user's access token.
const SUPABASE_AUDIENCE: &str = "authenticated";

impl Auth {
    /// From `[events]`; `None` when nothing is configured (events are off).
    pub fn from_config(config: &EventsConfig, http: Guarded) -> anyhow::Result<Option<Self>> {
        let audience = (!config.jwt_audience.is_empty()).then_some(config.jwt_audience.as_str());
        let backend = config.jwt_secret()?.map(|secret| {
            (
                DecodingKey::from_secret(&secret),
                validation(Algorithm::HS256, audience),
            )
        });
        let supabase_secret = config.supabase_jwt_secret()?.map(|secret| {
            (
                DecodingKey::from_secret(&secret),
                validation(Algorithm::HS256, Some(SUPABASE_AUDIENCE)),
            )
        });
        let supabase_jwks = if config.supabase_jwks_url.is_empty() {
            None
        } else {
            Some(JwksKeys::new(
                &config.supabase_jwks_url,
                config.jwks_ttl,
                config.jwks_refetch_after,
                http,
            )?)
        };
        if backend.is_none() && supabase_secret.is_none() && supabase_jwks.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            backend,
            supabase_secret,
            supabase_jwks,
        }))
    }

    /// Verifies `token` and names its user.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        match header.alg {
            Algorithm::HS256 => {
                if let Some((key, v)) = &self.backend {
                    if let Ok(c) = decode(token, key, v) {
                        return Ok(c);
                    }
                }
                if let Some((key, v)) = &self.supabase_secret {
                    if let Ok(c) = decode(token, key, v) {
                        return Ok(Caller { only: None, ..c });
                    }
                }
                Err(AuthError::Invalid)
            }
            alg @ (Algorithm::ES256 | Algorithm::RS256) => {
                let jwks = self.supabase_jwks.as_ref().ok_or(AuthError::Invalid)?;
                let keys = jwks.find(alg, header.kid.as_deref()).await.map_err(|err| {
                    tracing::warn!(error = %err, "cannot verify a Supabase token: no keys");
                    AuthError::KeysUnavailable
                })?;
                let v = validation(alg, Some(SUPABASE_AUDIENCE));
                let verified = matching(&keys, alg, header.kid.as_deref())
                    .find_map(|k| decode(token, &k.key, &v).ok());
                verified
                    .map(|c| Caller { only: None, ..c })
                    .ok_or(AuthError::Invalid)
            }
            _ => Err(AuthError::Invalid),
        }
    }
}

fn decode(token: &str, key: &DecodingKey, v: &Validation) -> Result<Caller, ()> {
    let data = jsonwebtoken::decode::<Claims>(token, key, v).map_err(|_| ())?;
    let claims = data.claims;
    if claims.sub.is_empty() {
        return Err(());
    }
    Ok(Caller {
        user: claims.sub,
        only: claims.gen.map(|ids| Arc::new(ids.into_iter().collect())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"backend-shared-secret-for-tests";

    fn auth() -> Auth {
        Auth {
            backend: Some((
                DecodingKey::from_secret(SECRET),
                validation(Algorithm::HS256, None),
            )),
            supabase_secret: None,
            supabase_jwks: None,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn backend_tokens_name_the_user_and_their_generations() {
        let id = Uuid::new_v4();
        let t = token(json!({"sub": "u1", "exp": now() + 60, "gen": [id]}), SECRET);
        let caller = auth().verify(&t).await.unwrap();
        assert_eq!(caller.user, "u1");
        assert!(caller.may_read(id));
        assert!(!caller.may_read(Uuid::new_v4()));
        let t = token(json!({"sub": "u1", "exp": now() + 60}), SECRET);
        assert!(auth().verify(&t).await.unwrap().may_read(Uuid::new_v4()));
    }

    #[tokio::test]
    async fn bad_tokens_are_invalid() {
        let a = auth();
        let expired = token(json!({"sub": "u1", "exp": now() - 3600}), SECRET);
        let no_exp = token(json!({"sub": "u1"}), SECRET);
        let no_sub = token(json!({"exp": now() + 60}), SECRET);
        let empty_sub = token(json!({"sub": "", "exp": now() + 60}), SECRET);
        let wrong_key = token(json!({"sub": "u1", "exp": now() + 60}), b"another-secret");
        let bad_gen = token(
            json!({"sub": "u1", "exp": now() + 60, "gen": ["nope"]}),
            SECRET,
        );
        // alg none: a header and claims with an empty signature.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(json!({"sub": "u1", "exp": now() + 60}).to_string())
        );
        for t in [
            expired.as_str(),
            &no_exp,
            &no_sub,
            &empty_sub,
            &wrong_key,
            &bad_gen,
            &none,
            "not-a-jwt",
            "",
        ] {
            assert_eq!(a.verify(t).await, Err(AuthError::Invalid), "{t}");
        }
    }

    #[tokio::test]
    async fn an_audience_when_configured_is_required() {
        let a = Auth {
            backend: Some((
                DecodingKey::from_secret(SECRET),
                validation(Algorithm::HS256, Some("genq-events")),
            )),
            supabase_secret: None,
            supabase_jwks: None,
        };
        let right = token(
            json!({"sub": "u", "exp": now() + 60, "aud": "genq-events"}),
            SECRET,
        );
        let wrong = token(
            json!({"sub": "u", "exp": now() + 60, "aud": "other"}),
            SECRET,
        );
        let none = token(json!({"sub": "u", "exp": now() + 60}), SECRET);
        assert!(a.verify(&right).await.is_ok());
        assert_eq!(a.verify(&wrong).await, Err(AuthError::Invalid));
        assert_eq!(a.verify(&none).await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn supabase_legacy_secret_needs_the_authenticated_audience() {
        let a = Auth {
            backend: None,
            supabase_secret: Some((
                DecodingKey::from_secret(b"sb-secret"),
                validation(Algorithm::HS256, Some(SUPABASE_AUDIENCE)),
            )),
            supabase_jwks: None,
        };
        let id = Uuid::new_v4();
        let user = token(
            json!({"sub": "sb-user", "exp": now() + 60, "aud": "authenticated", "gen": [id]}),
            b"sb-secret",
        );
        let caller = a.verify(&user).await.unwrap();
        assert_eq!(caller.user, "sb-user");
        // A user cannot narrow or widen anything with claims of their own: `gen` is ignored.
        assert_eq!(caller.only, None);
        let anon = token(
            json!({"role": "anon", "exp": now() + 60, "aud": "authenticated"}),
            b"sb-secret",
        );
        assert_eq!(a.verify(&anon).await, Err(AuthError::Invalid));
        let other_aud = token(
            json!({"sub": "sb-user", "exp": now() + 60, "aud": "service"}),
            b"sb-secret",
        );
        assert_eq!(a.verify(&other_aud).await, Err(AuthError::Invalid));
        // ES256 tokens need a JWKS, which is not configured.
        let es = format!(
            "{}.e30.sig",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"ES256"}"#
            )
        );
        assert_eq!(a.verify(&es).await, Err(AuthError::Invalid));
    }
}
