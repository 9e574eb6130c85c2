//! One relayed request's usage as it is counted and archived.

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, Utc};
use serde::{Deserialize, Serialize};

/// The usage of one request (SPEC §7). `request_id` makes archiving idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEvent {
    pub request_id: String,
    /// The upstream's own id of the request (its `request-id` header), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_request_id: Option<String>,
    pub api_key_id: String,
    pub account_id: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_create_5m_tokens: i64,
    pub cache_create_1h_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_micros: i64,
    pub status_code: u16,
    pub is_stream: bool,
    pub latency_ms: u32,
    pub created_at: DateTime<Utc>,
}

impl UsageEvent {
    pub fn cache_create_tokens(&self) -> i64 {
        self.cache_create_5m_tokens + self.cache_create_1h_tokens
    }

    /// Every token of the request.
    pub fn total_tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens + self.cache_create_tokens() + self.cache_read_tokens
    }

    /// Local time in the deployment's `TIMEZONE_OFFSET` (day and month buckets).
    pub fn local_time(&self, offset_hours: i32) -> DateTime<FixedOffset> {
        let offset = FixedOffset::east_opt(offset_hours * 3600).unwrap_or_else(|| Utc.fix());
        self.created_at.with_timezone(&offset)
    }

    pub fn local_date(&self, offset_hours: i32) -> NaiveDate {
        self.local_time(offset_hours).date_naive()
    }
}

/// Local date at `now` for the offset (buckets of limits and reports).
pub fn local_date(now: DateTime<Utc>, offset_hours: i32) -> NaiveDate {
    let offset = FixedOffset::east_opt(offset_hours * 3600).unwrap_or_else(|| Utc.fix());
    now.with_timezone(&offset).date_naive()
}
