//! The executor protocol: the lines a worker writes to an executor's stdin and the lines the
//! executor prints on stdout, one JSON object per line.
//!
//! This is a compatible superset of Goop²'s protocol. A job line starts with the four fields
//! Goop² writes (`job_id`, `payload`, `timeout_s`, `type`, in that order) and adds `mode` and
//! `attempt`, which old executors ignore. Output lines are matched like Go's JSON decoder does:
//! keys in any letter case, the last duplicate wins, `null` counts as absent. Two things are more
//! lenient than Goop²: `pct` may be fractional and `result` may be any JSON value. Payloads and
//! results stay raw JSON text, so numbers of any size pass through unchanged.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Attempt, JobMode};

/// The `job_id` and `type` of the `__check__` handshake.
pub const CHECK_JOB_ID: &str = "__check__";

/// The `type` of a cancel line (daemon mode).
pub const CANCEL_TYPE: &str = "__cancel__";

/// The handshake line, exactly as Goop² writes it (payload `null`, keys in Go's sorted order).
pub const CHECK_LINE: &str =
    r#"{"job_id":"__check__","payload":null,"timeout_s":0,"type":"__check__"}"#;

/// How an executor binary is run.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinaryMode {
    /// A fresh process per job: one job line, stdin closed, lines read until a terminal one.
    #[default]
    Oneshot,
    /// One long-lived process: the check first, then many job lines correlated by `job_id`.
    Daemon,
}

impl BinaryMode {
    /// The mode as it appears in configuration and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Oneshot => "oneshot",
            Self::Daemon => "daemon",
        }
    }
}

impl fmt::Display for BinaryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BinaryMode {
    type Err = UnknownBinaryMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oneshot" => Ok(Self::Oneshot),
            "daemon" => Ok(Self::Daemon),
            other => Err(UnknownBinaryMode(other.to_owned())),
        }
    }
}

/// A binary mode that is neither `oneshot` nor `daemon`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode {0:?} (must be oneshot or daemon)")]
pub struct UnknownBinaryMode(pub String);

/// A job line, worker to executor.
#[derive(Debug, Serialize)]
pub struct JobLine<'a> {
    /// The job id the executor echoes back on its lines (required in daemon mode).
    pub job_id: &'a str,
    /// The job's input, any JSON (`null` when none was given).
    pub payload: &'a RawValue,
    /// The time limit in whole seconds; 0 means none.
    pub timeout_s: u64,
    /// The job type.
    #[serde(rename = "type")]
    pub job_type: &'a str,
    /// How the job runs (new; Goop² executors ignore it).
    pub mode: JobMode,
    /// Which attempt at the job this is (new; Goop² executors ignore it).
    pub attempt: Attempt,
}

impl JobLine<'_> {
    /// Appends the line, `\n` included, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Serializing plain strings, numbers and an already valid raw value into a Vec
        // cannot fail.
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }
}

/// Appends the cancel line for `job_id`, `\n` included, to `out`.
pub fn write_cancel_line(job_id: &str, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct CancelLine<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        job_id: &'a str,
    }
    let line = CancelLine {
        kind: CANCEL_TYPE,
        job_id,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// One line printed by an executor, selected by its `status` field. Borrows from the line.
#[derive(Debug)]
pub enum ExecutorLine<'a> {
    /// `{"status":"progress","pct":<number>,"msg":<string>}`.
    Progress {
        /// The job the line is about, when given.
        job_id: Option<Cow<'a, str>>,
        /// Percent done; any finite number (Goop² accepted integers only).
        pct: f64,
        /// A short message, empty when absent.
        msg: Cow<'a, str>,
    },
    /// `{"status":"done","result":<JSON>}`: the job finished with a result.
    Done {
        /// The job the line is about, when given.
        job_id: Option<Cow<'a, str>>,
        /// The result, raw; `null` when absent.
        result: &'a RawValue,
    },
    /// `{"status":"error","error":<string>}`: the job failed with this text.
    Error {
        /// The job the line is about, when given.
        job_id: Option<Cow<'a, str>>,
        /// The error text, verbatim; may be empty.
        error: Cow<'a, str>,
    },
    /// `{"status":"output","data":<JSON>}`: a partial output of a continuous job.
    Output {
        /// The job the line is about, when given.
        job_id: Option<Cow<'a, str>>,
        /// The output, raw; `null` when absent.
        data: &'a RawValue,
    },
    /// `{"status":"log","msg":<string>}`: a log line.
    Log {
        /// The job the line is about, when given.
        job_id: Option<Cow<'a, str>>,
        /// The text, empty when absent.
        msg: Cow<'a, str>,
    },
}

impl<'a> ExecutorLine<'a> {
    /// The `job_id` the line carries, if any.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Self::Progress { job_id, .. }
            | Self::Done { job_id, .. }
            | Self::Error { job_id, .. }
            | Self::Output { job_id, .. }
            | Self::Log { job_id, .. } => job_id.as_deref(),
        }
    }

    /// Parses one line (without its `\n`; a trailing `\r` is tolerated).
    pub fn parse(line: &'a [u8]) -> Result<Self, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| LineError::NotJson)?;
        let fields: LineFields<'a> = serde_json::from_str(text).map_err(|_| LineError::NotJson)?;
        let LineFields::Object(values) = fields else {
            return Err(LineError::NotObject);
        };
        let get = |name: &str| {
            let at = LINE_KEYS.iter().position(|key| *key == name)?;
            values[at].filter(|value| value.get() != "null")
        };
        let string = |name: &'static str| -> Result<Option<Cow<'a, str>>, LineError> {
            get(name)
                .map(|raw| {
                    serde_json::from_str::<Text<'a>>(raw.get())
                        .map(|text| text.0)
                        .map_err(|_| LineError::BadField {
                            field: name,
                            expected: "a string",
                        })
                })
                .transpose()
        };
        let status = string("status")?.ok_or(LineError::NoStatus)?;
        let job_id = string("job_id")?;
        let null = RawValue::NULL;
        match &*status {
            "progress" => {
                let pct = match get("pct") {
                    None => 0.0,
                    Some(raw) => serde_json::from_str::<f64>(raw.get())
                        .ok()
                        .filter(|pct| pct.is_finite())
                        .ok_or(LineError::BadField {
                            field: "pct",
                            expected: "a number",
                        })?,
                };
                let msg = string("msg")?.unwrap_or_default();
                Ok(Self::Progress { job_id, pct, msg })
            }
            "done" => Ok(Self::Done {
                job_id,
                result: get("result").unwrap_or(null),
            }),
            "error" => Ok(Self::Error {
                job_id,
                error: string("error")?.unwrap_or_default(),
            }),
            "output" => Ok(Self::Output {
                job_id,
                data: get("data").unwrap_or(null),
            }),
            "log" => Ok(Self::Log {
                job_id,
                msg: string("msg")?.unwrap_or_default(),
            }),
            _ => Err(LineError::UnknownStatus(status.into_owned())),
        }
    }
}

/// Why an executor's line is not a protocol line. Executors may print anything; these lines are
/// kept as logs, never treated as a crash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is not valid JSON.
    #[error("not a JSON line")]
    NotJson,
    /// The line is JSON but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// The object has no `status` string.
    #[error("no status field")]
    NoStatus,
    /// The `status` is none of `progress`, `done`, `error`, `output`, `log` (values are
    /// case-sensitive).
    #[error("unknown status {0:?}")]
    UnknownStatus(String),
    /// A known field has the wrong JSON type.
    #[error("field {field} is not {expected}")]
    BadField {
        /// The field name.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
}

/// What an executor declared in its `__check__` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckInfo {
    /// The job types it serves; empty means all types.
    pub types: Vec<String>,
    /// How many jobs it runs at once (at least 1).
    pub capacity: u32,
    /// Its version, when it gave one.
    pub version: Option<String>,
}

impl Default for CheckInfo {
    fn default() -> Self {
        Self {
            types: Vec::new(),
            capacity: 1,
            version: None,
        }
    }
}

impl CheckInfo {
    /// Reads the check answer's `result` the way Goop² does: `types` keeps the non-empty strings
    /// of an array, `capacity` is a number truncated to an integer (below 1 means 1), `version`
    /// a string. Anything missing or of another type falls back to the default, so any `done`
    /// answer verifies the executor.
    pub fn from_result(result: &RawValue) -> Self {
        struct Loose<'a> {
            types: Option<&'a RawValue>,
            capacity: Option<&'a RawValue>,
            version: Option<&'a RawValue>,
        }
        let mut info = Self::default();
        let Ok(Fields::Object(fields)) = serde_json::from_str::<Fields<'_>>(result.get()) else {
            return info;
        };
        let get = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| *value)
        };
        let loose = Loose {
            types: get("types"),
            capacity: get("capacity"),
            version: get("version"),
        };
        if let Some(Ok(types)) = loose
            .types
            .map(|raw| serde_json::from_str::<Vec<serde_json::Value>>(raw.get()))
        {
            info.types = types
                .into_iter()
                .filter_map(|t| match t {
                    serde_json::Value::String(s) if !s.is_empty() => Some(s),
                    _ => None,
                })
                .collect();
        }
        if let Some(Ok(capacity)) = loose
            .capacity
            .map(|raw| serde_json::from_str::<f64>(raw.get()))
            && capacity >= 1.0
        {
            // A float-to-int cast saturates, so an absurd capacity becomes u32::MAX.
            info.capacity = capacity as u32;
        }
        if let Some(Ok(version)) = loose
            .version
            .map(|raw| serde_json::from_str::<String>(raw.get()))
        {
            info.version = Some(version);
        }
        info
    }

    /// Whether the executor serves jobs of this type.
    pub fn serves(&self, job_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == job_type)
    }
}

/// A JSON string, borrowed when it has no escapes.
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// The keys an output line may use, lowercase; matched in any letter case.
const LINE_KEYS: [&str; 7] = ["status", "job_id", "pct", "msg", "result", "error", "data"];

/// The values of `LINE_KEYS` in an output line (the last one of each wins), left raw; or a
/// marker that the line was JSON but not an object. Other keys are skipped without copying.
enum LineFields<'a> {
    Object([Option<&'a RawValue>; LINE_KEYS.len()]),
    Other,
}

impl<'de> Deserialize<'de> for LineFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LineVisitor;
        impl<'de> Visitor<'de> for LineVisitor {
            type Value = LineFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut values = [None; LINE_KEYS.len()];
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match LINE_KEYS
                        .iter()
                        .position(|k| k.eq_ignore_ascii_case(&key.0))
                    {
                        Some(at) => values[at] = Some(map.next_value::<&'de RawValue>()?),
                        None => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(LineFields::Object(values))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(LineFields::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LineFields::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LineFields::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LineFields::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LineFields::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(LineFields::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LineFields::Other)
            }
        }
        deserializer.deserialize_any(LineVisitor)
    }
}

/// The members of a JSON object in order, values left raw; or a marker that it was not one.
enum Fields<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    Other,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(4);
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key.0, value));
                }
                Ok(Fields::Object(fields))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Fields::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Fields::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Fields::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Fields::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Fields::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Fields::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Fields::Other)
            }
        }
        deserializer.deserialize_any(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn job_line_keeps_goop2_field_order_and_raw_payload() {
        let payload = raw(r#"{"n":12345678901234567890,"big":99999999999999999999999}"#);
        let mut out = Vec::new();
        JobLine {
            job_id: "00000000000000ff",
            payload: &payload,
            timeout_s: 7,
            job_type: "render",
            mode: JobMode::Continuous,
            attempt: Attempt(3),
        }
        .write_to(&mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            concat!(
                r#"{"job_id":"00000000000000ff","payload":{"n":12345678901234567890,"#,
                r#""big":99999999999999999999999},"timeout_s":7,"type":"render","#,
                r#""mode":"continuous","attempt":3}"#,
                "\n"
            )
        );
    }

    #[test]
    fn cancel_line_shape() {
        let mut out = Vec::new();
        write_cancel_line("abc", &mut out);
        assert_eq!(out, b"{\"type\":\"__cancel__\",\"job_id\":\"abc\"}\n");
    }

    #[test]
    fn check_line_is_valid_json_with_null_payload() {
        let v: serde_json::Value = serde_json::from_str(CHECK_LINE).unwrap();
        assert_eq!(v["job_id"], "__check__");
        assert_eq!(v["type"], "__check__");
        assert!(v["payload"].is_null());
        assert_eq!(v["timeout_s"], 0);
    }

    #[test]
    fn parses_each_kind() {
        match ExecutorLine::parse(br#"{"status":"progress","pct":12.5,"msg":"hi"}"#).unwrap() {
            ExecutorLine::Progress { job_id, pct, msg } => {
                assert_eq!(job_id, None);
                assert!((pct - 12.5).abs() < f64::EPSILON);
                assert_eq!(msg, "hi");
            }
            other => panic!("{other:?}"),
        }
        match ExecutorLine::parse(br#"{"job_id":"j","status":"done","result":[1,2]}"#).unwrap() {
            ExecutorLine::Done { job_id, result } => {
                assert_eq!(job_id.as_deref(), Some("j"));
                assert_eq!(result.get(), "[1,2]");
            }
            other => panic!("{other:?}"),
        }
        match ExecutorLine::parse(br#"{"status":"done"}"#).unwrap() {
            ExecutorLine::Done { result, .. } => assert_eq!(result.get(), "null"),
            other => panic!("{other:?}"),
        }
        match ExecutorLine::parse(b"{\"status\":\"error\",\"error\":\"bad \\\"x\\\"\"}\r").unwrap()
        {
            ExecutorLine::Error { error, .. } => assert_eq!(error, "bad \"x\""),
            other => panic!("{other:?}"),
        }
        match ExecutorLine::parse(br#"{"status":"output","data":{"a":1}}"#).unwrap() {
            ExecutorLine::Output { data, .. } => assert_eq!(data.get(), r#"{"a":1}"#),
            other => panic!("{other:?}"),
        }
        match ExecutorLine::parse(br#"{"status":"log","msg":"m"}"#).unwrap() {
            ExecutorLine::Log { msg, .. } => assert_eq!(msg, "m"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_match_in_any_case_and_last_duplicate_wins() {
        let line = br#"{"STATUS":"done","Result":1,"result":99999999999999999999999}"#;
        match ExecutorLine::parse(line).unwrap() {
            ExecutorLine::Done { result, .. } => {
                assert_eq!(result.get(), "99999999999999999999999")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_values_are_case_sensitive_and_bad_lines_are_errors() {
        assert_eq!(
            ExecutorLine::parse(br#"{"status":"Done"}"#).unwrap_err(),
            LineError::UnknownStatus("Done".into())
        );
        assert_eq!(
            ExecutorLine::parse(b"hello").unwrap_err(),
            LineError::NotJson
        );
        assert_eq!(
            ExecutorLine::parse(b"[1]").unwrap_err(),
            LineError::NotObject
        );
        assert_eq!(ExecutorLine::parse(b"{}").unwrap_err(), LineError::NoStatus);
        assert!(matches!(
            ExecutorLine::parse(br#"{"status":"progress","pct":"x"}"#).unwrap_err(),
            LineError::BadField { field: "pct", .. }
        ));
        assert!(matches!(
            ExecutorLine::parse(br#"{"status":"error","error":3}"#).unwrap_err(),
            LineError::BadField { field: "error", .. }
        ));
        assert!(matches!(
            ExecutorLine::parse(br#"{"status":"done","job_id":7}"#).unwrap_err(),
            LineError::BadField {
                field: "job_id",
                ..
            }
        ));
        assert_eq!(
            ExecutorLine::parse(b"\xff\xfe").unwrap_err(),
            LineError::NotJson
        );
    }

    #[test]
    fn null_fields_count_as_absent() {
        match ExecutorLine::parse(br#"{"status":"error","error":null,"job_id":null}"#).unwrap() {
            ExecutorLine::Error { job_id, error } => {
                assert_eq!(job_id, None);
                assert_eq!(error, "");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn check_info_follows_goop2_rules() {
        let info = CheckInfo::from_result(&raw(
            r#"{"types":["render","",3,"transcode"],"capacity":4.9,"version":"1.2"}"#,
        ));
        assert_eq!(info.types, ["render", "transcode"]);
        assert_eq!(info.capacity, 4);
        assert_eq!(info.version.as_deref(), Some("1.2"));
        assert!(info.serves("render"));
        assert!(!info.serves("Render"));

        let info = CheckInfo::from_result(&raw(r#"{"types":"render","capacity":0}"#));
        assert_eq!(info, CheckInfo::default());
        assert!(info.serves("anything"));
        assert_eq!(CheckInfo::from_result(&raw("null")), CheckInfo::default());
        assert_eq!(CheckInfo::from_result(&raw("[1]")), CheckInfo::default());
    }

    #[test]
    fn binary_mode_parses() {
        assert_eq!("daemon".parse::<BinaryMode>().unwrap(), BinaryMode::Daemon);
        assert_eq!(
            "bogus".parse::<BinaryMode>().unwrap_err().to_string(),
            "invalid mode \"bogus\" (must be oneshot or daemon)"
        );
    }
}
