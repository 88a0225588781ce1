//! Time-ordered 53-bit identifiers that carry their logical shard.
//!
//! Layout, from the most significant bit: 40 bits of milliseconds since
//! [`EPOCH_MS`] (enough until 2060), 8 bits of logical shard (256 shards) and
//! 5 bits of sequence (16 to 32 identifiers per millisecond per process,
//! over all shards).
//! The whole value stays below 2^53, so JavaScript clients read it exactly.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A row identifier: see the module documentation for its layout.
pub type Id = i64;

/// 2026-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

const TIME_BITS: u32 = 40;
const SHARD_BITS: u32 = 8;
const SEQUENCE_BITS: u32 = 5;

/// The number of logical shards. Fixed for the life of the data set.
pub const LOGICAL_SHARDS: u16 = 1 << SHARD_BITS;

const SEQUENCE_MASK: i64 = (1 << SEQUENCE_BITS) - 1;
const SHARD_MASK: i64 = (1 << SHARD_BITS) - 1;

/// The first sequence of a millisecond is drawn from `0..FIRST_SEQUENCE_SPAN`,
/// which leaves at least 16 identifiers per millisecond and process.
const FIRST_SEQUENCE_SPAN: i64 = 16;

/// The largest identifier the layout can produce: 2^53 - 1.
pub const MAX_ID: Id = (1 << (TIME_BITS + SHARD_BITS + SEQUENCE_BITS)) - 1;

/// Returns the logical shard an identifier was minted for.
pub fn shard_of(id: Id) -> u16 {
    ((id >> SEQUENCE_BITS) & SHARD_MASK) as u16
}

/// Returns the Unix time in milliseconds at which an identifier was minted.
pub fn unix_ms_of(id: Id) -> i64 {
    (id >> (SHARD_BITS + SEQUENCE_BITS)) + EPOCH_MS
}

/// Mints identifiers in one process.
///
/// The sequence is per process. Two processes minting on the same shard in
/// the same millisecond collide when they draw the same first sequence, about
/// one time in 16. The primary keys reject such an id rather than overwrite a
/// row ([`crate::StoreError::is_id_taken`]), and the write is repeated with a
/// fresh id: users, articles and uploads through [`crate::with_fresh_ids`],
/// comments inside the store.
// NOTE: a job id that collides fails the write that enqueued the job.
#[derive(Debug, Default)]
pub struct IdGenerator {
    state: Mutex<(i64, i64)>,
}

impl IdGenerator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mints a new identifier on `shard`, waiting for the next millisecond
    /// when this one's sequence is used up.
    pub fn next(&self, shard: u16) -> Id {
        let shard = i64::from(shard) & SHARD_MASK;
        loop {
            let now = now_ms() - EPOCH_MS;
            let mut state = self.state.lock().expect("id generator lock poisoned");
            let (last_ms, sequence) = *state;
            // A clock that steps backwards keeps the last millisecond, so
            // identifiers stay unique and ordered.
            let ms = now.max(last_ms);
            // Each millisecond starts at a random sequence below
            // FIRST_SEQUENCE_SPAN, so two processes minting on one shard in
            // the same millisecond mostly pick different values.
            let next_sequence = if ms == last_ms {
                sequence + 1
            } else {
                rand::random_range(0..FIRST_SEQUENCE_SPAN)
            };
            if next_sequence > SEQUENCE_MASK {
                drop(state);
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            *state = (ms, next_sequence);
            return (ms << (SHARD_BITS + SEQUENCE_BITS)) | (shard << SEQUENCE_BITS) | next_sequence;
        }
    }

    /// Mints a new identifier on a random logical shard, for a row that
    /// starts its own shard (a new user).
    pub fn next_random_shard(&self) -> Id {
        self.next(rand::random::<u16>() % LOGICAL_SHARDS)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(EPOCH_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_ordered() {
        let ids = IdGenerator::new();
        let minted: Vec<Id> = (0..5000).map(|_| ids.next(7)).collect();
        assert!(minted.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(minted.iter().collect::<HashSet<_>>().len(), minted.len());
    }

    #[test]
    fn first_sequence_of_a_millisecond_varies() {
        let firsts: HashSet<i64> = (0..200)
            .map(|_| IdGenerator::new().next(3) & SEQUENCE_MASK)
            .collect();
        assert!(firsts.len() > 4, "first sequences drawn: {firsts:?}");
        assert!(firsts.iter().all(|first| *first < FIRST_SEQUENCE_SPAN));
    }

    #[test]
    fn id_carries_shard_and_time() {
        let ids = IdGenerator::new();
        let before = now_ms();
        let id = ids.next(201);
        let after = now_ms();
        assert_eq!(shard_of(id), 201);
        assert!((before..=after).contains(&unix_ms_of(id)));
    }

    #[test]
    fn ids_stay_below_two_to_the_53() {
        assert_eq!(MAX_ID, (1_i64 << 53) - 1);
        let id = IdGenerator::new().next(LOGICAL_SHARDS - 1);
        assert!(id < MAX_ID);
        // The time field runs out in 2060, not before.
        let last_ms = (1_i64 << TIME_BITS) - 1 + EPOCH_MS;
        assert!(last_ms > 2_840_000_000_000);
    }
}
