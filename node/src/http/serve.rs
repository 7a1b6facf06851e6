//! The API's accept loop: axum's router on hyper's HTTP/1 connections, with the limits
//! `axum::serve` does not set. At most [`MAX_CONNECTIONS`] connections are served at once
//! (more wait in the listen backlog); a request's headers must arrive within
//! [`HEADER_READ_TIMEOUT`] and its body may pause at most [`BODY_IDLE_TIMEOUT`] between
//! chunks, so a client that opens connections and sends nothing, or a body that never ends,
//! holds nothing for long.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's headers (and, between requests on a
/// kept-alive connection, to start the next one).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request body may go without a byte.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The limits of [`serve`]; the defaults are the constants above.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets the requests in progress finish
/// (at most [`SHUTDOWN_GRACE`]). `app` should have [`idle_body`] as a layer.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut warned: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        // Said at most once a minute: a client that keeps the API full would fill the log.
        let quiet = warned.is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if slots.available_permits() == 0 && !quiet {
            warned = Some(Instant::now());
            tracing::warn!(
                max = limits.max_connections,
                "the API serves as many connections as it may; new ones wait"
            );
        }
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "API connection ended");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("API requests still in progress after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}

/// Gives a request a body that fails when no byte came for [`BODY_IDLE_TIMEOUT`] (the
/// router's outermost layer).
pub(crate) async fn idle_body(request: axum::extract::Request) -> axum::extract::Request {
    with_idle_body(request, BODY_IDLE_TIMEOUT)
}

fn with_idle_body(request: axum::extract::Request, idle: Duration) -> axum::extract::Request {
    request.map(|body| Body::new(IdleBody::new(body, idle)))
}

/// A request body that fails when no frame came for its idle time, counted from the first
/// time it is read.
struct IdleBody {
    inner: Body,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    fn new(inner: Body, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(timer) = &mut this.timer {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "no byte of the request body came for {} s",
                        idle.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::post;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;

    /// A server echoing POST bodies, with a 300 ms body idle time and these limits.
    async fn server(limits: Limits) -> (SocketAddr, CancellationToken) {
        let app = Router::new()
            .route("/echo", post(|body: String| async move { body }))
            .layer(axum::middleware::map_request(
                |request: axum::extract::Request| async move {
                    with_idle_body(request, Duration::from_millis(300))
                },
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, app, shutdown.clone(), limits));
        (addr, shutdown)
    }

    /// Everything the server sends until it closes the connection (bounded at 10 s).
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out));
        read.await.expect("the server closes the connection").ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    const ECHO: &[u8] =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";

    #[tokio::test]
    async fn headers_that_never_end_and_bodies_that_stall_are_cut_off() {
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(300),
        };
        let (addr, shutdown) = server(limits).await;
        // Headers that never end: the connection is closed, nothing is answered.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut slow).await;
        assert!(!answer.contains("200 OK"), "{answer}");
        // A body that stops short of its length: refused once it stalls.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n123456789")
            .await
            .unwrap();
        let answer = read_to_close(&mut stalled).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        // A whole request is answered as before.
        let mut whole = TcpStream::connect(addr).await.unwrap();
        whole.write_all(ECHO).await.unwrap();
        let answer = read_to_close(&mut whole).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"),
            "{answer}"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_free_one() {
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(2),
        };
        let (addr, shutdown) = server(limits).await;
        // Two connections that send nothing hold both places.
        let idle = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(ECHO).await.unwrap();
        let mut first = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut first)).await;
        assert!(early.is_err(), "answered while the limit was reached");
        // The idle ones time out; the third is served.
        let answer = read_to_close(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(idle);
        shutdown.cancel();
    }
}
