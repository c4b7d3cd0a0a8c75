//! Pieces of the typed models that read stream events directly (beside the general paths,
//! which read a `serde_json::Value`): a string member borrowed from the document's bytes, so a
//! stream chunk allocates nothing per member, and a struct read only from a JSON object, so a
//! direct read sees the members a general path sees.

use std::{borrow::Cow, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor, value::MapAccessDeserializer},
};

/// A borrowed (or, with escapes, decoded) string. `#[serde(borrow)]` borrows a `Cow` only
/// when the `Cow` is the field's own type: inside an `Option` it is always copied, so the
/// models hold `Option<Str>` instead.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct Str<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

impl Str<'_> {
    pub(crate) fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A struct read only from a JSON object. serde's derived structs also read an array, member
/// by member in field order, where a general path (`Value::get`) sees no member at all.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Object)
    }
}

/// A missing or null member reads as "", as the general paths (`Value::as_str`) read it.
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
    fn an_object_is_read_from_an_object_only() {
        let doc: Object<Doc> = serde_json::from_str(r#"{"plain":"abc"}"#).unwrap();
        assert!(matches!(doc.0.plain, Some(Str(Cow::Borrowed("abc")))));
        // The derived struct alone reads the array positionally.
        assert!(serde_json::from_str::<Doc>(r#"["abc","d"]"#).is_ok());
        assert!(serde_json::from_str::<Object<Doc>>(r#"["abc","d"]"#).is_err());
        assert!(serde_json::from_str::<Object<Doc>>("null").is_err());
        let nested: Option<Object<Doc>> = serde_json::from_str("null").unwrap();
        assert!(nested.is_none());
    }

    #[test]
    fn borrows_unless_the_string_has_escapes() {
        let doc: Doc = serde_json::from_str(r#"{"plain":"abc","escaped":"a\"b"}"#).unwrap();
        assert!(matches!(doc.plain, Some(Str(Cow::Borrowed("abc")))));
        assert!(matches!(doc.escaped, Some(Str(Cow::Owned(ref s))) if s == "a\"b"));
    }
}
