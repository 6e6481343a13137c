//! MariaDB's GTID event, read by hand (mysql_common does not parse it).

const FL_STANDALONE: u8 = 1;

/// MariaDB GTID event body: seq u64 LE, domain u32 LE, flags u8.
pub(super) fn parse_mariadb(data: &[u8], server_id: u32) -> Option<(String, bool)> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some((
        format!("{domain}-{server_id}-{seq}"),
        flags & FL_STANDALONE != 0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_body() {
        let mut data = 77u64.to_le_bytes().to_vec();
        data.extend(3u32.to_le_bytes());
        data.push(FL_STANDALONE);
        assert_eq!(parse_mariadb(&data, 9), Some(("3-9-77".into(), true)));
        assert_eq!(parse_mariadb(&data[..5], 9), None);
    }
}
