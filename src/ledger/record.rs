//! One journal record: a usage event and what is needed to derive its counter updates,
//! framed as `[payload length u32 LE][crc32 of payload u32 LE][payload JSON]`.

use serde::{Deserialize, Serialize};

use crate::domain::limits::{self, CounterUpdate, RateWindowName};
use crate::domain::usage_event::UsageEvent;

/// Bytes before the payload: length and checksum.
pub const HEADER_BYTES: usize = 8;
/// A record longer than this is corruption, not data (an event is a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The inputs of `limits::counter_updates` besides the event and the time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CounterContext {
    /// The model counts toward the weekly Opus limit.
    #[serde(rename = "o", default, skip_serializing_if = "std::ops::Not::not")]
    pub opus: bool,
    /// The key's weekly reset (day 1–7, hour).
    #[serde(rename = "w")]
    pub weekly_reset: (u8, u8),
    /// The rate window the request was admitted in: counter name and lifetime.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub rate_window: Option<(String, u64)>,
}

/// One journaled event with its sequence number (per journal, gap-free, increasing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    #[serde(rename = "s")]
    pub seq: u64,
    #[serde(rename = "e")]
    pub event: UsageEvent,
    #[serde(rename = "c")]
    pub counters: CounterContext,
}

impl CounterContext {
    /// The rate window as `limits::counter_updates` takes it.
    pub fn rate_window_name(&self) -> Option<RateWindowName> {
        self.rate_window
            .as_ref()
            .map(|(name, ttl_seconds)| RateWindowName {
                name: name.clone(),
                ttl_seconds: *ttl_seconds,
                resets_in_seconds: 0,
            })
    }
}

impl JournalRecord {
    /// Every counter set the event adds to.
    pub fn counter_updates(&self, offset_hours: i32) -> Vec<CounterUpdate> {
        limits::counter_updates(
            &self.event,
            offset_hours,
            self.counters.opus,
            self.counters.weekly_reset,
            self.counters.rate_window_name().as_ref(),
        )
    }

    /// The framed bytes of the record.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        encode(self.seq, &self.event, &self.counters)
    }
}

/// A record as written, borrowing its parts (the hot path copies no event to journal it).
#[derive(Serialize)]
struct RecordRef<'a> {
    #[serde(rename = "s")]
    seq: u64,
    #[serde(rename = "e")]
    event: &'a UsageEvent,
    #[serde(rename = "c")]
    counters: &'a CounterContext,
}

/// The framed bytes of record `seq`: the same bytes `JournalRecord::encode` gives.
pub fn encode(
    seq: u64,
    event: &UsageEvent,
    counters: &CounterContext,
) -> Result<Vec<u8>, serde_json::Error> {
    {
        let payload = serde_json::to_vec(&RecordRef {
            seq,
            event,
            counters,
        })?;
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }
}

/// What reading one frame at the start of `buf` found.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A whole, intact record and the bytes it took.
    Record(Box<JournalRecord>, usize),
    /// A whole frame whose checksum or JSON is wrong: skip `usize` bytes.
    Corrupt(usize, String),
    /// The length field cannot be right: the rest of the segment is unreadable.
    Garbage,
    /// Not enough bytes yet (the end of what was written).
    Incomplete,
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Frame {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Frame::Incomplete;
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[..4]);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&header[4..]);
    let Ok(len) = usize::try_from(u32::from_le_bytes(len_bytes)) else {
        return Frame::Garbage;
    };
    if len == 0 || len > MAX_PAYLOAD_BYTES {
        return Frame::Garbage;
    }
    let Some(payload) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Frame::Incomplete;
    };
    let size = HEADER_BYTES + len;
    if crc32fast::hash(payload) != u32::from_le_bytes(crc_bytes) {
        return Frame::Corrupt(size, "checksum mismatch".into());
    }
    match serde_json::from_slice::<JournalRecord>(payload) {
        Ok(r) => Frame::Record(Box::new(r), size),
        Err(e) => Frame::Corrupt(size, format!("unreadable record: {e}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub fn sample(seq: u64) -> JournalRecord {
        JournalRecord {
            seq,
            event: UsageEvent {
                request_id: format!("req_{seq:032}"),
                upstream_request_id: Some("req_upstream".into()),
                api_key_id: "6b1c1a43-0000-4000-8000-000000000001".into(),
                account_id: "acc-1".into(),
                model: "claude-sonnet-4-20250514".into(),
                input_tokens: 25,
                output_tokens: 12,
                cache_create_5m_tokens: 100,
                cache_create_1h_tokens: 0,
                cache_read_tokens: 200,
                cost_micros: 690,
                status_code: 200,
                is_stream: false,
                latency_ms: 3,
                created_at: chrono::Utc
                    .with_ymd_and_hms(2026, 12, 1, 10, 0, 0)
                    .single()
                    .unwrap_or_default(),
            },
            counters: CounterContext {
                opus: false,
                weekly_reset: (1, 0),
                rate_window: Some(("rate:key:x:1764583200".into(), 120)),
            },
        }
    }

    #[test]
    fn a_record_round_trips_and_stays_small() {
        let r = sample(7);
        let bytes = r.encode().unwrap();
        assert!(
            bytes.len() < 600,
            "a record is a few hundred bytes: {}",
            bytes.len()
        );
        assert_eq!(decode(&bytes), Frame::Record(Box::new(r), bytes.len()));
    }

    #[test]
    fn a_flipped_byte_is_a_corrupt_frame_of_the_same_length() {
        let mut bytes = sample(1).encode().unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        assert!(matches!(decode(&bytes), Frame::Corrupt(n, _) if n == bytes.len()));
    }

    #[test]
    fn a_torn_tail_is_incomplete_and_a_wild_length_is_garbage() {
        let bytes = sample(1).encode().unwrap();
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Frame::Incomplete);
        assert_eq!(decode(&bytes[..5]), Frame::Incomplete);
        let mut wild = bytes;
        wild[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&wild), Frame::Garbage);
    }
}
