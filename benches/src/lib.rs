//! Shared pieces of the goop benchmarks.

use std::time::Instant;

use futures::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};

/// The baseline of the MQ and group benchmarks: `n` copies of `line` written on a bare libp2p
/// stream, many lines per write as the MQ link does, while a reader counts the answers the
/// other end echoes. Returns lines per second.
pub async fn bare_stream_throughput(
    stream: libp2p::Stream,
    n: usize,
    line: &str,
) -> anyhow::Result<f64> {
    let (read, mut write) = stream.split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut lines = futures::io::BufReader::new(read).lines();
        let mut got = 0;
        while got < n {
            match lines.next().await {
                Some(Ok(_)) => got += 1,
                _ => break,
            }
        }
        got
    });
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(line.as_bytes());
        if batch.len() >= 256 * 1024 || i + 1 == n {
            write.write_all(&batch).await?;
            write.flush().await?;
            batch.clear();
        }
    }
    let got = reader.await?;
    let elapsed = started.elapsed();
    let _ = write.close().await;
    if got != n {
        anyhow::bail!("baseline got {got} of {n} answers");
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}
