//! Prefix-free key encoding for sub-databases.
//!
//! Every stored key is a path of levels. At each level a byte tag says what follows: `0x01` a
//! user key (the rest of the bytes), or `0x02` a sub-database name, escaped (`0x00` becomes
//! `0x00 0xff`) and terminated by `0x00 0x00`, then the next level. Names are self-delimiting,
//! so no sub's keys can be a prefix of, or collide with, another sub's keys or plain keys, and
//! all of a level's user keys lie in `[prefix ‖ 0x01, prefix ‖ 0x02)`, in bytewise order.

const KEY: u8 = 0x01;
const SUB: u8 = 0x02;

/// The stored-key prefix of a (sub-)database: empty for the root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Keyspace {
    prefix: Vec<u8>,
}

impl Keyspace {
    /// The keyspace of the sub-database `name` nested in this one.
    pub fn sub(&self, name: &[u8]) -> Keyspace {
        let mut prefix = Vec::with_capacity(self.prefix.len() + name.len() + 3);
        prefix.extend_from_slice(&self.prefix);
        prefix.push(SUB);
        for &b in name {
            prefix.push(b);
            if b == 0 {
                prefix.push(0xff);
            }
        }
        prefix.extend_from_slice(&[0, 0]);
        Keyspace { prefix }
    }

    /// The stored form of a user key in this keyspace.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 1 + key.len());
        out.extend_from_slice(&self.prefix);
        out.push(KEY);
        out.extend_from_slice(key);
        out
    }

    /// The user key of a stored key, if it belongs to this keyspace's own level.
    pub fn decode<'a>(&self, stored: &'a [u8]) -> Option<&'a [u8]> {
        stored
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[KEY])
    }

    /// The smallest stored key of this level (inclusive).
    pub fn first(&self) -> Vec<u8> {
        self.encode(b"")
    }

    /// The bound after every stored key of this level (exclusive).
    pub fn end(&self) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.push(KEY + 1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subs_never_overlap_plain_keys_or_each_other() {
        let root = Keyspace::default();
        let names: [&[u8]; 6] = [b"", b"a", b"a\0", b"a\0\0", b"ab", b"\xff"];
        let keys: [&[u8]; 4] = [b"", b"\0", b"\x01\x02", b"\xff\xff"];
        let mut all = Vec::new();
        for name in names {
            let sub = root.sub(name);
            for key in keys {
                let stored = sub.encode(key);
                assert_eq!(sub.decode(&stored), Some(key));
                assert!(stored >= sub.first() && stored < sub.end());
                for other in names.iter().filter(|n| **n != name) {
                    let o = root.sub(other);
                    assert_eq!(o.decode(&stored), None);
                    assert!(!(stored >= o.first() && stored < o.end()));
                }
                assert_eq!(root.decode(&stored), None);
                all.push(stored);
            }
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), names.len() * keys.len());
    }
}
