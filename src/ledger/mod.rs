//! The usage ledger: every usage event is appended to this instance's local journal before
//! the answer's last byte leaves, then moved into the archive (MySQL, or Redis in redis mode)
//! exactly once by one writer per instance. Redis counters are views of the ledger that are
//! rebuilt from the archive plus the journal when Redis comes back empty.

pub mod journal;
pub mod record;

pub use journal::{Journal, JournalError, JournalStats};
pub use record::{CounterContext, JournalRecord};
