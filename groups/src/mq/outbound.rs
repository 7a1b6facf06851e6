//! The sending side: one task per destination peer with a long-lived stream and a window of
//! unacknowledged messages.
//!
//! Messages are written as they come (many per write when several are queued) while acks are
//! read back; a message leaves the window when its ack (or a later one: acks are cumulative
//! because the receiver handles a stream in order) arrives, or fails when a nack names it.
//! When the stream breaks, the window is sent again, same ids, on a new stream; the receiver
//! drops what it already had. Goop² receivers close the stream after one message, which this
//! handles the same way: each new stream makes progress, so the retry budget never runs out.

use std::collections::VecDeque;
use std::sync::Weak;

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::{PeerId, Stream};
use proto::Frame;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lines::{Line, LineReader};
use super::{Inner, MqConfig, MqError, Outgoing, Retire, protocol};
use crate::net::{NodeHandle, peer_to_proto};

/// How many bytes of queued messages are gathered into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Scheduler turns given to producers while gathering a batch. A lone message (nothing else
/// in flight) is written at once, so light traffic keeps its latency.
const COALESCE_YIELDS: u32 = 2;
/// The most written at once under one `ack_timeout`: a receiver that takes this much within
/// the timeout (about 9 KB/s at the default 30 s) is slow, not gone.
const WRITE_CHUNK: usize = 256 * 1024;

struct Conn {
    reader: LineReader<ReadHalf<Stream>>,
    writer: WriteHalf<Stream>,
}

/// What the link loop reacts to.
enum Event {
    Line(std::io::Result<Line>),
    Queued(Option<Outgoing>),
    AckTimeout,
    Idle,
    Stop,
}

pub(crate) struct Link {
    peer: PeerId,
    rx: mpsc::Receiver<Outgoing>,
    config: MqConfig,
    control: libp2p_stream::Control,
    node: NodeHandle,
    cancel: CancellationToken,
    conn: Option<Conn>,
    window: VecDeque<Outgoing>,
    /// Failures in a row without an ack in between.
    failures: u32,
    /// Whether the current stream has carried an ack; a stream that did and then ended (a
    /// Goop² receiver closes after one message) is reopened at once, without counting.
    acked_on_stream: bool,
    last_failure: String,
    /// When the window last made progress (or became non-empty).
    progress_at: Instant,
    batch: Vec<u8>,
}

impl Link {
    pub(crate) fn new(peer: PeerId, rx: mpsc::Receiver<Outgoing>, inner: &Inner) -> Self {
        Self {
            peer,
            rx,
            config: inner.config.clone(),
            control: inner.control.clone(),
            node: inner.node.clone(),
            cancel: inner.cancel.clone(),
            conn: None,
            window: VecDeque::new(),
            failures: 0,
            acked_on_stream: false,
            last_failure: String::new(),
            progress_at: Instant::now(),
            batch: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, bus: Weak<Inner>) {
        loop {
            let room = self.window.len() < self.config.window;
            let ack_deadline = self.progress_at + self.config.ack_timeout;
            let event = tokio::select! {
                () = self.cancel.cancelled() => Event::Stop,
                line = next_line(&mut self.conn) => Event::Line(line),
                out = self.rx.recv(), if room => Event::Queued(out),
                () = tokio::time::sleep_until(ack_deadline), if !self.window.is_empty() => {
                    Event::AckTimeout
                }
                () = tokio::time::sleep(self.config.link_idle), if self.window.is_empty() => {
                    Event::Idle
                }
            };
            match event {
                Event::Stop => break,
                Event::Queued(None) => break,
                Event::Queued(Some(out)) => self.on_queued(out).await,
                Event::Line(line) => self.on_line(line).await,
                Event::AckTimeout => {
                    let reason = format!("no acknowledgement within {:?}", self.config.ack_timeout);
                    self.recover(reason).await;
                }
                Event::Idle => {
                    self.conn = None;
                    self.batch = Vec::new();
                    let Some(bus) = bus.upgrade() else { break };
                    match bus.retire_link(self.peer, &mut self.rx) {
                        Retire::Done => break,
                        Retire::Busy => {}
                        Retire::Reopened(mut closed) => {
                            // A closed channel still yields what reserved senders put in;
                            // `None` comes once they are all done.
                            while let Some(out) = closed.recv().await {
                                self.on_queued(out).await;
                            }
                        }
                    }
                }
            }
        }
        // Whatever is still waiting gets an answer: the bus is stopping.
        self.fail_window(|_| MqError::Closed);
        self.rx.close();
        while let Ok(out) = self.rx.try_recv() {
            let _ = out.reply.send(Err(MqError::Closed));
        }
    }

    /// A message from a caller: write it, with whatever else is queued, up to the window.
    async fn on_queued(&mut self, first: Outgoing) {
        if self.window.is_empty() {
            self.progress_at = Instant::now();
        }
        self.batch.clear();
        self.batch.extend_from_slice(&first.bytes);
        self.window.push_back(first);
        // Every write is a yamux frame and a Noise record, so small writes are expensive.
        // When more messages are likely coming (the queue was not empty a moment ago), give
        // the producers a turn of the scheduler and gather what they add.
        let mut yields = 0;
        while self.window.len() < self.config.window && self.batch.len() < WRITE_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(out) => {
                    self.batch.extend_from_slice(&out.bytes);
                    self.window.push_back(out);
                }
                Err(_) if yields < COALESCE_YIELDS && self.window.len() > 1 => {
                    yields += 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        if self.conn.is_none() {
            // Opening the stream writes the whole window, this batch included.
            self.open_and_resend().await;
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let result = self.write(&batch).await;
        self.batch = batch;
        if let Err(reason) = result {
            self.recover(reason).await;
        }
    }

    async fn on_line(&mut self, line: std::io::Result<Line>) {
        let bytes = match line {
            Ok(Line::Frame(bytes)) => bytes,
            Ok(Line::TooLong { len, .. }) => {
                self.recover(format!("receiver sent a {len}-byte line"))
                    .await;
                return;
            }
            Ok(Line::Eof) => {
                if self.window.is_empty() {
                    self.conn = None;
                } else {
                    self.recover("receiver closed the stream".to_owned()).await;
                }
                return;
            }
            Err(e) => {
                self.recover(format!("stream failed: {e}")).await;
                return;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match Frame::decode(&bytes) {
            Ok(Frame::Ack(ack)) => {
                let Some(at) = self.window.iter().position(|o| o.id == ack.id) else {
                    tracing::debug!(peer = %self.peer, id = %ack.id, "ack for no message in flight");
                    return;
                };
                for out in self.window.drain(..=at) {
                    let _ = out.reply.send(Ok(out.id));
                }
                self.progress();
            }
            Ok(Frame::Nack(nack)) => {
                // A nack answers the oldest unanswered message unless it names another one.
                let at = match &nack.id {
                    Some(id) => self.window.iter().position(|o| o.id == *id),
                    None => (!self.window.is_empty()).then_some(0),
                };
                let Some(at) = at else {
                    tracing::debug!(peer = %self.peer, "nack for no message in flight");
                    return;
                };
                if let Some(out) = self.window.remove(at) {
                    tracing::warn!(
                        peer = %self.peer,
                        id = %out.id,
                        code = %nack.code,
                        reason = %nack.message,
                        "mq message refused by receiver"
                    );
                    let _ = out.reply.send(Err(MqError::Rejected {
                        peer: peer_to_proto(&self.peer),
                        id: out.id,
                        code: nack.code,
                        message: nack.message,
                    }));
                }
                self.progress();
            }
            Ok(Frame::Msg(_)) => {
                tracing::warn!(peer = %self.peer, "ignored a message sent back on an outbound mq stream");
            }
            Err(error) => {
                tracing::warn!(peer = %self.peer, %error, "ignored a malformed answer on an mq stream");
            }
        }
    }

    fn progress(&mut self) {
        self.failures = 0;
        self.acked_on_stream = true;
        self.progress_at = Instant::now();
    }

    /// The stream broke: count a failure and, within the budget, reopen it and send the
    /// window again.
    async fn recover(&mut self, reason: String) {
        tracing::debug!(peer = %self.peer, %reason, in_flight = self.window.len(), "mq stream broken");
        self.conn = None;
        if self.window.is_empty() {
            return;
        }
        if std::mem::take(&mut self.acked_on_stream) {
            self.failures = 0;
        } else {
            self.failures += 1;
        }
        self.last_failure = reason;
        if self.failures >= self.config.max_attempts {
            self.give_up();
            return;
        }
        self.open_and_resend().await;
    }

    /// Opens a stream and writes the whole window on it, retrying with backoff within the
    /// failure budget.
    async fn open_and_resend(&mut self) {
        while !self.window.is_empty() {
            if self.failures > 0 {
                let pause = self
                    .config
                    .retry_backoff
                    .saturating_mul(1 << (self.failures - 1).min(16));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.cancel.cancelled() => return,
                }
            }
            match self.open().await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.acked_on_stream = false;
                    self.progress_at = Instant::now();
                    let mut all = Vec::new();
                    for out in &self.window {
                        all.extend_from_slice(&out.bytes);
                    }
                    match self.write(&all).await {
                        Ok(()) => return,
                        Err(reason) => {
                            self.conn = None;
                            self.last_failure = reason;
                        }
                    }
                }
                Err(reason) => self.last_failure = reason,
            }
            self.failures += 1;
            if self.failures >= self.config.max_attempts {
                self.give_up();
                return;
            }
        }
    }

    async fn open(&mut self) -> Result<Conn, String> {
        self.node
            .connect(self.peer)
            .await
            .map_err(|e| e.to_string())?;
        let open = self.control.open_stream(self.peer, protocol());
        let stream = match tokio::time::timeout(self.node.dial_timeout, open).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("opening an mq stream timed out".to_owned()),
        };
        let (read, writer) = stream.split();
        // Answers are small; the limit only guards against a misbehaving receiver.
        let reader = LineReader::new(read, 64 * 1024);
        Ok(Conn { reader, writer })
    }

    /// Writes `bytes` on the stream. What fails a write is a receiver that takes nothing for
    /// `ack_timeout`, not a slow one: a message near the size limit on a slow link may take
    /// far longer than that in all. Once written, the acknowledgements are waited for from
    /// now.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Err("no stream".to_owned());
        };
        let stall = self.config.ack_timeout;
        let stalled = || format!("the receiver took no data for {stall:?}");
        let write = async {
            for chunk in bytes.chunks(WRITE_CHUNK) {
                tokio::time::timeout(stall, conn.writer.write_all(chunk))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| format!("write failed: {e}"))?;
            }
            tokio::time::timeout(stall, conn.writer.flush())
                .await
                .map_err(|_| stalled())?
                .map_err(|e| format!("write failed: {e}"))
        };
        tokio::select! {
            result = write => result?,
            () = self.cancel.cancelled() => return Err("the mq bus is stopping".to_owned()),
        }
        self.progress_at = Instant::now();
        Ok(())
    }

    fn give_up(&mut self) {
        let attempts = self.failures;
        let reason = std::mem::take(&mut self.last_failure);
        tracing::warn!(
            peer = %self.peer,
            %reason,
            attempts,
            failed = self.window.len(),
            "cannot deliver mq messages"
        );
        let peer = peer_to_proto(&self.peer);
        self.fail_window(|id| MqError::Undeliverable {
            peer: peer.clone(),
            id,
            attempts,
            reason: reason.clone(),
        });
        self.failures = 0;
        self.conn = None;
    }

    fn fail_window(&mut self, error: impl Fn(proto::MsgId) -> MqError) {
        for out in self.window.drain(..) {
            let e = error(out.id.clone());
            let _ = out.reply.send(Err(e));
        }
    }
}

async fn next_line(conn: &mut Option<Conn>) -> std::io::Result<Line> {
    match conn {
        Some(conn) => conn.reader.next().await,
        None => std::future::pending().await,
    }
}
