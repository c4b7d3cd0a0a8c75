//! A string member of a provider document, borrowed from the document's bytes unless it has
//! escapes: the typed models of stream events use it so a stream chunk allocates nothing per
//! member.

use std::borrow::Cow;

use serde::Deserialize;

/// A borrowed (or, with escapes, decoded) string. `#[serde(borrow)]` borrows a `Cow` only
/// when the `Cow` is the field's own type: inside an `Option` it is always copied, so the
/// models hold `Option<Str>` instead.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct Str<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A missing member reads as "", as the general paths (`Value::as_str`) read it.
pub(crate) fn or_empty<'s>(member: Option<&'s Str<'_>>) -> &'s str {
    member.map_or("", |s| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        plain: Option<Str<'a>>,
        #[serde(borrow)]
        escaped: Option<Str<'a>>,
    }

    #[test]
    fn borrows_unless_the_string_has_escapes() {
        let doc: Doc = serde_json::from_str(r#"{"plain":"abc","escaped":"a\"b"}"#).unwrap();
        assert!(matches!(doc.plain, Some(Str(Cow::Borrowed("abc")))));
        assert!(matches!(doc.escaped, Some(Str(Cow::Owned(ref s))) if s == "a\"b"));
    }
}
