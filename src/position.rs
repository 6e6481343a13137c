//! Binlog positions and the `lsn` derived from them.
//!
//! Invariant: `lsn` is monotone in (epoch, file sequence, offset), fits in an `i64`, and an
//! epoch bump (the tailer re-pointed at a server whose positions went back) always sorts after
//! every position of the previous epoch.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A position in the source's binlog: file name and byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// File name, e.g. `binlog.000042`.
    pub file: String,
    /// Offset of the next event in that file.
    pub pos: u64,
}

impl BinlogPosition {
    /// Parses `FILE:POS`.
    pub fn parse(text: &str) -> Option<Self> {
        let (file, pos) = text.rsplit_once(':')?;
        let pos = pos.parse().ok()?;
        if file.is_empty() || file_sequence(file).is_none() {
            return None;
        }
        Some(Self {
            file: file.to_owned(),
            pos,
        })
    }

    /// The numeric suffix of the file name (`binlog.000042` → 42).
    pub fn sequence(&self) -> u64 {
        file_sequence(&self.file).unwrap_or(0)
    }

    /// The `lsn` of this position in `epoch`.
    pub fn lsn(&self, epoch: u64) -> u64 {
        lsn(epoch, self.sequence(), self.pos)
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.sequence(), &self.file, self.pos).cmp(&(other.sequence(), &other.file, other.pos))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// The numeric suffix of a binlog file name.
pub fn file_sequence(file: &str) -> Option<u64> {
    let (_, seq) = file.rsplit_once('.')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

const OFFSET_BITS: u32 = 32;
const SEQUENCE_BITS: u32 = 20;
/// Largest epoch that keeps `lsn` within an `i64`.
pub const MAX_EPOCH: u64 = (1 << (63 - OFFSET_BITS - SEQUENCE_BITS)) - 1;

/// `epoch | file sequence (20 bits) | offset (32 bits)`: monotone, below 2^63.
pub fn lsn(epoch: u64, sequence: u64, offset: u64) -> u64 {
    let sequence = sequence.min((1 << SEQUENCE_BITS) - 1);
    let offset = offset.min((1 << OFFSET_BITS) - 1);
    (epoch.min(MAX_EPOCH) << (OFFSET_BITS + SEQUENCE_BITS)) | (sequence << OFFSET_BITS) | offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p = BinlogPosition::parse("binlog.000042:1234").unwrap();
        assert_eq!(p.sequence(), 42);
        assert_eq!(p.to_string(), "binlog.000042:1234");
        assert!(BinlogPosition::parse("nonsense").is_none());
        assert!(BinlogPosition::parse("binlog.x:1").is_none());
    }

    #[test]
    fn order_follows_file_sequence_then_offset() {
        let a = BinlogPosition::parse("binlog.000009:900").unwrap();
        let b = BinlogPosition::parse("binlog.000010:4").unwrap();
        assert!(a < b);
        assert!(a.lsn(0) < b.lsn(0));
    }

    #[test]
    fn epoch_dominates_and_fits_i64() {
        let late = lsn(0, (1 << 20) - 1, u32::MAX as u64);
        let next_epoch = lsn(1, 1, 4);
        assert!(next_epoch > late);
        assert!(lsn(MAX_EPOCH, (1 << 20) - 1, u32::MAX as u64) <= i64::MAX as u64);
    }
}
