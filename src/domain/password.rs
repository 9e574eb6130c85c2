//! Operator password hashing: argon2 for ours; bcrypt hashes imported from CRS verify too.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// An argon2id PHC string for `password`.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// True when `stored` is a bcrypt hash (`$2a$`, `$2b$`, `$2y$`), as CRS stores them.
pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// True when `password` matches `stored`: an argon2 PHC string (ours) or a bcrypt hash
/// imported from CRS (kept as is, so the CRS admin password keeps working).
pub fn verify(password: &str, stored: &str) -> bool {
    if is_bcrypt(stored) {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `session:admin_credentials` of the CRS fixture data set A.
    const CRS_HASH: &str = "$2a$10$SLcuiRprGjj4ADiU7O1eXuTw2/jgCVHgCMZb/krUXBD63tGKswtxK";

    #[test]
    fn crs_bcrypt_hash_verifies() {
        assert!(verify("IaCydcUuMYWtSHnF2N", CRS_HASH));
        assert!(!verify("IaCydcUuMYWtSHnF2n", CRS_HASH));
    }

    #[test]
    fn argon2_still_verifies_and_garbage_does_not() {
        let h = hash("s3cret").unwrap();
        assert!(verify("s3cret", &h));
        assert!(!verify("other", &h));
        assert!(!verify("s3cret", "not a hash"));
        assert!(!verify("s3cret", "$2b$garbage"));
    }
}
