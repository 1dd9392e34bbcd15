//! A JSON document in a reply: held by the daemon as the text it already has
//! (a stored result line), read by a client as a `Value`. On the wire it is
//! the same MessagePack map either way.
//!
//! Replies used to hold a `serde_json::Value`, so the daemon parsed each stored
//! line into a tree of maps only to write it out again as MessagePack: about
//! 13 000 instructions of the 33 000 it spent on a task in `submit --wait`.
//! Text is transcoded straight into the frame instead.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A JSON document: text known to be JSON, or a parsed value.
#[derive(Debug, Clone)]
pub(crate) enum Doc {
    /// JSON text, checked when it was made a `Doc` (or written by this
    /// process); transcoded into the frame, or sent as it is (`LineText`).
    Text(String),
    /// A parsed document (a client's, or one the daemon built).
    Value(Value),
}

impl Doc {
    /// `text` as a document, or `None` when it is not one JSON document.
    pub(crate) fn text(text: String) -> Option<Self> {
        let checked = serde_json::from_str::<IgnoredAny>(&text).is_ok();
        checked.then_some(Self::Text(text))
    }

    /// `text` taken without checking it: a line this process wrote as one
    /// JSON document itself (the feeder's result lines), or a stored line
    /// going to a client that asked for text (the client names one that is
    /// not JSON).
    pub(crate) fn unchecked(text: String) -> Self {
        Self::Text(text)
    }

    /// The document as JSON text.
    pub(crate) fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Value(value) => value.to_string(),
        }
    }

    /// The document as a value (text is parsed; checked text always parses).
    pub(crate) fn into_value(self) -> Value {
        match self {
            Self::Text(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
            Self::Value(value) => value,
        }
    }
}

impl From<Value> for Doc {
    fn from(value: Value) -> Self {
        Self::Value(value)
    }
}

impl PartialEq for Doc {
    fn eq(&self, other: &Self) -> bool {
        self.clone().into_value() == other.clone().into_value()
    }
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => {
                let mut from = serde_json::Deserializer::from_str(text);
                serde_transcode::transcode(&mut from, serializer)
            }
            Self::Value(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::Value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wire<T: Serialize>(doc: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(doc).unwrap()
    }

    #[test]
    fn text_goes_on_the_wire_as_its_value_would() {
        let text = r#"{"attempts":1,"duration_ms":0.25,"id":"a\n\"b","result":[1,-2,null,true,{"x":"é"}],"status":"ok"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let doc = Doc::text(text.to_owned()).unwrap();
        assert_eq!(wire(&doc), wire(&value));
        let back: Doc = rmp_serde::from_slice(&wire(&doc)).unwrap();
        assert_eq!(back.into_value(), value);
    }

    #[test]
    fn text_that_is_not_one_json_document_is_refused() {
        for bad in ["", "{", r#"{"a":1} {"b":2}"#, "nope", r#"{"a":1"#] {
            assert!(Doc::text(bad.to_owned()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn text_and_value_of_one_document_are_equal() {
        let doc = Doc::text(r#"{"id":"a","status":"ok"}"#.to_owned()).unwrap();
        assert_eq!(doc, Doc::from(json!({"status": "ok", "id": "a"})));
        assert_ne!(doc, Doc::from(json!({"status": "failed", "id": "a"})));
    }
}
