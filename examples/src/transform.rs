//! Text and table conversions, for the `transform` job type.
//!
//! Formats:
//! - `upper`, `lower`: change case (Unicode-aware);
//! - `reverse`: reverse the characters;
//! - `trim`: strip leading and trailing whitespace;
//! - `base64`, `base64_decode`: standard alphabet with padding (decoding must yield UTF-8);
//! - `word_count`: `{"lines","words","chars","bytes"}` of the text;
//! - `csv_to_json`: CSV (RFC 4180: quoted fields, `""` escapes, CRLF) with a header row to an
//!   array of objects in column order; every value stays a string, so nothing is rounded;
//! - `json_to_csv`: an array of objects (or that array as a JSON string) to CSV with a header
//!   row; columns in order of first appearance; numbers are copied digit for digit.
//!
//! Options: `delimiter` (one character, default `,`) for both CSV formats.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Every format, for error messages and documentation.
pub const FORMATS: &[&str] = &[
    "upper",
    "lower",
    "reverse",
    "trim",
    "base64",
    "base64_decode",
    "word_count",
    "csv_to_json",
    "json_to_csv",
];

/// What a transform produced: text, or JSON written as is.
#[derive(Debug)]
pub enum Transformed {
    /// A string result.
    Text(String),
    /// Counts for `word_count`.
    Counts {
        /// Lines (a last line without `\n` counts).
        lines: usize,
        /// Whitespace-separated words.
        words: usize,
        /// Unicode scalar values.
        chars: usize,
        /// UTF-8 bytes.
        bytes: usize,
    },
    /// Rows for `csv_to_json`: the header, then rows of the same width.
    Table(Vec<String>, Vec<Vec<String>>),
}

impl Serialize for Transformed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Counts {
                lines,
                words,
                chars,
                bytes,
            } => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("lines", lines)?;
                map.serialize_entry("words", words)?;
                map.serialize_entry("chars", chars)?;
                map.serialize_entry("bytes", bytes)?;
                map.end()
            }
            Self::Table(header, rows) => {
                let mut seq = serializer.serialize_seq(Some(rows.len()))?;
                for row in rows {
                    seq.serialize_element(&Record(header, row))?;
                }
                seq.end()
            }
        }
    }
}

/// One CSV row as a JSON object, keys in header order.
struct Record<'a>(&'a [String], &'a [String]);

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0.iter().zip(self.1) {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Runs a transform. `input` is the payload's `input` field as raw JSON; `progress` receives
/// (percent, message) as rows are processed.
///
/// # Errors
/// A message saying what is wrong with the input, the format or the options.
pub fn transform(
    input: &RawValue,
    format: &str,
    delimiter: char,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<Transformed, String> {
    if format == "json_to_csv" {
        return json_to_csv(input, delimiter, progress).map(Transformed::Text);
    }
    let text: String = serde_json::from_str(input.get())
        .map_err(|e| format!("`input` must be a string for {format}: {e}"))?;
    Ok(match format {
        "upper" => Transformed::Text(text.to_uppercase()),
        "lower" => Transformed::Text(text.to_lowercase()),
        "reverse" => Transformed::Text(text.chars().rev().collect()),
        "trim" => Transformed::Text(text.trim().to_owned()),
        "base64" => Transformed::Text(base64_encode(text.as_bytes())),
        "base64_decode" => {
            let bytes = base64_decode(&text)?;
            Transformed::Text(
                String::from_utf8(bytes).map_err(|_| "decoded bytes are not UTF-8".to_owned())?,
            )
        }
        "word_count" => Transformed::Counts {
            lines: text.lines().count(),
            words: text.split_whitespace().count(),
            chars: text.chars().count(),
            bytes: text.len(),
        },
        "csv_to_json" => {
            let (header, rows) = csv_to_rows(&text, delimiter, progress)?;
            Transformed::Table(header, rows)
        }
        other => {
            return Err(format!(
                "unknown format {other:?}; known formats: {}",
                FORMATS.join(", ")
            ));
        }
    })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional, whitespace is ignored.
///
/// # Errors
/// On a character outside the alphabet or a length no encoding produces.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut digits = 0usize;
    for (at, c) in text
        .trim_end_matches(|c: char| c == '=' || c.is_whitespace())
        .char_indices()
    {
        if c.is_whitespace() {
            continue;
        }
        let value = ALPHABET
            .iter()
            .position(|&a| char::from(a) == c)
            .ok_or_else(|| format!("invalid base64 character {c:?} at byte {at}"))?;
        acc = (acc << 6) | value as u32;
        bits += 6;
        digits += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if digits % 4 == 1 {
        return Err("invalid base64 length".to_owned());
    }
    Ok(out)
}

/// Parses CSV text into a header and rows.
fn csv_to_rows(
    text: &str,
    delimiter: char,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1usize;
    let mut done_bytes = 0usize;
    let mut next_report = text.len() / 10;
    while let Some(c) = chars.next() {
        done_bytes += c.len_utf8();
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    done_bytes += 1;
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                line += 1;
                if done_bytes >= next_report {
                    progress(
                        90.0 * done_bytes as f64 / text.len() as f64,
                        &format!("parsed {} rows", records.len()),
                    );
                    next_report = done_bytes + text.len() / 10;
                }
            }
            c if c == delimiter => record.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quoted field at line {line}"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    let mut records = records.into_iter();
    let header = records.next().ok_or("csv input has no header row")?;
    let rows: Vec<Vec<String>> = records.collect();
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(format!(
                "row {} has {} fields, the header has {}",
                i + 2,
                row.len(),
                header.len()
            ));
        }
    }
    Ok((header, rows))
}

/// An object whose entries keep their order and their raw values.
struct OrderedObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// An array of ordered objects.
struct Rows(Vec<OrderedObject>);

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowsVisitor;
        impl<'de> Visitor<'de> for RowsVisitor {
            type Value = Rows;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
                let mut rows = Vec::new();
                while let Some(row) = seq.next_element::<OrderedObject>()? {
                    rows.push(row);
                }
                Ok(Rows(rows))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Rows, E> {
                // The array may come as JSON text inside a string.
                serde_json::from_str(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(RowsVisitor)
    }
}

fn json_to_csv(
    input: &RawValue,
    delimiter: char,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<String, String> {
    let Rows(rows) = serde_json::from_str(input.get())
        .map_err(|e| format!("`input` must be an array of objects for json_to_csv: {e}"))?;
    let mut header: Vec<&str> = Vec::new();
    for row in &rows {
        for (key, _) in &row.0 {
            if !header.contains(&key.as_str()) {
                header.push(key);
            }
        }
    }
    let mut out = String::new();
    let cells: Vec<String> = header.iter().map(|h| csv_cell(h, delimiter)).collect();
    out.push_str(&cells.join(&delimiter.to_string()));
    out.push('\n');
    let step = (rows.len() / 10).max(1);
    for (i, row) in rows.iter().enumerate() {
        let mut first = true;
        for column in &header {
            if !first {
                out.push(delimiter);
            }
            first = false;
            if let Some((_, value)) = row.0.iter().find(|(key, _)| key == column) {
                out.push_str(&csv_cell(&cell_text(value)?, delimiter));
            }
        }
        out.push('\n');
        if (i + 1) % step == 0 {
            progress(
                90.0 * (i + 1) as f64 / rows.len() as f64,
                &format!("wrote {} of {} rows", i + 1, rows.len()),
            );
        }
    }
    Ok(out)
}

/// The text of a JSON value in a CSV cell: strings unquoted, `null` empty, everything else (numbers
/// included) as its exact JSON text.
fn cell_text(value: &RawValue) -> Result<String, String> {
    let raw = value.get();
    if raw.starts_with('"') {
        serde_json::from_str(raw).map_err(|e| e.to_string())
    } else if raw == "null" {
        Ok(String::new())
    } else {
        Ok(raw.to_owned())
    }
}

/// Quotes a cell when it holds the delimiter, a quote, a line break or edge spaces.
fn csv_cell(text: &str, delimiter: char) -> String {
    let needs_quotes =
        text.contains([delimiter, '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, format: &str) -> Result<String, String> {
        let raw = RawValue::from_string(input.to_owned()).map_err(|e| e.to_string())?;
        let out = transform(&raw, format, ',', &mut |_, _| {})?;
        serde_json::to_string(&out).map_err(|e| e.to_string())
    }

    #[test]
    fn transforms_the_table_of_cases() {
        let cases: &[(&str, &str, Result<&str, &str>)] = &[
            (r#""Hello Wörld""#, "upper", Ok(r#""HELLO WÖRLD""#)),
            (r#""Hello""#, "lower", Ok(r#""hello""#)),
            (r#""abc😀""#, "reverse", Ok(r#""😀cba""#)),
            (r#""  x  ""#, "trim", Ok(r#""x""#)),
            (r#""hello""#, "base64", Ok(r#""aGVsbG8=""#)),
            (r#""hi""#, "base64", Ok(r#""aGk=""#)),
            (r#""""#, "base64", Ok(r#""""#)),
            (r#""aGVsbG8=""#, "base64_decode", Ok(r#""hello""#)),
            (r#""aGk""#, "base64_decode", Ok(r#""hi""#)),
            (
                r#""a$b""#,
                "base64_decode",
                Err("invalid base64 character '$' at byte 1"),
            ),
            (
                r#""one two\nthree""#,
                "word_count",
                Ok(r#"{"lines":2,"words":3,"chars":13,"bytes":13}"#),
            ),
            (
                r#""b,a\n1,\"x, \"\"y\"\"\"\r\n3,4\n""#,
                "csv_to_json",
                Ok(r#"[{"b":"1","a":"x, \"y\""},{"b":"3","a":"4"}]"#),
            ),
            (
                r#""a,b\n1""#,
                "csv_to_json",
                Err("row 2 has 1 fields, the header has 2"),
            ),
            (
                r#""a\n\"1""#,
                "csv_to_json",
                Err("unterminated quoted field at line 2"),
            ),
            (
                r#"[{"z":99999999999999999999999,"a":"x,y"},{"a":null,"n":true}]"#,
                "json_to_csv",
                Ok(r#""z,a,n\n99999999999999999999999,\"x,y\",\n,,true\n""#),
            ),
            (r#""[{\"a\":1}]""#, "json_to_csv", Ok(r#""a\n1\n""#)),
            (
                r#"{"a":1}"#,
                "json_to_csv",
                Err("`input` must be an array of objects"),
            ),
            (r#"5"#, "upper", Err("`input` must be a string for upper")),
            (r#""x""#, "rot13", Err("unknown format \"rot13\"")),
        ];
        for (input, format, expected) in cases {
            let got = run(input, format);
            match (expected, &got) {
                (Ok(want), Ok(out)) => assert_eq!(out, want, "{format} {input}"),
                (Err(want), Err(error)) => {
                    assert!(error.starts_with(want), "{format} {input}: {error}");
                }
                _ => panic!("{format} {input}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
    }
}
