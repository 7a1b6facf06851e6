//! A bounded line reader over an executor's stdout.
//!
//! A line longer than the limit is not buffered: its first bytes are kept (enough to find a
//! `job_id`), the rest is read and thrown away up to the next `\n`. Every call keeps its state
//! in the reader, so `next` can be dropped in a `select!` and called again without losing data.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How much of an over-long line is kept, to find the job it belongs to.
const KEPT_PREFIX: usize = 4096;

/// What `next` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line; read it with `text`.
    Text,
    /// A line of `len` bytes, over the limit; its first bytes are in `text`.
    TooLong { len: usize },
}

pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    max: usize,
    /// Bytes of the current line seen so far, kept or not.
    line_len: usize,
    /// The previous line was returned, so `buf` is cleared before reading on.
    returned: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::new(),
            max,
            line_len: 0,
            returned: false,
        }
    }

    /// The line `next` found, without its `\n` (or the first bytes of an over-long line).
    pub(crate) fn text(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next line; `None` at end of file. Cancel-safe.
    pub(crate) async fn next(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.buffered() {
                return Ok(Some(line));
            }
            if self.inner.fill_buf().await?.is_empty() {
                if self.line_len == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.finish()));
            }
        }
    }

    /// The next line if it is already complete in the buffer; never reads.
    pub(crate) fn buffered(&mut self) -> Option<Line> {
        if self.returned {
            self.returned = false;
            self.buf.clear();
            self.line_len = 0;
            if self.buf.capacity() > 1024 * 1024 {
                // Do not keep a huge buffer alive after one big line.
                self.buf.shrink_to(64 * 1024);
            }
        }
        let available = self.inner.buffer();
        if available.is_empty() {
            return None;
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = newline.unwrap_or(available.len());
        let len = self.line_len + chunk;
        if len <= self.max {
            self.buf.extend_from_slice(&available[..chunk]);
        } else if self.buf.len() < KEPT_PREFIX {
            let keep = (KEPT_PREFIX - self.buf.len()).min(chunk);
            self.buf.extend_from_slice(&available[..keep]);
        }
        self.line_len = len;
        let consumed = newline.map_or(available.len(), |at| at + 1);
        self.inner.consume(consumed);
        newline.map(|_| self.finish())
    }

    fn finish(&mut self) -> Line {
        self.returned = true;
        if self.line_len > self.max {
            return Line::TooLong { len: self.line_len };
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Line::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next().await.unwrap() {
            out.push((line, reader.text().to_vec()));
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_strips_carriage_returns() {
        let lines = collect(b"a\r\n\nbc\nlast", 10).await;
        assert_eq!(
            lines,
            [
                (Line::Text, b"a".to_vec()),
                (Line::Text, b"".to_vec()),
                (Line::Text, b"bc".to_vec()),
                (Line::Text, b"last".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn over_long_lines_are_skipped_to_their_end() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nok\n");
        input.extend(std::iter::repeat_n(b'y', 20));
        let lines = collect(&input, 16).await;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].0, Line::TooLong { len: 10_000 });
        assert_eq!(lines[0].1.len(), KEPT_PREFIX);
        assert_eq!(lines[1], (Line::Text, b"ok".to_vec()));
        assert_eq!(lines[2].0, Line::TooLong { len: 20 });
    }
}
