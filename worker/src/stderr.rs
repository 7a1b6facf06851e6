//! What an executor writes on stderr: split into log lines, and the last few KiB kept in a ring
//! to attach to failures.

use std::collections::VecDeque;

pub(crate) struct StderrTail {
    ring: VecDeque<u8>,
    cap: usize,
    /// The line being assembled, cut at `max_line` bytes.
    partial: Vec<u8>,
    max_line: usize,
    /// Bytes of the current line beyond `max_line`, dropped.
    cut: bool,
}

impl StderrTail {
    pub(crate) fn new(cap: usize, max_line: usize) -> Self {
        Self {
            ring: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
            partial: Vec::new(),
            max_line,
            cut: false,
        }
    }

    /// Adds a chunk read from stderr and calls `on_line` for each line it completes.
    pub(crate) fn push(&mut self, chunk: &[u8], mut on_line: impl FnMut(String)) {
        if self.cap > 0 {
            let take = chunk.len().min(self.cap);
            let overflow = (self.ring.len() + take).saturating_sub(self.cap);
            self.ring.drain(..overflow);
            self.ring.extend(&chunk[chunk.len() - take..]);
        }
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = self.max_line.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&body[..body.len().min(room)]);
            self.cut |= body.len() > room;
            if ends {
                on_line(self.take_line());
            }
        }
    }

    /// Passes on a last line that had no `\n`.
    pub(crate) fn finish(&mut self, mut on_line: impl FnMut(String)) {
        if !self.partial.is_empty() || self.cut {
            on_line(self.take_line());
        }
    }

    fn take_line(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.partial).into_owned();
        if line.ends_with('\r') {
            line.pop();
        }
        if self.cut {
            line.push_str(" [cut]");
        }
        self.partial.clear();
        self.cut = false;
        line
    }

    /// The end of what was written, trimmed; `None` when nothing was.
    pub(crate) fn tail(&self) -> Option<String> {
        let (a, b) = self.ring.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_keeps_a_bounded_tail() {
        let mut tail = StderrTail::new(8, 5);
        let mut lines = Vec::new();
        tail.push(b"hello world\nab", |l| lines.push(l));
        tail.push(b"c\nxyz", |l| lines.push(l));
        tail.finish(|l| lines.push(l));
        assert_eq!(lines, ["hello [cut]", "abc", "xyz"]);
        assert_eq!(tail.tail().as_deref(), Some("abc\nxyz"));
        assert_eq!(StderrTail::new(8, 5).tail(), None);
    }
}
