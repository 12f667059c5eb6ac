//! A small, fast, non-cryptographic hasher (the rustc "Fx" hash) for the evaluator's hot maps,
//! keyed by addresses and integers that users cannot choose adversarially at scale.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for b in chunks.remainder() {
            self.add(*b as u64);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fx alone leaves low bits poorly mixed for byte-wise keys such as IP addresses, and
        // hashbrown indexes buckets with low bits: finish with a murmur3-style avalanche.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51afd7ed558ccd);
        h ^= h >> 33;
        h
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};
    use std::net::IpAddr;

    fn hash<T: Hash>(t: &T) -> u64 {
        FxBuild::default().hash_one(t)
    }

    #[test]
    fn stable_and_spread_in_the_low_bits() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(hash(&a), hash(&a));
        // Addresses that differ in one byte land in different buckets of a small table.
        let buckets: std::collections::BTreeSet<u64> = (0..=255u8)
            .map(|i| hash(&IpAddr::from([10, 0, 0, i])) & 255)
            .collect();
        assert!(buckets.len() > 128, "{} of 256 buckets used", buckets.len());
    }
}
