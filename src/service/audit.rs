//! Who is acting (`AdminContext`) and the audit entries their changes leave behind.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::actors::router::RouterHandle;
use crate::config::Config;
use crate::domain::audit::{AuditEntry, mask_secrets};

/// One authenticated admin request: the router, the configuration, who and from where.
#[derive(Clone)]
pub struct AdminContext {
    pub router: RouterHandle,
    pub config: Arc<Config>,
    /// Operator name, or `admin-token` for the static token.
    pub actor: String,
    pub client_addr: String,
}

/// A record's public view as audit JSON, secrets masked.
pub fn snapshot<T: Serialize>(view: &T) -> Value {
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    mask_secrets(&mut v);
    v
}

impl AdminContext {
    /// Appends an audit entry for a change that has been committed. A failure to write it
    /// is logged (the change itself stands).
    pub async fn audit(
        &self,
        action: &str,
        target_type: &str,
        target_id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let entry = AuditEntry {
            id: 0,
            actor: self.actor.clone(),
            action: action.to_string(),
            target_type: target_type.to_string(),
            target_id: target_id.to_string(),
            before,
            after,
            client_addr: self.client_addr.clone(),
            created_at: chrono::Utc::now(),
        };
        if let Err(e) = self.router.record_audit(entry).await {
            log::warn!("audit entry {action} {target_type} {target_id} not written: {e}");
        }
    }
}
