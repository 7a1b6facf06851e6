//! A line reader with a size limit that survives oversized lines.
//!
//! A line longer than the limit is not buffered: its bytes are counted and thrown away up to
//! the next `\n`, keeping only a short prefix (so a refusal can name the message). The stream
//! stays usable for the lines after it. `next` is cancel-safe: bytes are only moved into the
//! buffer after a read completes, so dropping the future in a `select!` loses nothing.

use std::io;

use futures::{AsyncRead, AsyncReadExt as _};

/// How much is read from the stream at once.
const CHUNK: usize = 64 * 1024;
/// How much of an oversized line is kept for the refusal.
const PREFIX: usize = 4 * 1024;

/// What the reader found.
#[derive(Debug)]
pub(crate) enum Line {
    /// A complete line, without its `\n`.
    Frame(Vec<u8>),
    /// A line over the limit: its first bytes and its full length.
    TooLong { prefix: Vec<u8>, len: usize },
    /// The stream ended (a last line without `\n` is returned as a frame first).
    Eof,
}

pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the current line in `buf`.
    start: usize,
    /// Bytes of the current line already searched for `\n`.
    scanned: usize,
    /// Set while skipping an oversized line: its prefix and length so far.
    discarding: Option<(Vec<u8>, usize)>,
    max: usize,
    chunk: Box<[u8]>,
    eof: bool,
    /// Every byte read from the stream so far.
    received: u64,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: None,
            max,
            chunk: vec![0; CHUNK].into_boxed_slice(),
            eof: false,
            received: 0,
        }
    }

    /// How many bytes were read from the stream so far: a line still arriving shows here.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Whether a complete line is already buffered, so `next` will not wait.
    pub(crate) fn has_line(&self) -> bool {
        self.buf[self.start + self.scanned..].contains(&b'\n') || self.eof
    }

    /// The next line, waiting for the stream when none is buffered.
    pub(crate) async fn next(&mut self) -> io::Result<Line> {
        loop {
            if let Some(line) = self.take() {
                return Ok(line);
            }
            if self.eof {
                return Ok(self.finish());
            }
            let n = self.inner.read(&mut self.chunk).await?;
            if n == 0 {
                self.eof = true;
            } else {
                self.received += n as u64;
                self.buf.extend_from_slice(&self.chunk[..n]);
            }
        }
    }

    /// Takes a complete line out of the buffer, or moves an overlong partial line into the
    /// discarding state.
    fn take(&mut self) -> Option<Line> {
        let from = self.start + self.scanned;
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = from + at;
                let line = &self.buf[self.start..end];
                let result = match self.discarding.take() {
                    Some((prefix, len)) => Line::TooLong {
                        prefix,
                        len: len + line.len(),
                    },
                    None if line.len() > self.max => Line::TooLong {
                        prefix: line[..PREFIX.min(line.len())].to_vec(),
                        len: line.len(),
                    },
                    None => Line::Frame(line.to_vec()),
                };
                self.start = end + 1;
                self.scanned = 0;
                self.compact();
                Some(result)
            }
            None => {
                let pending = self.buf.len() - self.start;
                match &mut self.discarding {
                    Some((_, len)) => {
                        *len += pending;
                        self.buf.truncate(self.start);
                        self.scanned = 0;
                    }
                    None if pending > self.max => {
                        let line = &self.buf[self.start..];
                        self.discarding = Some((line[..PREFIX.min(line.len())].to_vec(), pending));
                        self.buf.truncate(self.start);
                        self.scanned = 0;
                    }
                    None => self.scanned = pending,
                }
                self.compact();
                None
            }
        }
    }

    /// The end of the stream: a last line without `\n` (Goop² receivers accept one) or EOF.
    fn finish(&mut self) -> Line {
        let rest = &self.buf[self.start..];
        let line = match self.discarding.take() {
            Some((prefix, len)) => Line::TooLong {
                prefix,
                len: len + rest.len(),
            },
            None if rest.iter().all(u8::is_ascii_whitespace) => Line::Eof,
            None if rest.len() > self.max => Line::TooLong {
                prefix: rest[..PREFIX.min(rest.len())].to_vec(),
                len: rest.len(),
            },
            None => Line::Frame(rest.to_vec()),
        };
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        line
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > CHUNK && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.next().await.unwrap() {
                Line::Frame(f) => out.push(String::from_utf8(f).unwrap()),
                Line::TooLong { len, .. } => out.push(format!("<too long {len}>")),
                Line::Eof => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_last_line_without_newline() {
        assert_eq!(read_all(b"a\nbb\n\nccc", 10).await, ["a", "bb", "", "ccc"]);
        assert_eq!(read_all(b"", 10).await, Vec::<String>::new());
        assert_eq!(read_all(b"x\n  ", 10).await, ["x"]);
    }

    #[tokio::test]
    async fn an_oversized_line_is_skipped_and_the_next_ones_still_read() {
        let mut input = b"ok1\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200_000));
        input.extend(b"\nok2\n");
        assert_eq!(
            read_all(&input, 1000).await,
            ["ok1", "<too long 200000>", "ok2"]
        );
        assert_eq!(
            read_all(b"12345\n123456\n", 5).await,
            ["12345", "<too long 6>"]
        );
    }

    /// Hands out its bytes in chunks of the given sizes, as a network would.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl futures::AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let size = self.sizes[self.turn % self.sizes.len()].max(1);
            self.turn += 1;
            let n = size.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    proptest::proptest! {
        /// However the bytes are chunked, the reader yields the lines a plain split gives,
        /// with the ones over the limit replaced by their lengths.
        #[test]
        fn chunking_never_changes_the_lines(
            lines in proptest::collection::vec("[a-z{}\":,]{0,40}", 0..30),
            sizes in proptest::collection::vec(1usize..70, 1..8),
            max in 1usize..30,
        ) {
            let mut data = Vec::new();
            for line in &lines {
                data.extend_from_slice(line.as_bytes());
                data.push(b'\n');
            }
            let expected: Vec<String> = lines
                .iter()
                .map(|l| if l.len() > max { format!("<too long {}>", l.len()) } else { l.clone() })
                .collect();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = runtime.block_on(async {
                let mut reader = LineReader::new(Chunked { data, at: 0, sizes, turn: 0 }, max);
                let mut out = Vec::new();
                loop {
                    match reader.next().await.unwrap() {
                        Line::Frame(f) => out.push(String::from_utf8(f).unwrap()),
                        Line::TooLong { len, .. } => out.push(format!("<too long {len}>")),
                        Line::Eof => break,
                    }
                }
                out
            });
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
