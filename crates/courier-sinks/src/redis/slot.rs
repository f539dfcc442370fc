//! Redis Cluster hash slots: which keys may share one command.

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis
/// Cluster hashes keys with, one table entry per byte value.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The hash slot of `key`, as `CLUSTER KEYSLOT` computes it: only the part
/// between the first `{` and the first `}` after it is hashed, when that
/// part is not empty (a hash tag).
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cluster_keyslot() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Figures from `CLUSTER KEYSLOT` of Redis 7.0.
        for (key, expected) in [
            ("foo", 12182),
            ("bar", 5061),
            ("{user1000}.following", 3443),
            ("a{}b", 13694),
            ("x{y}z{w}", 12222),
            ("{}{a}", 13650),
            ("public.t:42", 8124),
        ] {
            assert_eq!(slot(key.as_bytes()), expected, "{key}");
        }
    }
}
