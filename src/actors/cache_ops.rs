//! The Redis commands of the program, as typed operations on `CacheHandle`.

use redis::AsyncCommands;

use super::cache::CacheHandle;
use crate::error::CacheError;

impl CacheHandle {
    /// PING; the round trip time.
    pub async fn ping(&self) -> Result<std::time::Duration, CacheError> {
        let started = std::time::Instant::now();
        self.exec(|mut c| Box::pin(async move { redis::cmd("PING").query_async::<String>(&mut c).await }))
            .await?;
        Ok(started.elapsed())
    }

    /// Stores the operator account (redis mode) unless it exists; true when created.
    pub async fn insert_admin_if_missing(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<bool, CacheError> {
        let key = self.keys.admin_user(username);
        let value = serde_json::json!({
            "username": username,
            "passwordHash": password_hash,
            "createdAt": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        self.exec(move |mut c| Box::pin(async move { c.set_nx(key, value).await }))
            .await
    }
}
