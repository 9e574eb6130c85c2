//! One storage read at a time per cached item. When an item (the account list, a key) expires
//! under load, every request that finds it stale asks the router; each used to start a read of
//! its own until the first one landed (32 reads for 32 requests at once, hundreds under load).
//! Now the first begins the read and the others wait for its answer. Reads are numbered by
//! generation: a change to the items (an admin edit, an invalidation from a peer) begins a new
//! one, so a read begun before it answers its callers but is not kept.

use std::collections::hash_map::Entry;
use std::hash::Hash;

use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::error::AppError;

/// The answer a waiting caller gets (an error as its message).
type Shared<V> = Result<V, String>;

/// What a caller does: read, then [`Loads::finish`] with this ticket; or wait for the answer.
pub enum Turn<V> {
    Read(u64),
    Wait(oneshot::Receiver<Shared<V>>),
}

pub struct Loads<K, V> {
    generation: u64,
    /// Callers waiting, by item and the generation its read began in.
    waiting: HashMap<(K, u64), Vec<oneshot::Sender<Shared<V>>>>,
    /// Reads begun since start.
    begun: u64,
}

impl<K, V> Default for Loads<K, V> {
    fn default() -> Self {
        Loads {
            generation: 0,
            waiting: HashMap::default(),
            begun: 0,
        }
    }
}

impl<K: Hash + Eq, V: Clone> Loads<K, V> {
    /// Joins the read of `item` begun in this generation, or begins one.
    pub fn turn(&mut self, item: K) -> Turn<V> {
        match self.waiting.entry((item, self.generation)) {
            Entry::Occupied(mut read) => {
                let (tx, rx) = oneshot::channel();
                read.get_mut().push(tx);
                Turn::Wait(rx)
            }
            Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                self.begun += 1;
                Turn::Read(self.generation)
            }
        }
    }

    /// Whether what the read with `ticket` found may be kept: nothing changed since it began.
    pub fn is_current(&self, ticket: u64) -> bool {
        ticket == self.generation
    }

    /// The read of `item` with `ticket` ended with `answer`: its waiters get a copy.
    pub fn finish(&mut self, item: K, ticket: u64, answer: &Result<V, AppError>) {
        for waiter in self.waiting.remove(&(item, ticket)).unwrap_or_default() {
            let copy = match answer {
                Ok(value) => Ok(value.clone()),
                Err(e) => Err(e.to_string()),
            };
            if waiter.send(copy).is_err() {
                log::debug!("a caller stopped waiting for a storage read");
            }
        }
    }

    /// The items changed: reads under way are not kept, later callers read again.
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }

    pub fn begun(&self) -> u64 {
        self.begun
    }
}

/// Waits for the answer of a read another caller began.
pub async fn wait<V>(answer: oneshot::Receiver<Shared<V>>) -> Result<V, AppError> {
    match answer.await {
        Ok(shared) => shared.map_err(AppError::StorageUnavailable),
        Err(_) => Err(AppError::Internal("a storage read was dropped".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn callers_of_one_item_share_one_read_and_a_change_begins_another() {
        let mut loads: Loads<&str, u32> = Loads::default();
        let Turn::Read(ticket) = loads.turn("k") else {
            panic!("the first caller reads")
        };
        let Turn::Wait(second) = loads.turn("k") else {
            panic!("the second waits")
        };
        let Turn::Read(other) = loads.turn("j") else {
            panic!("another item is read apart")
        };
        assert!(loads.is_current(ticket));
        loads.finish("k", ticket, &Ok(7));
        assert_eq!(wait(second).await.unwrap(), 7);
        assert_eq!(loads.begun(), 2);

        let Turn::Read(before) = loads.turn("k") else {
            panic!("a finished read is not joined")
        };
        let Turn::Wait(early) = loads.turn("k") else {
            panic!("joined")
        };
        loads.invalidate();
        let Turn::Read(after) = loads.turn("k") else {
            panic!("after a change, a new read")
        };
        assert!(
            !loads.is_current(before),
            "read before the change: not kept"
        );
        assert!(loads.is_current(after));
        loads.finish("k", before, &Ok(1));
        assert_eq!(wait(early).await.unwrap(), 1, "its callers still get it");
        let failed: Result<u32, AppError> = Err(AppError::StorageUnavailable("down".into()));
        let Turn::Wait(late) = loads.turn("k") else {
            panic!("joined")
        };
        loads.finish("k", after, &failed);
        assert!(matches!(wait(late).await, Err(AppError::StorageUnavailable(m)) if m == "down"));
        assert!(!loads.is_current(other), "begun before the change");
        loads.finish("j", other, &Ok(3));
        assert!(loads.waiting.is_empty(), "every read finished");
    }
}
