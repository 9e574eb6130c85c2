//! Credential encryption at rest (AES-256-GCM, `v1:` format) and decryption of CRS secrets.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use zeroize::Zeroizing;

/// Version tag of the sealed format produced by [`CredentialCipher::seal`].
const SEALED_V1: &str = "v1";
/// AES-GCM nonce length in bytes (96 bits).
const NONCE_LEN: usize = 12;
/// AES block size, also the CBC IV length.
const AES_BLOCK: usize = 16;

/// Salt CRS uses for `claude:account:*` secrets (`accessToken`, `refreshToken`, …).
pub const CRS_SALT_OAUTH: &str = "salt";
/// Salt CRS uses for the `apiKey` of `claude_console_account:*`.
pub const CRS_SALT_CONSOLE: &str = "claude-console-salt";

/// Why sealing or opening a credential failed. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The encryption key is not exactly 32 bytes.
    #[error("encryption key must be 32 bytes, got {0}")]
    InvalidKeyLength(usize),
    /// The value is not `v1:<base64 nonce>:<base64 ciphertext>`.
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
    /// The value carries a version tag this build does not know.
    #[error("sealed value has unsupported version")]
    UnsupportedVersion,
    /// Authentication failed: wrong key, or the value was tampered with.
    #[error("sealed value failed authentication (wrong key or tampered)")]
    Authentication,
    /// Encryption itself failed (should not happen for in-memory strings).
    #[error("encryption failed")]
    Encryption,
    /// The decrypted bytes are not UTF-8.
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
}

/// AES-256-GCM cipher for credentials at rest, keyed by the raw 32-byte `ENCRYPTION_KEY`.
#[derive(Clone)]
pub struct CredentialCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCipher { .. }")
    }
}

impl CredentialCipher {
    /// A cipher whose key is the bytes of `encryption_key`, which must be exactly 32 bytes.
    pub fn new(encryption_key: &str) -> Result<Self, CryptoError> {
        let cipher = Aes256Gcm::new_from_slice(encryption_key.as_bytes())
            .map_err(|_| CryptoError::InvalidKeyLength(encryption_key.len()))?;
        Ok(Self { cipher })
    }

    /// Encrypt `plaintext` under a fresh random 96-bit nonce: `v1:<b64 nonce>:<b64 ciphertext+tag>`.
    pub fn seal(&self, plaintext: &str) -> Result<String, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| CryptoError::Encryption)?;
        Ok(format!(
            "{SEALED_V1}:{}:{}",
            B64.encode(nonce),
            B64.encode(ciphertext)
        ))
    }

    /// Decrypt a value produced by [`seal`](Self::seal); any modification is rejected.
    pub fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        let mut parts = sealed.split(':');
        let (Some(version), Some(nonce_b64), Some(ct_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Malformed("expected 3 ':'-separated parts"));
        };
        if version != SEALED_V1 {
            return Err(CryptoError::UnsupportedVersion);
        }
        let nonce = B64
            .decode(nonce_b64)
            .map_err(|_| CryptoError::Malformed("nonce is not base64"))?;
        if nonce.len() != NONCE_LEN {
            return Err(CryptoError::Malformed("nonce is not 96 bits"));
        }
        let ciphertext = B64
            .decode(ct_b64)
            .map_err(|_| CryptoError::Malformed("ciphertext is not base64"))?;
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .map_err(|_| CryptoError::Authentication)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::NotUtf8)
    }

    /// True when `value` has the shape of a sealed value (it may still fail to open).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with("v1:") && value.matches(':').count() == 2
    }
}

/// Why a CRS secret could not be decrypted. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrsDecryptError {
    /// The value has no `:`: CRS stored it unencrypted (older format); import it as is.
    #[error("value is not in CRS encrypted form (no ':')")]
    NotEncrypted,
    /// The value is not `<32 hex iv>:<hex ciphertext, a multiple of 16 bytes>`.
    #[error("CRS encrypted value is malformed: {0}")]
    Malformed(&'static str),
    /// Key derivation failed (parameters rejected by scrypt).
    #[error("scrypt key derivation failed")]
    KeyDerivation,
    /// Padding check failed: wrong `ENCRYPTION_KEY`, wrong salt or corrupted value.
    #[error("CRS value did not decrypt (wrong ENCRYPTION_KEY or salt?)")]
    Decrypt,
    /// The decrypted bytes are not UTF-8 (almost certainly a wrong key).
    #[error("CRS value decrypted to non-UTF-8 bytes (wrong ENCRYPTION_KEY?)")]
    NotUtf8,
}

/// Decrypts CRS secrets for one (`ENCRYPTION_KEY`, salt) pair.
///
/// CRS derives its AES-256-CBC key with `scrypt(ENCRYPTION_KEY, salt, N=16384, r=8, p=1,
/// len=32)` (Node `scryptSync` defaults). scrypt is deliberately slow, so the key is derived
/// once in [`new`](Self::new) and kept (zeroized on drop).
#[derive(Clone)]
pub struct CrsDecryptor {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for CrsDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrsDecryptor { .. }")
    }
}

impl CrsDecryptor {
    /// Derive the CRS key for `encryption_key` and `salt` (e.g. [`CRS_SALT_OAUTH`]).
    pub fn new(encryption_key: &str, salt: &str) -> Result<Self, CrsDecryptError> {
        // N = 2^14 = 16384.
        let params =
            scrypt::Params::new(14, 8, 1, 32).map_err(|_| CrsDecryptError::KeyDerivation)?;
        let mut key = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(
            encryption_key.as_bytes(),
            salt.as_bytes(),
            &params,
            key.as_mut(),
        )
        .map_err(|_| CrsDecryptError::KeyDerivation)?;
        Ok(Self { key })
    }

    /// Decrypt `"<iv hex>:<ciphertext hex>"` (AES-256-CBC, PKCS#7) to its UTF-8 plaintext.
    pub fn decrypt(&self, value: &str) -> Result<String, CrsDecryptError> {
        let Some((iv_hex, ct_hex)) = value.split_once(':') else {
            return Err(CrsDecryptError::NotEncrypted);
        };
        let iv = hex::decode(iv_hex).map_err(|_| CrsDecryptError::Malformed("iv is not hex"))?;
        if iv.len() != AES_BLOCK {
            return Err(CrsDecryptError::Malformed("iv is not 16 bytes"));
        }
        let mut buf =
            hex::decode(ct_hex).map_err(|_| CrsDecryptError::Malformed("ciphertext is not hex"))?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(CrsDecryptError::Malformed(
                "ciphertext is not a non-empty multiple of 16 bytes",
            ));
        }
        let decryptor = cbc::Decryptor::<aes::Aes256>::new_from_slices(self.key.as_ref(), &iv)
            .map_err(|_| CrsDecryptError::Malformed("iv is not 16 bytes"))?;
        let plain_len = decryptor
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| CrsDecryptError::Decrypt)?
            .len();
        buf.truncate(plain_len);
        String::from_utf8(buf).map_err(|_| CrsDecryptError::NotUtf8)
    }
}

/// One-shot CRS decryption; derives the key each call (slow: prefer [`CrsDecryptor`]).
pub fn crs_decrypt(
    value: &str,
    encryption_key: &str,
    salt: &str,
) -> Result<String, CrsDecryptError> {
    CrsDecryptor::new(encryption_key, salt)?.decrypt(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// `ENCRYPTION_KEY` of CRS fixture dataset-a.
    const CRS_KEY: &str = "6b7a89ad42e87e5260ad52ef9f4ea936";
    /// `accessToken` of `claude:account:18f71ec8-3f65-4595-a85e-6118e946f02a` in dataset-a.json.
    const CRS_OAUTH_ACCESS_TOKEN: &str = "11cc17ef53d678d4a565480280816074:3ff4d569d607944958764e181ecc59b04af2a2eaf3e1ad9473dc91c2c794d914b7fc23e85f2a048201745336aaee0e1ccaff11597712f5ef90f3c434727f3531";
    /// `refreshToken` of the same account.
    const CRS_OAUTH_REFRESH_TOKEN: &str = "0bce8d9bfd58604bf8e41ff97b0c8808:501ac7233b31743be377756951cc03370db80f3a02736e5bab63bc8f5cc4ce04b0a2088654fc5386386d4a4859526671b0b66338b208d74f0dfe64e9f1268315";
    /// `email` of the same account.
    const CRS_OAUTH_EMAIL: &str = "b42c7866b42ba689f1eccd389247904e:b9795f5c94324de90504c4abf60d1286c6d69eefcfb805e833e55e96ea7b02d0";
    /// `apiKey` of `claude_console_account:cf4b5613-2155-415f-b30b-5fbc6d78b181` in dataset-a.json.
    const CRS_CONSOLE_API_KEY: &str = "a2dc1d847d83ca997d37ecdc2f5e51dc:b6dc01569699f98c046496cb8a48096cea16d4cbc87e4564eb64670b9549029de2858dbde60b27f6aab947e191349a51490f5023fa60a10f5ac6ba4312a0b336";

    /// scrypt is slow in debug builds: derive each fixture key once for all tests.
    fn oauth() -> &'static CrsDecryptor {
        static D: OnceLock<CrsDecryptor> = OnceLock::new();
        D.get_or_init(|| CrsDecryptor::new(CRS_KEY, CRS_SALT_OAUTH).unwrap())
    }

    fn console() -> &'static CrsDecryptor {
        static D: OnceLock<CrsDecryptor> = OnceLock::new();
        D.get_or_init(|| CrsDecryptor::new(CRS_KEY, CRS_SALT_CONSOLE).unwrap())
    }

    #[test]
    fn seal_open_round_trip() {
        let c = CredentialCipher::new(KEY).unwrap();
        for text in ["", "sk-ant-oat01-secret", "ünïcødé ✓", &"x".repeat(10_000)] {
            let sealed = c.seal(text).unwrap();
            assert!(sealed.starts_with("v1:"));
            assert!(CredentialCipher::is_sealed(&sealed));
            assert!(!sealed.contains(text) || text.is_empty());
            assert_eq!(c.open(&sealed).unwrap(), text);
        }
    }

    #[test]
    fn seal_uses_fresh_nonce() {
        let c = CredentialCipher::new(KEY).unwrap();
        let a = c.seal("same").unwrap();
        let b = c.seal("same").unwrap();
        assert_ne!(a, b);
        let nonce = a.split(':').nth(1).unwrap();
        assert_eq!(B64.decode(nonce).unwrap().len(), NONCE_LEN);
    }

    #[test]
    fn key_must_be_32_bytes() {
        assert_eq!(
            CredentialCipher::new("short").unwrap_err(),
            CryptoError::InvalidKeyLength(5)
        );
        // 32 chars but 33 bytes.
        let multibyte = format!("é{}", &KEY[..31]);
        assert_eq!(
            CredentialCipher::new(&multibyte).unwrap_err(),
            CryptoError::InvalidKeyLength(33)
        );
    }

    #[test]
    fn open_rejects_wrong_key() {
        let sealed = CredentialCipher::new(KEY).unwrap().seal("secret").unwrap();
        let other = CredentialCipher::new("fedcba9876543210fedcba9876543210").unwrap();
        assert_eq!(
            other.open(&sealed).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn open_rejects_tampering_anywhere() {
        let c = CredentialCipher::new(KEY).unwrap();
        let sealed = c.seal("secret-token").unwrap();
        let parts: Vec<&str> = sealed.split(':').collect();
        let mut nonce = B64.decode(parts[1]).unwrap();
        let ct = B64.decode(parts[2]).unwrap();
        // Flip each ciphertext/tag bit position (one bit per byte) and each nonce byte.
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            let v = format!("v1:{}:{}", parts[1], B64.encode(&bad));
            assert_eq!(c.open(&v).unwrap_err(), CryptoError::Authentication);
        }
        nonce[0] ^= 0x80;
        let v = format!("v1:{}:{}", B64.encode(&nonce), parts[2]);
        assert_eq!(c.open(&v).unwrap_err(), CryptoError::Authentication);
        // Truncated ciphertext.
        let v = format!("v1:{}:{}", parts[1], B64.encode(&ct[..ct.len() - 1]));
        assert_eq!(c.open(&v).unwrap_err(), CryptoError::Authentication);
    }

    #[test]
    fn open_rejects_malformed() {
        let c = CredentialCipher::new(KEY).unwrap();
        assert!(matches!(
            c.open("plaintext"),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(c.open("v1:a:b:c"), Err(CryptoError::Malformed(_))));
        assert!(matches!(
            c.open("v1:!!:AAAA"),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            c.open("v1:AAAA:AAAA"),
            Err(CryptoError::Malformed(_))
        ));
        assert_eq!(
            c.open("v2:AAAAAAAAAAAAAAAA:AAAA").unwrap_err(),
            CryptoError::UnsupportedVersion
        );
        assert!(!CredentialCipher::is_sealed("sk-ant-plain"));
    }

    #[test]
    fn debug_does_not_print_keys() {
        let c = CredentialCipher::new(KEY).unwrap();
        assert_eq!(format!("{c:?}"), "CredentialCipher { .. }");
        assert_eq!(format!("{:?}", oauth()), "CrsDecryptor { .. }");
    }

    #[test]
    fn crs_oauth_fields_decrypt_to_fixture_plaintext() {
        assert_eq!(
            oauth().decrypt(CRS_OAUTH_ACCESS_TOKEN).unwrap(),
            "sk-ant-oat01-FIXTURE-20f8616393077e89e97601adca898e317dac80bd"
        );
        assert_eq!(
            oauth().decrypt(CRS_OAUTH_REFRESH_TOKEN).unwrap(),
            "sk-ant-ort01-FIXTURE-0b1827706703fdd9023f2d22cd2ba5c6438945f2"
        );
        assert_eq!(
            oauth().decrypt(CRS_OAUTH_EMAIL).unwrap(),
            "fixture.primary@example.com"
        );
    }

    #[test]
    fn crs_console_api_key_decrypts_to_fixture_plaintext() {
        assert_eq!(
            console().decrypt(CRS_CONSOLE_API_KEY).unwrap(),
            "sk-fixture-console-85977d8c93e4cb6875d5a416fbcc14f4"
        );
    }

    #[test]
    fn crs_one_shot_matches_cached() {
        assert_eq!(
            crs_decrypt(CRS_CONSOLE_API_KEY, CRS_KEY, CRS_SALT_CONSOLE).unwrap(),
            "sk-fixture-console-85977d8c93e4cb6875d5a416fbcc14f4"
        );
    }

    #[test]
    fn crs_wrong_salt_or_key_is_an_error_not_garbage() {
        // Console value under the OAuth salt and vice versa.
        assert!(matches!(
            oauth().decrypt(CRS_CONSOLE_API_KEY),
            Err(CrsDecryptError::Decrypt | CrsDecryptError::NotUtf8)
        ));
        assert!(matches!(
            console().decrypt(CRS_OAUTH_ACCESS_TOKEN),
            Err(CrsDecryptError::Decrypt | CrsDecryptError::NotUtf8)
        ));
        // A different ENCRYPTION_KEY.
        assert!(matches!(
            crs_decrypt(
                CRS_OAUTH_ACCESS_TOKEN,
                "00000000000000000000000000000000",
                CRS_SALT_OAUTH
            ),
            Err(CrsDecryptError::Decrypt | CrsDecryptError::NotUtf8)
        ));
    }

    #[test]
    fn crs_malformed_values() {
        let d = oauth();
        assert_eq!(
            d.decrypt("sk-ant-plaintext").unwrap_err(),
            CrsDecryptError::NotEncrypted
        );
        assert!(matches!(
            d.decrypt("zz:00"),
            Err(CrsDecryptError::Malformed(_))
        ));
        assert!(matches!(
            d.decrypt("0011:00112233445566778899aabbccddeeff"),
            Err(CrsDecryptError::Malformed(_))
        ));
        let iv = "00112233445566778899aabbccddeeff";
        assert!(matches!(
            d.decrypt(&format!("{iv}:")),
            Err(CrsDecryptError::Malformed(_))
        ));
        assert!(matches!(
            d.decrypt(&format!("{iv}:0011")),
            Err(CrsDecryptError::Malformed(_))
        ));
        assert!(matches!(
            d.decrypt(&format!("{iv}:xyz")),
            Err(CrsDecryptError::Malformed(_))
        ));
    }

    #[test]
    fn crs_tampered_last_block_fails() {
        // Flipping the last ciphertext byte garbles the padding block.
        let (iv, ct) = CRS_CONSOLE_API_KEY.split_once(':').unwrap();
        let mut bytes = hex::decode(ct).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let v = format!("{iv}:{}", hex::encode(bytes));
        assert!(matches!(
            console().decrypt(&v),
            Err(CrsDecryptError::Decrypt | CrsDecryptError::NotUtf8)
        ));
    }
}
