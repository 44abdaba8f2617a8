//! Webhook signing pieces shared by the fake provider (which signs) and webhook
//! verification (which checks): pure functions, no I/O, no clock.
//!
//! - fal: Ed25519 over [`fal_message`], hex in `X-Fal-Webhook-Signature`, checked against
//!   each key of fal's JWKS (`keys[].x`, base64url without padding).
//! - Replicate: Standard Webhooks, [`standard_webhooks_sign`]: `v1,` + base64 of
//!   HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed with the base64-decoded secret
//!   (after `whsec_`); `webhook-signature` may hold several, space separated.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The bytes fal signs: `request_id \n user_id \n timestamp \n hex(sha256(body))`.
pub fn fal_message(request_id: &str, user_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "{request_id}\n{user_id}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// Whether `signature_hex` (fal's `X-Fal-Webhook-Signature`) is a valid Ed25519 signature
/// of `message` by the key whose JWKS `x` is `x_base64url`. Malformed input is `false`.
pub fn fal_verify(x_base64url: &str, message: &[u8], signature_hex: &str) -> bool {
    let Some(key) = URL_SAFE_NO_PAD
        .decode(x_base64url.trim_end_matches('='))
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
    else {
        return false;
    };
    let Some(sig) = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
    else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(&sig)).is_ok()
}

/// The key bytes of a Standard Webhooks secret: base64 after an optional `whsec_`.
pub fn standard_webhooks_key(secret_whsec: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let b64 = secret_whsec.strip_prefix("whsec_").unwrap_or(secret_whsec);
    STANDARD.decode(b64)
}

/// One Standard Webhooks signature, `v1,<base64>`, of `body` sent as message `id` at
/// `timestamp` (Unix seconds, as sent in `webhook-timestamp`). A secret that is not
/// valid base64 is used as raw bytes (never the case for a `whsec_` secret).
pub fn standard_webhooks_sign(
    secret_whsec: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    let key = standard_webhooks_key(secret_whsec).unwrap_or_else(|_| {
        secret_whsec
            .strip_prefix("whsec_")
            .unwrap_or(secret_whsec)
            .as_bytes()
            .to_vec()
    });
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Whether any `v1,<base64>` signature in `header` (Standard Webhooks `webhook-signature`,
/// space separated; several during a secret rotation) signs `id.timestamp.body` under
/// `secret_whsec`. Compared in constant time; malformed entries are skipped.
pub fn standard_webhooks_verify(
    secret_whsec: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    let Ok(key) = standard_webhooks_key(secret_whsec) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    header.split_whitespace().any(|candidate| {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            return false;
        };
        match STANDARD.decode(b64) {
            Ok(sig) => mac.clone().verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    })
}

/// The token of a BytePlus callback URL: hex of HMAC-SHA256 of the generation id (its
/// hyphenated lowercase form) under the server's secret.
pub fn callback_token(secret: &[u8], generation_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(generation_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `token_hex` is [`callback_token`] of `generation_id`, compared in constant time.
pub fn callback_token_valid(secret: &[u8], generation_id: &str, token_hex: &str) -> bool {
    let Ok(token) = hex::decode(token_hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(generation_id.as_bytes());
    mac.verify_slice(&token).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn standard_webhooks_test_vector() {
        let sig = standard_webhooks_sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn standard_webhooks_verify_accepts_any_listed_signature() {
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let (id, ts) = ("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", "1649367553");
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let good = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        assert!(standard_webhooks_verify(secret, id, ts, body, good));
        let rotated = format!("v1,AAAA v1,bm90LWEtc2ln {good}");
        assert!(standard_webhooks_verify(secret, id, ts, body, &rotated));
        assert!(!standard_webhooks_verify(
            secret,
            id,
            "1649367554",
            body,
            good
        ));
        assert!(!standard_webhooks_verify(secret, id, ts, b"{}", good));
        assert!(!standard_webhooks_verify(
            secret,
            id,
            ts,
            body,
            "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        ));
        assert!(!standard_webhooks_verify(secret, id, ts, body, ""));
    }

    #[test]
    fn callback_tokens() {
        let t = callback_token(b"k", "abc");
        assert_eq!(t.len(), 64);
        assert!(callback_token_valid(b"k", "abc", &t));
        assert!(!callback_token_valid(b"k", "abd", &t));
        assert!(!callback_token_valid(b"j", "abc", &t));
        assert!(!callback_token_valid(b"k", "abc", "zz"));
    }

    #[test]
    fn fal_message_layout() {
        let m = fal_message("req", "user", "1700000000", b"");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "req\nuser\n1700000000\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn fal_signature_round_trip() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let msg = fal_message("r", "u", "1", b"{}");
        let sig = hex::encode(key.sign(&msg).to_bytes());
        assert!(fal_verify(&x, &msg, &sig));
        assert!(!fal_verify(&x, &fal_message("r", "u", "2", b"{}"), &sig));
        assert!(!fal_verify(&x, &msg, "zz"));
        assert!(!fal_verify("not-a-key", &msg, &sig));
    }
}
