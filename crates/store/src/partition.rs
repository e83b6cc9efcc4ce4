//! Which planning partition an identity belongs to.
//!
//! The function is part of the stored format: events and timers carry the partition it gave
//! them, so it must give the same answer on every node, platform and release. That rules out
//! `std::hash` (its algorithm may change); FNV-1a is fixed, fast on short keys and spreads
//! user ids well enough for a handful of partitions.

/// Partitions a new PostgreSQL store is split into when the configuration does not say: room
/// for a few nodes to share planning.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// Partitions a new store at `url` is split into when the configuration does not say: one on
/// SQLite, where a single process plans and every planner's commit is a durable write of its
/// own (eight partitions cut durable ingest with planning from 42,163 to 9,859 events/s,
/// `junction-bench ingest`), [`DEFAULT_PARTITIONS`] on PostgreSQL.
pub fn default_partitions(url: &str) -> u32 {
    match crate::locate(url) {
        Ok(crate::StoreLocation::Postgres(_)) => DEFAULT_PARTITIONS,
        _ => 1,
    }
}

/// The partition (`0..partitions`) whose planner plans `identity`'s events and timers.
pub fn partition_of(identity: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = identity.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_of_an_identity_never_changes() {
        // FNV-1a's published test vector ("a" hashes to 0xaf63dc4c8601ec8c): a change here
        // would move stored events and timers to another partition.
        assert_eq!(partition_of("a", 1 << 31), 0x0601_ec8c);
        assert_eq!(partition_of("a", 8), (0xaf63_dc4c_8601_ec8cu64 % 8) as u32);
        assert_eq!(partition_of("user-1", 1), 0);
    }

    #[test]
    fn identities_spread_over_the_partitions() {
        let mut counts = [0u32; 8];
        for n in 0..8_000 {
            counts[partition_of(&format!("user-{n}"), 8) as usize] += 1;
        }
        for count in counts {
            assert!((800..1_200).contains(&count), "{counts:?}");
        }
    }
}
