//! The MQ envelope: the frames peers exchange on `/goop/mq/1.0.0`.
//!
//! Framing is one JSON object per line (`\n` terminated). A sender writes `msg` frames; the
//! receiver answers each one with an `ack` (Goop²'s shape) or, for a frame it refuses, a `nack`
//! (a goop addition that Goop² senders never see unless they send something refused). Payloads
//! are kept as raw JSON text, so numbers and key order pass through untouched.
//!
//! Decoding is deliberately lenient where Goop² is: the receiver never checked `type` on a
//! message, so a frame with a `topic` and no `type` is a message too.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The libp2p protocol id of the MQ bus.
pub const MQ_PROTOCOL: &str = "/goop/mq/1.0.0";

/// The default largest frame a receiver accepts, newline excluded: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The longest message id accepted from the wire. Goop² uses 36-character UUIDs.
pub const MAX_MSG_ID_LEN: usize = 128;

/// The `code` of a nack for a frame longer than the receiver's limit.
pub const NACK_TOO_LARGE: &str = "too_large";
/// The `code` of a nack for a line that is not a valid frame.
pub const NACK_MALFORMED: &str = "malformed";
/// The `code` of a nack for a message the receiver cannot take now (it is shutting down).
pub const NACK_UNAVAILABLE: &str = "unavailable";

/// A message id: any non-empty string of at most [`MAX_MSG_ID_LEN`] bytes without control
/// characters. The sender keeps the same id across retries so the receiver can drop repeats.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MsgId(Box<str>);

impl MsgId {
    /// Checks and wraps an id.
    pub fn new(id: &str) -> Result<Self, FrameError> {
        let ok = !id.is_empty() && id.len() <= MAX_MSG_ID_LEN && !id.chars().any(char::is_control);
        if ok {
            Ok(Self(id.into()))
        } else {
            Err(FrameError::BadId)
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId({:?})", &*self.0)
    }
}

impl<'de> Deserialize<'de> for MsgId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A message: `{"type":"msg","id","seq","topic","payload"}`.
#[derive(Clone, Debug)]
pub struct MsgFrame {
    /// Unique per message, kept across retries.
    pub id: MsgId,
    /// The sender's counter; informational (Goop² shares one counter across destinations).
    pub seq: i64,
    /// The routing key, matched by prefix on the receiver.
    pub topic: String,
    /// The application data, verbatim JSON (`null` when absent).
    pub payload: Box<RawValue>,
}

/// An acknowledgement: `{"type":"ack","id","seq"}`, written once the receiver took the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckFrame {
    /// The id of the acknowledged message.
    pub id: MsgId,
    /// The `seq` of the acknowledged message, echoed.
    pub seq: i64,
}

/// A refusal: `{"type":"nack","id"?,"seq"?,"code","message"}`.
///
/// It answers the oldest unanswered frame on the stream (frames are answered in order); `id`
/// is there when the receiver could read it, which it cannot always do for an oversized or
/// malformed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NackFrame {
    /// The id of the refused message, when known.
    pub id: Option<MsgId>,
    /// The `seq` of the refused message, when known.
    pub seq: Option<i64>,
    /// Machine-readable reason: [`NACK_TOO_LARGE`], [`NACK_MALFORMED`], [`NACK_UNAVAILABLE`].
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

/// One line on an MQ stream.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A message.
    Msg(MsgFrame),
    /// An acknowledgement.
    Ack(AckFrame),
    /// A refusal.
    Nack(NackFrame),
}

/// Why a line is not a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line is not a JSON object of the expected shape.
    #[error("invalid mq frame: {0}")]
    Json(#[from] serde_json::Error),
    /// The `type` is none of `msg`, `ack`, `nack`.
    #[error("invalid mq frame: unknown type {0:?}")]
    UnknownType(String),
    /// A required field is missing.
    #[error("invalid mq frame: missing field {0:?}")]
    Missing(&'static str),
    /// The id is empty, too long or holds control characters.
    #[error("invalid mq frame: id must be 1 to {MAX_MSG_ID_LEN} bytes without control characters")]
    BadId,
}

/// The lenient wire shape every frame is first read into.
#[derive(Deserialize)]
struct WireFrame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<MsgId>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Serialize)]
struct WireMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a MsgId,
    seq: i64,
    topic: &'a str,
    payload: &'a RawValue,
}

#[derive(Serialize)]
struct WireAck<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a MsgId,
    seq: i64,
}

#[derive(Serialize)]
struct WireNack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a MsgId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    code: &'a str,
    message: &'a str,
}

/// `null` as raw JSON: the payload of a message that carries none.
fn null() -> Box<RawValue> {
    Box::<RawValue>::default()
}

impl Frame {
    /// Reads one frame from a line (without its `\n`; a trailing `\r` or spaces are fine).
    pub fn decode(line: &[u8]) -> Result<Self, FrameError> {
        let wire: WireFrame<'_> = serde_json::from_slice(line)?;
        let kind = wire.kind.as_deref();
        match kind {
            Some("msg") | None if wire.topic.is_some() || kind.is_some() => {
                Ok(Self::Msg(MsgFrame {
                    id: wire.id.ok_or(FrameError::Missing("id"))?,
                    seq: wire.seq.unwrap_or(0),
                    topic: wire.topic.ok_or(FrameError::Missing("topic"))?,
                    payload: wire.payload.map_or_else(null, RawValue::to_owned),
                }))
            }
            Some("ack") => Ok(Self::Ack(AckFrame {
                id: wire.id.ok_or(FrameError::Missing("id"))?,
                seq: wire.seq.unwrap_or(0),
            })),
            Some("nack") => Ok(Self::Nack(NackFrame {
                id: wire.id,
                seq: wire.seq,
                code: wire.code.unwrap_or_default(),
                message: wire.message.unwrap_or_default(),
            })),
            None => Err(FrameError::Missing("type")),
            Some(other) => Err(FrameError::UnknownType(other.to_owned())),
        }
    }

    /// Appends the frame and its `\n` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let written = match self {
            Self::Msg(m) => serde_json::to_writer(
                &mut *out,
                &WireMsg {
                    kind: "msg",
                    id: &m.id,
                    seq: m.seq,
                    topic: &m.topic,
                    payload: &m.payload,
                },
            ),
            Self::Ack(a) => serde_json::to_writer(
                &mut *out,
                &WireAck {
                    kind: "ack",
                    id: &a.id,
                    seq: a.seq,
                },
            ),
            Self::Nack(n) => serde_json::to_writer(
                &mut *out,
                &WireNack {
                    kind: "nack",
                    id: n.id.as_ref(),
                    seq: n.seq,
                    code: &n.code,
                    message: &n.message,
                },
            ),
        };
        // Serializing these plain structs into a Vec cannot fail: every field is a string,
        // an integer or already-valid raw JSON.
        debug_assert!(written.is_ok());
        out.push(b'\n');
    }

    /// The frame and its `\n` as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Finds `"id":"…"` and `"seq":N` near the start of a line too long or too broken to decode,
/// so a nack can still name the message it refuses. Best effort: `None` when not found.
pub fn sniff_id_and_seq(prefix: &[u8]) -> (Option<MsgId>, Option<i64>) {
    let text = String::from_utf8_lossy(prefix);
    let id = find_after(&text, "\"id\"").and_then(|rest| {
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix('"')?;
        let end = rest.find('"')?;
        MsgId::new(&rest[..end]).ok()
    });
    let seq = find_after(&text, "\"seq\"").and_then(|rest| {
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    });
    (id, seq)
}

fn find_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.find(key).map(|at| &text[at + key.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(line: &str) -> MsgFrame {
        match Frame::decode(line.as_bytes()).unwrap() {
            Frame::Msg(m) => m,
            other => panic!("not a msg: {other:?}"),
        }
    }

    #[test]
    fn goop2_message_round_trips_with_payload_untouched() {
        let line = r#"{"type":"msg","id":"6f1c","seq":42,"topic":"group:9a:msg","payload":{"n":12345678901234567890123,"b":[true,null,1.50]}}"#;
        let m = msg(line);
        assert_eq!(m.id.as_str(), "6f1c");
        assert_eq!(m.seq, 42);
        assert_eq!(m.topic, "group:9a:msg");
        assert_eq!(
            m.payload.get(),
            r#"{"n":12345678901234567890123,"b":[true,null,1.50]}"#
        );
        let encoded = Frame::Msg(m).encode();
        assert_eq!(encoded, format!("{line}\n").into_bytes());
    }

    #[test]
    fn message_without_type_or_payload_is_accepted() {
        let m = msg(r#"{"id":"a","seq":1,"topic":"t"}"#);
        assert_eq!(m.payload.get(), "null");
        let m = msg(r#"{"type":"msg","id":"a","topic":"t","payload":null}"#);
        assert_eq!(m.payload.get(), "null");
        assert_eq!(m.seq, 0);
    }

    #[test]
    fn ack_and_nack_encode_in_their_wire_shape() {
        let id = MsgId::new("x1").unwrap();
        let ack = Frame::Ack(AckFrame {
            id: id.clone(),
            seq: 7,
        });
        assert_eq!(
            ack.encode(),
            b"{\"type\":\"ack\",\"id\":\"x1\",\"seq\":7}\n"
        );
        let nack = Frame::Nack(NackFrame {
            id: None,
            seq: None,
            code: NACK_TOO_LARGE.to_owned(),
            message: "too big".to_owned(),
        });
        let line = nack.encode();
        assert_eq!(
            line,
            b"{\"type\":\"nack\",\"code\":\"too_large\",\"message\":\"too big\"}\n"
        );
        match Frame::decode(&line[..line.len() - 1]).unwrap() {
            Frame::Nack(n) => assert_eq!(n.code, "too_large"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"type":"msg","topic":"t"}"#,
            r#"{"type":"bogus","id":"a"}"#,
            r#"{"type":"msg","id":"","topic":"t"}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"msg","id":"a","topic":"t","payload":}"#,
        ] {
            assert!(Frame::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sniffing_finds_id_and_seq_in_a_prefix() {
        let (id, seq) =
            sniff_id_and_seq(br#"{"type":"msg","id":"abc-1","seq":99,"topic":"t","payload":"xxxx"#);
        assert_eq!(id.unwrap().as_str(), "abc-1");
        assert_eq!(seq, Some(99));
        assert_eq!(sniff_id_and_seq(b"garbage"), (None, None));
    }
}
