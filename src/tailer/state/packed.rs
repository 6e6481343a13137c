//! Values kept deflated: outbox envelopes and visit buffer chunks are JSON that deflate shrinks
//! about tenfold, and sled writes a value again each time it consolidates the value's leaf, so
//! deflated values cut the tailer's disk writes, and with them its CPU and memory.

use std::io::{Read, Write};

use super::StateError;

/// Appends `raw`'s length (u32 LE) and `raw` deflated (raw deflate, fastest level) to `out`.
pub fn deflate_into(mut out: Vec<u8>, raw: &[u8]) -> Vec<u8> {
    out.extend((raw.len() as u32).to_le_bytes());
    let mut enc = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    enc.write_all(raw).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// The length `deflate_into` recorded at the start of `bytes`.
pub fn inflated_len(bytes: &[u8]) -> Option<usize> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(len) as usize)
}

/// The bytes `deflate_into` was given; `what` names the record in the error.
pub fn inflate(bytes: &[u8], what: &'static str) -> Result<Vec<u8>, StateError> {
    let len = inflated_len(bytes).ok_or(StateError::Malformed(what))?;
    let mut raw = Vec::with_capacity(len);
    flate2::read::DeflateDecoder::new(&bytes[4..])
        .take(len as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|_| StateError::Malformed(what))?;
    if raw.len() != len {
        return Err(StateError::Malformed(what));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refuse_damage() {
        let raw = br#"{"table":"obs","op":"upsert","pk":{"obs_id":1}}"#.repeat(50);
        let packed = deflate_into(b"head".to_vec(), &raw);
        assert!(packed.len() < raw.len() / 5, "{} bytes", packed.len());
        assert_eq!(&packed[..4], b"head");
        assert_eq!(inflate(&packed[4..], "x").unwrap(), raw);
        assert!(inflate(&packed[4..packed.len() - 3], "x").is_err(), "cut");
        let mut longer = packed[4..].to_vec();
        longer[0] = longer[0].wrapping_add(1);
        assert!(inflate(&longer, "x").is_err(), "length that does not match");
        assert!(inflate(b"ab", "x").is_err(), "no length");
    }
}
