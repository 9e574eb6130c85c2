//! Relay API keys: generation, the CRS-compatible lookup hash, format checks, constant-time compare.

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in a generated key (rendered as twice as many hex chars).
pub const KEY_RANDOM_BYTES: usize = 32;

/// Longest candidate key accepted by [`looks_like_key`].
pub const MAX_KEY_LEN: usize = 256;

/// A fresh key: `prefix` followed by 64 lowercase hex chars (32 bytes from the OS RNG).
pub fn generate_key(prefix: &str) -> String {
    let mut bytes = [0u8; KEY_RANDOM_BYTES];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a key: `sha256_hex(plaintext + encryption_key)`, lowercase.
///
/// This is the CRS scheme, so keys imported from a CRS deployment (with the same
/// `ENCRYPTION_KEY`) keep authenticating.
pub fn hash_key(plaintext: &str, encryption_key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(plaintext.as_bytes());
    hasher.update(encryption_key.as_bytes());
    let digest = hasher.finalize();
    // Into a buffer of its final size: `hex::encode` collects chars one by one (about a
    // tenth of the relay's work to authenticate a request).
    let mut digits = [0u8; 64];
    hex::encode_to_slice(digest, &mut digits)
        .ok()
        .and_then(|()| std::str::from_utf8(&digits).ok())
        .map_or_else(|| hex::encode(digest), str::to_owned)
}

/// True when `candidate` has exactly the shape [`generate_key`] produces for `prefix`.
pub fn is_generated_key(candidate: &str, prefix: &str) -> bool {
    candidate.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == KEY_RANDOM_BYTES * 2 && rest.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Cheap format check done before the hash lookup (SPEC §5: present → format → lookup).
///
/// A candidate that starts with our `prefix` must be exactly prefix + 64 hex (a truncated
/// or mistyped key of ours is rejected without a lookup). Any other candidate (e.g. a key
/// imported from a deployment with another prefix) only has to be non-empty, at most
/// [`MAX_KEY_LEN`] bytes and visible ASCII (no spaces or control characters).
pub fn looks_like_key(candidate: &str, prefix: &str) -> bool {
    if candidate.is_empty()
        || candidate.len() > MAX_KEY_LEN
        || !candidate.bytes().all(|b| b.is_ascii_graphic())
    {
        return false;
    }
    if !prefix.is_empty() && candidate.starts_with(prefix) {
        return is_generated_key(candidate, prefix);
    }
    true
}

/// Constant-time equality of two byte strings (lengths may leak, contents do not).
pub fn constant_time_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    a.as_ref().ct_eq(b.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRS_ENCRYPTION_KEY: &str = "6b7a89ad42e87e5260ad52ef9f4ea936";
    /// Plaintext of `apikey:0f73964f-97b5-40e9-a692-1f3556a2e19a` in dataset-a.
    const CRS_KEY_PLAINTEXT: &str =
        "cr_26082269ce2ffafbef6da656a13c821e0d6ad9dc8c9d8d827ceb887c31d174ab";
    /// Its `apiKey` field (the stored hash) in dataset-a.json.
    const CRS_KEY_HASH: &str = "657e922b93681ec2f0c6a76fdc58bac85baf4a55a477f2d9be807e1d4d195650";

    #[test]
    fn hash_matches_crs_fixture() {
        assert_eq!(
            hash_key(CRS_KEY_PLAINTEXT, CRS_ENCRYPTION_KEY),
            CRS_KEY_HASH
        );
    }

    #[test]
    fn hash_depends_on_encryption_key_and_plaintext() {
        let other_key = "6b7a89ad42e87e5260ad52ef9f4ea937";
        assert_ne!(hash_key(CRS_KEY_PLAINTEXT, other_key), CRS_KEY_HASH);
        let mut other_plain = CRS_KEY_PLAINTEXT.to_owned();
        other_plain.pop();
        other_plain.push('c');
        assert_ne!(hash_key(&other_plain, CRS_ENCRYPTION_KEY), CRS_KEY_HASH);
    }

    #[test]
    fn hash_is_64_lowercase_hex() {
        let h = hash_key("x", "y");
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn generated_key_has_prefix_and_64_lowercase_hex() {
        let k = generate_key("cr_");
        assert!(k.starts_with("cr_"));
        let rest = &k[3..];
        assert_eq!(rest.len(), 64);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(is_generated_key(&k, "cr_"));
        assert!(looks_like_key(&k, "cr_"));
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate_key("cr_");
        let b = generate_key("cr_");
        assert_ne!(a, b);
    }

    #[test]
    fn generated_key_with_custom_and_empty_prefix() {
        let k = generate_key("sk-relay-");
        assert!(is_generated_key(&k, "sk-relay-"));
        assert!(!is_generated_key(&k, "cr_"));
        let bare = generate_key("");
        assert_eq!(bare.len(), 64);
        assert!(is_generated_key(&bare, ""));
    }

    #[test]
    fn strict_format_rejects_wrong_length_or_non_hex() {
        let k = generate_key("cr_");
        assert!(!is_generated_key(&k[..k.len() - 1], "cr_"));
        assert!(!is_generated_key(&format!("{k}0"), "cr_"));
        let mut bad = k;
        bad.replace_range(10..11, "g");
        assert!(!is_generated_key(&bad, "cr_"));
    }

    #[test]
    fn looks_like_key_rules() {
        // Our prefix: strict.
        assert!(looks_like_key(CRS_KEY_PLAINTEXT, "cr_"));
        assert!(!looks_like_key("cr_abc", "cr_"));
        assert!(!looks_like_key(&CRS_KEY_PLAINTEXT[..60], "cr_"));
        // Other prefixes (imported keys): lenient.
        assert!(looks_like_key("crs_custom_key_0123", "cr_"));
        assert!(looks_like_key(CRS_KEY_PLAINTEXT, "sk_"));
        // Always rejected.
        assert!(!looks_like_key("", "cr_"));
        assert!(!looks_like_key("has space", "cr_"));
        assert!(!looks_like_key("tab\tkey", "cr_"));
        assert!(!looks_like_key("newline\n", "cr_"));
        assert!(!looks_like_key("clé-non-ascii", "cr_"));
        assert!(looks_like_key(&"a".repeat(MAX_KEY_LEN), "cr_"));
        assert!(!looks_like_key(&"a".repeat(MAX_KEY_LEN + 1), "cr_"));
    }

    #[test]
    fn constant_time_eq_works_on_str_and_bytes() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(
            hash_key(CRS_KEY_PLAINTEXT, CRS_ENCRYPTION_KEY),
            CRS_KEY_HASH
        ));
    }
}
