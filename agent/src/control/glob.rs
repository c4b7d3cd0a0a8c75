//! Shell-style patterns for selector values: `*` any run of characters, `?` one character,
//! everything else literal. A pattern without wildcards is an exact match.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A compiled pattern (the text is kept for display and serialisation).
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    literal: bool,
}

impl Glob {
    /// Compiles `text`; it cannot fail (every string is a pattern).
    pub fn new(text: &str) -> Self {
        Self {
            literal: !text.contains(['*', '?']),
            text: text.to_owned(),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        if self.literal {
            return self.text == value;
        }
        wildcard(self.text.as_bytes(), value.as_bytes())
    }
}

/// Iterative matcher with single backtracking point: linear in practice, never exponential.
fn wildcard(p: &[u8], v: &[u8]) -> bool {
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == v[vi] => {
                // `?` takes one byte; values are ASCII identities in practice.
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom(
                "an empty pattern matches nothing; leave the field out to match everything",
            ));
        }
        Ok(Self::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcards() {
        assert!(Glob::new("gpt-4o").matches("gpt-4o"));
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt-4o*").matches("gpt-4o-mini"));
        assert!(Glob::new("*mini").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt-?o").matches("gpt-4o"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a*b*c").matches("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches("axxbyy"));
        assert!(Glob::new("claude-*-sonnet-*").matches("claude-3-5-sonnet-20241022"));
        assert!(!Glob::new("?").matches(""));
    }

    #[test]
    fn empty_pattern_rejected() {
        #[derive(Debug, Deserialize)]
        struct T {
            #[allow(dead_code)]
            g: Glob,
        }
        assert!(toml::from_str::<T>("g = \"\"").is_err());
        assert!(toml::from_str::<T>("g = \"x*\"").is_ok());
    }
}
