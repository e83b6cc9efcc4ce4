//! Webhook signatures: hex HMAC-SHA1 of the signed bytes, compared in constant time.
//!
//! Segment's Webhooks destination signs the JSON of the event (`X-Signature`); in batch mode it
//! signs only the first element of the array (`JSON.stringify(body[0])`), whose exact bytes are
//! the first element's slice of the raw body. Intercom's `X-Hub-Signature` is the same HMAC of
//! the whole body behind a `sha1=` prefix, which the reverse-direction work will reuse.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Hex HMAC-SHA1 of `message` under `secret`.
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// True when `signature_hex` is the HMAC-SHA1 of `message` under `secret`. A malformed hex
/// string is simply a wrong signature.
pub fn verify(secret: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(expected) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vector(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../../tests/fixtures/webhook-signature/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn segment_vectors_verify() {
        for name in ["single.json", "batch.json"] {
            let v = vector(name);
            let secret = v["shared_secret"].as_str().unwrap().as_bytes();
            let raw = v["raw_body"].as_str().unwrap();
            let signed =
                junction_model::first_array_element(raw.as_bytes()).map_or(raw, |(first, _)| first);
            let expected = v["expected_x_signature"].as_str().unwrap();
            assert_eq!(sign(secret, signed.as_bytes()), expected, "{name}");
            assert!(verify(secret, signed.as_bytes(), expected), "{name}");
            assert!(
                !verify(b"wrong-secret", signed.as_bytes(), expected),
                "{name}"
            );
            let tampered = signed.replacen("u1", "u2", 1);
            assert!(!verify(secret, tampered.as_bytes(), expected), "{name}");
        }
    }

    proptest! {
        #[test]
        fn a_signature_verifies_only_its_own_message(
            secret in proptest::collection::vec(any::<u8>(), 0..80),
            message in proptest::collection::vec(any::<u8>(), 0..200),
            flip in any::<usize>(),
        ) {
            let signature = sign(&secret, &message);
            prop_assert!(verify(&secret, &message, &signature));
            prop_assert!(verify(&secret, &message, &signature.to_uppercase()));
            if !message.is_empty() {
                let mut changed = message.clone();
                changed[flip % message.len()] ^= 1;
                prop_assert!(!verify(&secret, &changed, &signature));
            }
            prop_assert!(!verify(&secret, &message, "zz"));
        }
    }
}
