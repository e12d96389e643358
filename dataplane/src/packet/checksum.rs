//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Used by the IPv4 header and ICMP views. The full sum is only run on small regions
//! (a 20–60 byte IPv4 header, an ICMP message the gateway answers); the forwarding
//! path never re-sums a header, it patches the checksum for the one word it changes
//! (the TTL) with [`update_word`], so a forwarded packet costs O(1) checksum work.

/// One's-complement sum of `data` as big-endian 16-bit words (an odd trailing byte is
/// padded with zero), not yet folded. Accumulates 32-bit words into a u64 so the carry
/// never overflows for any buffer a frame can hold.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Fold a wide one's-complement sum to 16 bits (end-around carry).
///
/// Straight-line rather than a `while acc > 0xffff` loop: the loop's data-dependent
/// branch showed up as the hottest instructions of the IPv4 checksum check in a perf
/// profile of the drop bench. 64 → 33 bits, then three 16-bit folds: after them the
/// value is at most 0xffff (bounds: 2^33, 0x2fffe, 0x10001, 0xffff).
#[inline]
pub fn fold(acc: u64) -> u16 {
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u16
}

/// The checksum to store for `data` (whose checksum field must be zero).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// True when `data`, checksum field included, sums to all ones.
#[inline]
pub fn verifies(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changes
/// from `old` to `new`: `HC' = ~(~HC + ~m + m')`. Eqn. 3, not RFC 1141's
/// `HC' = HC + m - m'`, because the latter gets the 0x0000/0xFFFF corner wrong (RFC 1624
/// §3). One corner remains: when every other covered word ends up zero, only 0xFFFF
/// verifies, but eqn. 3 yields 0x0000 (found by the `views` fuzz target). An IPv4
/// header can never be all zero (version 4); an ICMP message can, so a caller that may
/// zero the data checks for that case (see `icmp::make_echo_reply`).
#[inline]
pub fn update_word(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!hc) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn fold_matches_the_obvious_loop() {
        let slow = |mut acc: u64| {
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc as u16
        };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let edges = [
            0,
            1,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0xffff_ffff,
            0x1_ffff_fffe,
            u64::MAX >> 8,
        ];
        for acc in edges.into_iter().chain((0..100_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x >> (x % 31) // sums of every magnitude a frame can produce
        })) {
            assert_eq!(fold(acc), slow(acc), "acc {acc:#x}");
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[0xab])), 0xab00);
        assert_eq!(fold(sum(&[])), 0);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..10_000 {
            let mut hdr = [0u8; 20];
            for b in &mut hdr {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            hdr[10] = 0;
            hdr[11] = 0;
            let c = checksum(&hdr);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(verifies(&hdr));
            let old = u16::from_be_bytes([hdr[8], hdr[9]]);
            hdr[8] = hdr[8].wrapping_sub(1);
            let new = u16::from_be_bytes([hdr[8], hdr[9]]);
            let c2 = update_word(c, old, new);
            hdr[10..12].copy_from_slice(&c2.to_be_bytes());
            assert!(verifies(&hdr), "incremental update broke {hdr:02x?}");
        }
    }
}
