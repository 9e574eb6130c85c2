//! One journal record: a usage event and what is needed to derive its counter updates,
//! framed as `[payload length u32 LE][crc32 of payload u32 LE][payload]`. The payload is a
//! compact binary body (first byte `BINARY_V1`); records written as JSON (first byte `{`) by
//! earlier versions are still read, so an existing journal drains.

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

/// First payload byte of the binary body (a JSON body starts with `{`).
const BINARY_V1: u8 = 1;
const IS_STREAM: u8 = 1;
const OPUS: u8 = 2;
const HAS_UPSTREAM_ID: u8 = 4;
const HAS_RATE_WINDOW: u8 = 8;

/// The framed bytes of record `seq` (the hot path copies no event to journal it).
pub fn encode(
    seq: u64,
    event: &UsageEvent,
    counters: &CounterContext,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    encode_into(&mut out, seq, event, counters)?;
    Ok(out)
}

/// `encode` into `out` (cleared first): the journal reuses one buffer for every append.
pub fn encode_into(
    out: &mut Vec<u8>,
    seq: u64,
    event: &UsageEvent,
    counters: &CounterContext,
) -> Result<(), serde_json::Error> {
    out.clear();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(BINARY_V1);
    out.extend_from_slice(&seq.to_le_bytes());
    let flags = [
        (event.is_stream, IS_STREAM),
        (counters.opus, OPUS),
        (event.upstream_request_id.is_some(), HAS_UPSTREAM_ID),
        (counters.rate_window.is_some(), HAS_RATE_WINDOW),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0u8, |f, (_, bit)| f | bit);
    out.push(flags);
    put_str(out, &event.request_id)?;
    put_str(out, &event.api_key_id)?;
    put_str(out, &event.account_id)?;
    put_str(out, &event.model)?;
    if let Some(id) = &event.upstream_request_id {
        put_str(out, id)?;
    }
    for n in [
        event.input_tokens,
        event.output_tokens,
        event.cache_create_5m_tokens,
        event.cache_create_1h_tokens,
        event.cache_read_tokens,
        event.cost_micros,
        event.created_at.timestamp(),
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&event.created_at.timestamp_subsec_nanos().to_le_bytes());
    out.extend_from_slice(&event.status_code.to_le_bytes());
    out.extend_from_slice(&event.latency_ms.to_le_bytes());
    out.push(counters.weekly_reset.0);
    out.push(counters.weekly_reset.1);
    if let Some((name, ttl)) = &counters.rate_window {
        put_str(out, name)?;
        out.extend_from_slice(&ttl.to_le_bytes());
    }
    let payload = out.get(HEADER_BYTES..).unwrap_or_default();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    let len = u16::try_from(s.len()).map_err(|_| {
        <serde_json::Error as serde::ser::Error>::custom(format!(
            "a usage record field of {} bytes",
            s.len()
        ))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Reads a binary body front to back.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.bytes().map(i64::from_le_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(head.to_vec()).ok()
    }
}

fn decode_binary(payload: &[u8]) -> Option<JournalRecord> {
    let mut b = Body(payload);
    if b.u8()? != BINARY_V1 {
        return None;
    }
    let seq = b.u64()?;
    let flags = b.u8()?;
    let request_id = b.string()?;
    let api_key_id = b.string()?;
    let account_id = b.string()?;
    let model = b.string()?;
    let upstream_request_id = if flags & HAS_UPSTREAM_ID != 0 {
        Some(b.string()?)
    } else {
        None
    };
    let mut n = [0i64; 7];
    for v in &mut n {
        *v = b.i64()?;
    }
    let nanos = b.u32()?;
    let status_code = b.u16()?;
    let latency_ms = b.u32()?;
    let weekly_reset = (b.u8()?, b.u8()?);
    let rate_window = if flags & HAS_RATE_WINDOW != 0 {
        Some((b.string()?, b.u64()?))
    } else {
        None
    };
    if !b.0.is_empty() {
        return None;
    }
    Some(JournalRecord {
        seq,
        event: UsageEvent {
            request_id,
            upstream_request_id,
            api_key_id,
            account_id,
            model,
            input_tokens: n[0],
            output_tokens: n[1],
            cache_create_5m_tokens: n[2],
            cache_create_1h_tokens: n[3],
            cache_read_tokens: n[4],
            cost_micros: n[5],
            status_code,
            is_stream: flags & IS_STREAM != 0,
            latency_ms,
            created_at: chrono::DateTime::from_timestamp(n[6], nanos)?,
        },
        counters: CounterContext {
            opus: flags & OPUS != 0,
            weekly_reset,
            rate_window,
        },
    })
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
    /// Zeros where a header belongs: the unused rest of a segment allocated up front.
    End,
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Frame {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Frame::Incomplete;
    };
    if header.iter().all(|b| *b == 0) {
        return Frame::End;
    }
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
    if payload.first() == Some(&b'{') {
        return match serde_json::from_slice::<JournalRecord>(payload) {
            Ok(r) => Frame::Record(Box::new(r), size),
            Err(e) => Frame::Corrupt(size, format!("unreadable record: {e}")),
        };
    }
    match decode_binary(payload) {
        Some(r) => Frame::Record(Box::new(r), size),
        None => Frame::Corrupt(size, "unreadable record".into()),
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
            bytes.len() < 250,
            "a record is a few hundred bytes: {}",
            bytes.len()
        );
        assert_eq!(decode(&bytes), Frame::Record(Box::new(r), bytes.len()));
    }

    /// A record as versions before the binary body framed it.
    fn json_frame(r: &JournalRecord) -> Vec<u8> {
        framed(&serde_json::to_vec(r).unwrap())
    }

    /// `payload` with its length and checksum.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_json_record_of_an_earlier_version_still_reads() {
        let r = sample(3);
        let bytes = json_frame(&r);
        assert_eq!(decode(&bytes), Frame::Record(Box::new(r), bytes.len()));
    }

    #[test]
    fn every_optional_part_round_trips() {
        let mut r = sample(u64::MAX - 1);
        r.event.upstream_request_id = None;
        r.event.is_stream = true;
        r.event.model = "claude-opus-4-1-20250805 \u{e9}".into();
        r.event.created_at += chrono::Duration::nanoseconds(123_456_789);
        r.counters = CounterContext {
            opus: true,
            weekly_reset: (7, 23),
            rate_window: None,
        };
        let bytes = r.encode().unwrap();
        assert_eq!(decode(&bytes), Frame::Record(Box::new(r), bytes.len()));
    }

    #[test]
    fn a_truncated_or_padded_body_with_a_good_checksum_is_corrupt() {
        let bytes = sample(1).encode().unwrap();
        for payload in [&bytes[HEADER_BYTES..bytes.len() - 1], &[BINARY_V1, 0, 0]] {
            let frame = framed(payload);
            assert!(matches!(decode(&frame), Frame::Corrupt(n, _) if n == frame.len()));
        }
        let mut padded = bytes[HEADER_BYTES..].to_vec();
        padded.push(0);
        let frame = framed(&padded);
        assert!(matches!(decode(&frame), Frame::Corrupt(..)));
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
