//! Stripe-style metadata: string keys to string values, with Stripe's limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Key/value pairs a merchant attaches to an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("You can specify up to {max} keys in metadata; this request would leave {count}.", max = Metadata::KEYS_MAX)]
    TooManyKeys { count: usize },
    #[error("Metadata keys can be up to {max} characters long; `{key}` has {len}.", max = Metadata::KEY_CHARS_MAX)]
    KeyTooLong { key: String, len: usize },
    #[error("Metadata keys must not be empty.")]
    EmptyKey,
    #[error("Metadata keys must not contain square brackets (`{key}`): a form body nests on them, as in metadata[key]=value.")]
    KeyHasBrackets { key: String },
    #[error("Metadata values can be up to {max} characters long; the value of `{key}` has {len}.", max = Metadata::VALUE_CHARS_MAX)]
    ValueTooLong { key: String, len: usize },
}

impl Metadata {
    pub const KEYS_MAX: usize = 50;
    pub const KEY_CHARS_MAX: usize = 40;
    pub const VALUE_CHARS_MAX: usize = 500;

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Builds metadata from a fresh set of pairs (on create). Empty values are dropped, as
    /// Stripe does.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Metadata, MetadataError> {
        Metadata::default().merged(pairs)
    }

    /// Applies an update: a key set to "" is removed, others are set. The result must respect
    /// every limit, or nothing changes.
    pub fn merged(&self, pairs: impl IntoIterator<Item = (String, String)>) -> Result<Metadata, MetadataError> {
        let mut next = self.0.clone();
        for (key, value) in pairs {
            let key_len = key.chars().count();
            if key_len == 0 {
                return Err(MetadataError::EmptyKey);
            }
            if key_len > Self::KEY_CHARS_MAX {
                return Err(MetadataError::KeyTooLong { key: truncate(&key), len: key_len });
            }
            if key.contains(['[', ']']) {
                return Err(MetadataError::KeyHasBrackets { key });
            }
            let value_len = value.chars().count();
            if value_len > Self::VALUE_CHARS_MAX {
                return Err(MetadataError::ValueTooLong { key, len: value_len });
            }
            if value.is_empty() {
                next.remove(&key);
            } else {
                next.insert(key, value);
            }
        }
        // The limit is on the result, so removals and additions in one update may come in any order.
        if next.len() > Self::KEYS_MAX {
            return Err(MetadataError::TooManyKeys { count: next.len() });
        }
        Ok(Metadata(next))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(Metadata::KEY_CHARS_MAX).collect::<String>() + "..."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    }

    #[test]
    fn limits_at_their_edges() {
        assert_eq!(Metadata::from_pairs(pairs(50)).unwrap().len(), 50);
        assert!(matches!(Metadata::from_pairs(pairs(51)), Err(MetadataError::TooManyKeys { count: 51 })));
        let k40 = "k".repeat(40);
        assert!(Metadata::from_pairs([(k40, "v".into())]).is_ok());
        assert!(matches!(
            Metadata::from_pairs([("k".repeat(41), "v".into())]),
            Err(MetadataError::KeyTooLong { len: 41, .. })
        ));
        assert!(Metadata::from_pairs([("k".into(), "é".repeat(500))]).is_ok());
        assert!(matches!(
            Metadata::from_pairs([("k".into(), "v".repeat(501))]),
            Err(MetadataError::ValueTooLong { len: 501, .. })
        ));
    }

    #[test]
    fn empty_value_unsets() {
        let m = Metadata::from_pairs([("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
        let m = m.merged([("a".into(), String::new())]).unwrap();
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("b"), Some("2"));
    }
}
