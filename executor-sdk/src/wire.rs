//! The executor protocol on the wire: reading input lines under a size limit, decoding them into
//! checks, cancels and jobs, and encoding the output lines.
//!
//! Decoding borrows from the line buffer wherever it can so that a job line costs no more
//! allocations than the owned job needs. Output lines are written into caller-owned buffers.

use std::borrow::Cow;
use std::io::{self, BufRead};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::job::Mode;

/// What one call to [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineRead {
    /// The input is closed and nothing is left.
    Eof,
    /// A whole line is in the buffer, without its `\n` or `\r\n`.
    Line,
    /// The line was longer than the limit: the buffer holds its first `limit` bytes and the rest
    /// was skipped.
    TooLong,
}

/// Reads one line into `buf` (cleared first), keeping at most `limit` bytes of it.
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    let mut saw_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !saw_any {
                return Ok(LineRead::Eof);
            }
            break;
        }
        saw_any = true;
        let (chunk, consumed, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], at + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            let room = limit - buf.len();
            if chunk.len() > room {
                buf.extend_from_slice(&chunk[..room]);
                too_long = true;
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(consumed);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(LineRead::TooLong);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(LineRead::Line)
}

/// One decoded input line.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    /// The `__check__` handshake; answered with the executor's description.
    Check { job_id: Cow<'a, str> },
    /// `{"type":"__cancel__","job_id":...}`: stop that job.
    Cancel { job_id: Cow<'a, str> },
    /// A job to run.
    Job(JobLine<'a>),
    /// A blank line, skipped.
    Blank,
}

/// A job line, borrowed from the input buffer.
#[derive(Debug)]
pub(crate) struct JobLine<'a> {
    pub(crate) job_id: Cow<'a, str>,
    pub(crate) job_type: Cow<'a, str>,
    pub(crate) payload: Option<&'a RawValue>,
    pub(crate) timeout_s: f64,
    pub(crate) mode: Mode,
    pub(crate) attempt: Option<u64>,
}

/// Why an input line could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// No job id could be read: the line can only be reported as a log.
    NoId { reason: String },
    /// The line names a job: that job fails with this reason.
    Job {
        job_id: String,
        attempt: Option<u64>,
        reason: String,
    },
}

pub(crate) const CHECK: &str = "__check__";
pub(crate) const CANCEL: &str = "__cancel__";

/// Every field the protocol defines on input lines; unknown fields are ignored.
#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow, default)]
    job_id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    timeout_s: Option<f64>,
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
    #[serde(default)]
    attempt: Option<u64>,
}

/// The fields worth salvaging from a line that did not decode as a whole.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    job_id: Option<Cow<'a, str>>,
    #[serde(default)]
    attempt: Option<u64>,
}

/// Decodes one input line.
pub(crate) fn decode(line: &[u8]) -> Result<Input<'_>, Malformed> {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(Input::Blank),
        Some(b'{') => {}
        // Checked up front because serde would also read a struct from an array.
        Some(_) => {
            return Err(Malformed::NoId {
                reason: "malformed input line: not a JSON object".to_owned(),
            });
        }
    }
    let raw: RawLine<'_> = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(err) => return Err(salvage(line, format!("malformed input line: {err}"))),
    };
    let kind = raw.kind.as_deref();
    if kind == Some(CHECK) || (kind.is_none() && raw.job_id.as_deref() == Some(CHECK)) {
        return Ok(Input::Check {
            job_id: raw.job_id.unwrap_or(Cow::Borrowed(CHECK)),
        });
    }
    let Some(job_id) = raw.job_id else {
        return Err(Malformed::NoId {
            reason: "input line has no job_id".to_owned(),
        });
    };
    let fail = |reason: String| Malformed::Job {
        job_id: job_id.clone().into_owned(),
        attempt: raw.attempt,
        reason,
    };
    let Some(job_type) = raw.kind else {
        return Err(fail("job line has no type".to_owned()));
    };
    if job_type == CANCEL {
        return Ok(Input::Cancel { job_id });
    }
    let mode = match raw.mode.as_deref() {
        None | Some("oneshot") => Mode::Oneshot,
        Some("continuous") => Mode::Continuous,
        Some(other) => return Err(fail(format!("job line has unknown mode {other:?}"))),
    };
    let timeout_s = raw
        .timeout_s
        .filter(|t| t.is_finite() && *t > 0.0)
        .unwrap_or(0.0);
    Ok(Input::Job(JobLine {
        job_id,
        job_type,
        payload: raw.payload,
        timeout_s,
        mode,
        attempt: raw.attempt,
    }))
}

/// Turns an undecodable line into the most useful report: an error for the job it names, when a
/// job id can still be read, or else a log.
pub(crate) fn salvage(line: &[u8], reason: String) -> Malformed {
    if let Ok(IdOnly {
        job_id: Some(job_id),
        attempt,
    }) = serde_json::from_slice::<IdOnly<'_>>(line)
    {
        return Malformed::Job {
            job_id: job_id.into_owned(),
            attempt,
            reason,
        };
    }
    match leading_job_id(line) {
        Some(job_id) => Malformed::Job {
            job_id: job_id.to_owned(),
            attempt: None,
            reason,
        },
        None => Malformed::NoId { reason },
    }
}

/// Reads the job id of a line that cannot be decoded whole (cut at the size limit, say) when it
/// starts the line, as it does in every line a worker writes: `{"job_id":"<id>",...`.
fn leading_job_id(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(br#"{"job_id":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' || end == 0 {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

/// Writes `{"job_id":<id>` and, when the job line had one, `,"attempt":<n>`: the start of every
/// line about a job.
pub(crate) fn write_prefix(out: &mut Vec<u8>, job_id: &str, attempt: Option<u64>) {
    out.extend_from_slice(br#"{"job_id":"#);
    write_str(out, job_id);
    if let Some(attempt) = attempt {
        out.extend_from_slice(br#","attempt":"#);
        write_u64(out, attempt);
    }
}

/// Writes a JSON string literal.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    // Serializing a `str` into a `Vec` cannot fail: the writer is infallible and every `str` is
    // valid UTF-8.
    let _ = serde_json::to_writer(&mut *out, text);
}

pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// Writes a percentage, as an integer whenever it is a whole number because Goop² workers reject
/// fractional ones.
pub(crate) fn write_pct(out: &mut Vec<u8>, pct: f64) {
    let pct = if pct.is_nan() {
        0.0
    } else {
        pct.clamp(0.0, 100.0)
    };
    if pct.fract() == 0.0 {
        // A whole number in 0..=100 converts exactly.
        write_u64(out, pct as u64);
    } else {
        let _ = serde_json::to_writer(&mut *out, &pct);
    }
}

/// A whole `error` line for a job.
pub(crate) fn write_error(out: &mut Vec<u8>, job_id: &str, attempt: Option<u64>, error: &str) {
    write_prefix(out, job_id, attempt);
    out.extend_from_slice(br#","status":"error","error":"#);
    write_str(out, error);
    out.extend_from_slice(b"}\n");
}

/// A whole `log` line; `job_id` is `None` for messages about the executor itself.
pub(crate) fn write_log(out: &mut Vec<u8>, job: Option<(&str, Option<u64>)>, msg: &str) {
    match job {
        Some((job_id, attempt)) => {
            write_prefix(out, job_id, attempt);
            out.push(b',');
        }
        None => out.push(b'{'),
    }
    out.extend_from_slice(br#""status":"log","msg":"#);
    write_str(out, msg);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a line decodes to, flattened for comparison.
    fn summary(line: &str) -> String {
        match decode(line.as_bytes()) {
            Ok(Input::Blank) => "blank".to_owned(),
            Ok(Input::Check { job_id }) => format!("check {job_id}"),
            Ok(Input::Cancel { job_id }) => format!("cancel {job_id}"),
            Ok(Input::Job(job)) => format!(
                "job {} {} {} {} {:?} {:?}",
                job.job_id,
                job.job_type,
                job.payload.map_or("-", RawValue::get),
                job.timeout_s,
                job.mode,
                job.attempt
            ),
            Err(Malformed::NoId { reason }) => format!("log {reason}"),
            Err(Malformed::Job {
                job_id,
                attempt,
                reason,
            }) => format!("error {job_id} {attempt:?} {reason}"),
        }
    }

    #[test]
    fn decodes_the_table_of_lines() {
        let cases = [
            (
                r#"{"job_id":"__check__","type":"__check__","payload":null,"timeout_s":0}"#,
                "check __check__",
            ),
            (
                r#"{"job_id":"__check__","payload":{},"timeout_s":0}"#,
                "check __check__",
            ),
            (r#"{"type":"__check__"}"#, "check __check__"),
            (r#"{"type":"__cancel__","job_id":"a1"}"#, "cancel a1"),
            (
                r#"{"job_id":"a1","payload":{"x":[1, 2]},"timeout_s":30,"type":"calc"}"#,
                r#"job a1 calc {"x":[1, 2]} 30 Oneshot None"#,
            ),
            (
                r#"{"job_id":"a\"1","type":"t","payload":null,"mode":"continuous","attempt":3,"extra":{"x":1}}"#,
                r#"job a"1 t - 0 Continuous Some(3)"#,
            ),
            (
                r#"{"job_id":"a1","type":"t","timeout_s":-5}"#,
                "job a1 t - 0 Oneshot None",
            ),
            (
                r#"{"job_id":"a1","type":"t","timeout_s":1.5}"#,
                "job a1 t - 1.5 Oneshot None",
            ),
            ("", "blank"),
            (" \t ", "blank"),
            ("nonsense", "log malformed input line: not a JSON object"),
            (
                r#"["a1","t"]"#,
                "log malformed input line: not a JSON object",
            ),
            (
                "{",
                "log malformed input line: EOF while parsing an object at line 1 column 1",
            ),
            (r#"{"type":"t"}"#, "log input line has no job_id"),
            (
                r#"{"job_id":7,"type":"t"}"#,
                "log malformed input line: invalid type: integer `7`, expected a string at line 1 column 11",
            ),
            (r#"{"job_id":"a1"}"#, "error a1 None job line has no type"),
            (
                r#"{"job_id":"a1","type":"t","mode":"x","attempt":2}"#,
                r#"error a1 Some(2) job line has unknown mode "x""#,
            ),
            (
                r#"{"job_id":"a1","type":"t","attempt":2,"timeout_s":"x"}"#,
                "error a1 Some(2) malformed input line: invalid type: string \"x\", expected f64 at line 1 column 53",
            ),
            (
                r#"{"job_id":"a1","type":"t","payload":[1,"#,
                "error a1 None malformed input line: EOF while parsing a value at line 1 column 39",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(summary(line), expected, "{line}");
        }
    }

    fn read_all(input: &[u8], limit: usize) -> Vec<(LineRead, String)> {
        // A tiny buffer makes lines span many `fill_buf` calls.
        let mut reader = io::BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let read = read_line(&mut reader, &mut buf, limit).unwrap();
            if read == LineRead::Eof {
                return out;
            }
            out.push((read, String::from_utf8(buf.clone()).unwrap()));
        }
    }

    #[test]
    fn reads_lines_under_a_limit() {
        assert_eq!(
            read_all(b"ab\r\ncdefgh\n\nxyz", 4),
            [
                (LineRead::Line, "ab".to_owned()),
                (LineRead::TooLong, "cdef".to_owned()),
                (LineRead::Line, String::new()),
                (LineRead::Line, "xyz".to_owned()),
            ]
        );
        assert_eq!(read_all(b"", 4), []);
        assert_eq!(
            read_all(b"abcd\n", 4),
            [(LineRead::Line, "abcd".to_owned())]
        );
    }

    #[test]
    fn salvages_the_leading_job_id_of_a_cut_line() {
        let cut = br#"{"job_id":"abc","type":"t","payload":"xxxxx"#;
        assert_eq!(
            salvage(cut, "too long".to_owned()),
            Malformed::Job {
                job_id: "abc".to_owned(),
                attempt: None,
                reason: "too long".to_owned()
            }
        );
        for line in [
            &br#"{"job_id":"a\"b","x"#[..],
            br#"{ "job_id":"abc"#,
            br#"{"job_id":"#,
        ] {
            assert!(matches!(
                salvage(line, String::new()),
                Malformed::NoId { .. }
            ));
        }
    }

    #[test]
    fn writes_progress_numbers_goop2_accepts() {
        for (pct, text) in [
            (50.0, "50"),
            (12.5, "12.5"),
            (-3.0, "0"),
            (250.0, "100"),
            (f64::NAN, "0"),
        ] {
            let mut out = Vec::new();
            write_pct(&mut out, pct);
            assert_eq!(out, text.as_bytes(), "{pct}");
        }
    }
}
