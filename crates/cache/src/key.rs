//! Cache keys: 256-bit blake3 digests, written as 64 lowercase hex characters.

use crate::error::CacheError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A 256-bit blake3 content key, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// Number of hex characters in a key.
pub const KEY_HEX_LEN: usize = 64;

impl Key {
    /// The key of everything fed to `h` so far.
    pub fn from_hasher(h: blake3::Hasher) -> Key {
        Key(*h.finalize().as_bytes())
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 12 hex characters, for messages.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }

    /// Normalizes a user-typed key prefix (as in `cache show abc123`): trims,
    /// lowercases and checks it is 1 to 64 hex characters.
    pub fn parse_prefix(prefix: &str) -> Result<String, CacheError> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.is_empty() || p.len() > KEY_HEX_LEN || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CacheError::BadKeyPrefix(prefix.to_string()));
        }
        Ok(p)
    }

    /// Whether this key's hex form starts with `prefix` (already normalized).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.to_string().starts_with(prefix)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; KEY_HEX_LEN];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        f.write_str(std::str::from_utf8(&out).unwrap())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

impl FromStr for Key {
    type Err = CacheError;
    /// Exactly 64 lowercase hex characters: the spelling used for directory names.
    fn from_str(s: &str) -> Result<Key, CacheError> {
        fn nibble(b: u8) -> Option<u8> {
            match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            }
        }
        let bytes = s.as_bytes();
        if bytes.len() != KEY_HEX_LEN {
            return Err(CacheError::BadKey(s.to_string()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => return Err(CacheError::BadKey(s.to_string())),
            }
        }
        Ok(Key(out))
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
