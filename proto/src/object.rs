//! JSON objects only where a struct is expected.
//!
//! A derived `Deserialize` of a struct also takes a JSON array and reads its items as the
//! fields in order (`["x"]` as `{"type":"x"}`), which no client means. [`Object`] takes a
//! struct from an object only: anything else is the usual "invalid type" error.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `T`, read from a JSON object and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(Object)
    }
}

/// For `#[serde(deserialize_with = "...")]` on a `Vec<T>` of structs: each item an object.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    let items = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(items.into_iter().map(|Object(item)| item).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Job {
        #[serde(rename = "type")]
        job_type: String,
        #[serde(default)]
        payload: Option<Box<serde_json::value::RawValue>>,
    }

    #[derive(Debug, Deserialize)]
    struct Batch {
        #[serde(deserialize_with = "objects")]
        jobs: Vec<Job>,
    }

    #[test]
    fn a_struct_comes_from_an_object_only() {
        let Object(job) =
            serde_json::from_str::<Object<Job>>(r#"{"type":"x","payload":12345678901234567890}"#)
                .unwrap();
        assert_eq!(job.job_type, "x");
        assert_eq!(job.payload.unwrap().get(), "12345678901234567890");
        // A derived struct alone takes the array; through `Object` it is refused.
        assert!(serde_json::from_str::<Job>(r#"["x"]"#).is_ok());
        let err = serde_json::from_str::<Object<Job>>(r#"["x"]"#).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        for bad in ["null", "1", r#""x""#, "[]"] {
            assert!(serde_json::from_str::<Object<Job>>(bad).is_err(), "{bad}");
        }
        // The struct's own rules still hold.
        let err = serde_json::from_str::<Object<Job>>(r#"{"type":"x","extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn each_item_of_a_list_of_structs_comes_from_an_object() {
        let batch: Batch = serde_json::from_str(r#"{"jobs":[{"type":"a"},{"type":"b"}]}"#).unwrap();
        assert_eq!(batch.jobs.len(), 2);
        assert!(serde_json::from_str::<Batch>(r#"{"jobs":[["a"]]}"#).is_err());
    }
}
