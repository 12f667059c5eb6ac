//! Numeric security identities. A label set (namespace, namespace labels, pod labels) maps to a
//! number derived from a hash of its canonical text, so the same labels get the same number
//! across runs and processes, independent of the order objects arrive in (collisions probe to the
//! next free number, which is the only order-dependent case).

use std::collections::HashMap;

/// Identities below this are reserved for entities.
pub const FIRST_DYNAMIC: u32 = 256;
/// Identities live in 24 bits (room for flags beside them in kernel map values).
pub const IDENTITY_SPACE: u32 = 1 << 24;

/// "No specific peer": the wildcard entry in policy tables.
pub const ID_ANY: u32 = 0;
// 1 is reserved for the local host (nodes get identities of their own for now).
/// Addresses outside the inventory not covered by any policy CIDR.
pub const ID_WORLD: u32 = 2;

/// 64-bit FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`).
pub fn fnv1a(data: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Allocates and frees identities by canonical key, with reference counts.
#[derive(Debug, Default, Clone)]
pub struct IdentityAllocator {
    by_key: HashMap<String, (u32, usize)>,
    by_id: HashMap<u32, String>,
}

impl IdentityAllocator {
    /// Takes a reference on the identity of `key`, allocating it if new. Returns (id, created).
    pub fn acquire(&mut self, key: &str) -> (u32, bool) {
        if let Some((id, refs)) = self.by_key.get_mut(key) {
            *refs += 1;
            return (*id, false);
        }
        let span = IDENTITY_SPACE - FIRST_DYNAMIC;
        let mut id = FIRST_DYNAMIC + (fnv1a(key) % span as u64) as u32;
        while self.by_id.contains_key(&id) {
            id = FIRST_DYNAMIC + (id - FIRST_DYNAMIC + 1) % span;
        }
        self.by_key.insert(key.to_string(), (id, 1));
        self.by_id.insert(id, key.to_string());
        (id, true)
    }

    /// Drops a reference; returns true when the identity is gone.
    pub fn release(&mut self, key: &str) -> bool {
        let Some((id, refs)) = self.by_key.get_mut(key) else {
            return false;
        };
        *refs -= 1;
        if *refs == 0 {
            let id = *id;
            self.by_key.remove(key);
            self.by_id.remove(&id);
            true
        } else {
            false
        }
    }

    pub fn get(&self, key: &str) -> Option<u32> {
        self.by_key.get(key).map(|(id, _)| *id)
    }

    pub fn key_of(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_refcounted() {
        let mut a = IdentityAllocator::default();
        let (x, created) = a.acquire("ns=x|pod=a");
        assert!(created);
        let mut b = IdentityAllocator::default();
        b.acquire("something else");
        assert_eq!(
            b.acquire("ns=x|pod=a").0,
            x,
            "same key, same id, whatever came before"
        );
        assert_eq!(a.acquire("ns=x|pod=a"), (x, false));
        assert!(!a.release("ns=x|pod=a"));
        assert!(a.release("ns=x|pod=a"));
        assert!(a.get("ns=x|pod=a").is_none());
        assert!((FIRST_DYNAMIC..IDENTITY_SPACE).contains(&x));
    }
}
