//! A reader with an idle limit, for bytes that come from another peer.

use std::time::Duration;

use futures::AsyncRead;

/// A reader that fails once it has waited `idle` for bytes: a peer that stops sending in
/// the middle of a file ends the transfer instead of holding it open for ever.
pub(crate) struct IdleTimeout<R> {
    inner: R,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<R> IdleTimeout<R> {
    pub(crate) fn new(inner: R, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(read) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(read)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {} s", this.idle.as_secs_f64()),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::io::AsyncReadExt as _;

    use super::*;

    /// A peer that sends nothing and never ends.
    struct Silent;

    impl AsyncRead for Silent {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_transfer_that_stops_sending_fails_after_the_idle_time() {
        let mut body = IdleTimeout::new(Silent, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let error = body
            .read(&mut buf)
            .await
            .expect_err("a silent peer times out");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        // A reader that has its bytes is read to the end.
        let mut body = IdleTimeout::new(&b"all of it"[..], Duration::from_millis(50));
        let mut text = String::new();
        body.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "all of it");
    }
}
