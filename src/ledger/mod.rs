//! The usage ledger: every usage event is appended to this instance's local journal before
//! the answer's last byte leaves, then moved into the archive (MySQL, or Redis in redis mode)
//! exactly once by one writer per instance. Redis counters are views of the ledger that are
//! rebuilt from the archive plus the journal when Redis comes back empty.

pub mod journal;
mod mapped;
pub mod record;
mod sealer;

pub use journal::{Journal, JournalError, JournalStats};
pub use record::{CounterContext, JournalRecord};

/// Where one instance's journal stood in the archive when a ledger epoch was built: its last
/// archived sequence number, and a row id below every archive row of that instance after it
/// (the catch-up reads those rows by a primary-key range from there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveBoundary {
    pub seq: u64,
    pub row_id: u64,
}

impl ArchiveBoundary {
    /// As kept in an epoch's boundaries hash in Redis: `seq:row_id`.
    pub fn to_field(self) -> String {
        format!("{}:{}", self.seq, self.row_id)
    }

    /// Reads [`to_field`](Self::to_field). A bare sequence number (an epoch built before
    /// row ids were kept) has row id 0: its catch-up scans the archive from the start.
    pub fn from_field(text: &str) -> Option<ArchiveBoundary> {
        let (seq, row_id) = text.split_once(':').unwrap_or((text, "0"));
        Some(ArchiveBoundary {
            seq: seq.parse().ok()?,
            row_id: row_id.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ArchiveBoundary;

    #[test]
    fn boundaries_read_back_as_kept_and_bare_sequence_numbers_scan_from_the_start() {
        let b = ArchiveBoundary {
            seq: 41,
            row_id: 9_000_001,
        };
        assert_eq!(b.to_field(), "41:9000001");
        assert_eq!(ArchiveBoundary::from_field("41:9000001"), Some(b));
        assert_eq!(
            ArchiveBoundary::from_field("41"),
            Some(ArchiveBoundary { seq: 41, row_id: 0 })
        );
        for bad in ["", "x", "41:", "41:y", "-1:3", ":3"] {
            assert_eq!(ArchiveBoundary::from_field(bad), None, "{bad:?}");
        }
    }
}
