//! Decoding a `batch` in one pass: each item's payload is read straight into its message as the
//! parser reaches it, instead of being cut out as raw JSON first and parsed a second time. On a
//! busy cluster almost every message is a batch, and the second pass was a tenth of a worker
//! node's CPU.
//!
//! The refusals that are not JSON errors (a nested batch, an unknown item type, too many items)
//! stop the parse with a placeholder error and leave the real one in [`Found`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{ClusterMessage, DecodeError, MAX_BATCH};
use crate::executor::Text;

/// Decodes the payload of a `batch` message.
pub(super) fn decode(payload: &str) -> Result<ClusterMessage, DecodeError> {
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_str(payload);
    let parsed = Batch { found: &mut found }
        .deserialize(&mut de)
        .and_then(|messages| de.end().map(|()| messages));
    parsed
        .map(ClusterMessage::Batch)
        .map_err(|source| match found.refused {
            Some(refused) => refused,
            None => DecodeError::Malformed {
                msg_type: found.malformed.unwrap_or_else(|| "batch".to_owned()),
                source,
            },
        })
}

/// What stopped a parse, beyond the JSON error it stopped with.
#[derive(Default)]
struct Found {
    /// A refusal that is not about the JSON: it replaces the placeholder error.
    refused: Option<DecodeError>,
    /// The type of the item whose payload did not parse.
    malformed: Option<String>,
}

impl Found {
    fn refuse<E: de::Error>(&mut self, refused: DecodeError) -> E {
        let error = E::custom(&refused);
        self.refused = Some(refused);
        error
    }
}

/// `{"messages":[...]}`; other keys are ignored.
struct Batch<'f> {
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Batch<'_> {
    type Value = Vec<ClusterMessage>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Batch<'_> {
    type Value = Vec<ClusterMessage>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a \"messages\" array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut messages = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0 != "messages" {
                map.next_value::<IgnoredAny>()?;
            } else if messages.is_some() {
                return Err(de::Error::duplicate_field("messages"));
            } else {
                messages = Some(map.next_value_seed(Items {
                    found: &mut *self.found,
                })?);
            }
        }
        messages.ok_or_else(|| de::Error::missing_field("messages"))
    }
}

/// The array of items, at most [`MAX_BATCH`] of them.
struct Items<'f> {
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Vec<ClusterMessage>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Vec<ClusterMessage>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH));
        loop {
            if messages.len() == MAX_BATCH {
                // Counted, not decoded: the whole batch is refused.
                let mut extra = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    extra += 1;
                }
                if extra > 0 {
                    return Err(self
                        .found
                        .refuse(DecodeError::BatchTooLarge(MAX_BATCH + extra)));
                }
                return Ok(messages);
            }
            let item = Item {
                found: &mut *self.found,
            };
            match seq.next_element_seed(item)? {
                Some(message) => messages.push(message),
                None => return Ok(messages),
            }
        }
    }
}

/// `{"type":..,"payload":..}`, keys in either order; other keys are ignored.
struct Item<'f> {
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Item<'_> {
    type Value = ClusterMessage;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = ClusterMessage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object with \"type\" and \"payload\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut msg_type: Option<Cow<'de, str>> = None;
        let mut message = None;
        // A payload that came before its type: kept as text and parsed once the type is known.
        let mut early: Option<Box<RawValue>> = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key.0 {
                "type" if msg_type.is_some() => return Err(de::Error::duplicate_field("type")),
                "type" => {
                    let name = map.next_value::<Text<'de>>()?.0;
                    // Refused as soon as it is named, whichever key comes first.
                    if name == "batch" {
                        return Err(self.found.refuse(DecodeError::NestedBatch));
                    }
                    msg_type = Some(name);
                }
                "payload" if message.is_some() || early.is_some() => {
                    return Err(de::Error::duplicate_field("payload"));
                }
                "payload" => match msg_type.as_deref() {
                    Some(known) => {
                        let payload = Payload {
                            msg_type: known,
                            found: &mut *self.found,
                        };
                        match map.next_value_seed(payload) {
                            Ok(decoded) => message = Some(decoded),
                            Err(error) => {
                                if self.found.refused.is_none() {
                                    self.found.malformed = Some(known.to_owned());
                                }
                                return Err(error);
                            }
                        }
                    }
                    None => early = Some(map.next_value()?),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let msg_type = msg_type.ok_or_else(|| de::Error::missing_field("type"))?;
        if let Some(message) = message {
            return Ok(message);
        }
        let early = early.ok_or_else(|| de::Error::missing_field("payload"))?;
        ClusterMessage::decode(&msg_type, early.get()).map_err(|refused| self.found.refuse(refused))
    }
}

/// One item's payload, read as the message its type names.
struct Payload<'t, 'f> {
    msg_type: &'t str,
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Payload<'_, '_> {
    type Value = ClusterMessage;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        match ClusterMessage::typed(self.msg_type, de) {
            Some(decoded) => decoded,
            None => Err(self
                .found
                .refuse(DecodeError::UnknownType(self.msg_type.to_owned()))),
        }
    }
}
