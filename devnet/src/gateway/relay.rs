//! Moving bytes between client and backend: a two-way relay with an optional added delay per
//! direction, and a reader that replays the ClientHello bytes the gateway already consumed.
//!
//! The delay is a delay line, not a throttle: each chunk is stamped when it is read and
//! written once its stamp plus the delay has passed, while later chunks are already being
//! read. So it adds latency (like `tc netem delay`, which this kernel lacks) without capping
//! throughput at one chunk per delay.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read per chunk.
const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks held in a delay line per direction. Bounds the memory of a delayed connection
/// (64 × 16 KiB); a full line stops reading, so back-pressure still reaches the sender.
const CHUNKS_IN_FLIGHT: usize = 64;

/// Added one-way delay on the gateway path, per direction. An echo round trip through the
/// gateway takes at least `to_backend + to_client` longer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathDelay {
    /// Added to bytes going from the client to the backend.
    pub to_backend: Duration,
    /// Added to bytes going from the backend to the client.
    pub to_client: Duration,
}

impl PathDelay {
    /// No added delay.
    pub const NONE: Self = Self {
        to_backend: Duration::ZERO,
        to_client: Duration::ZERO,
    };

    /// The same delay each way.
    pub fn symmetric(delay: Duration) -> Self {
        Self {
            to_backend: delay,
            to_client: delay,
        }
    }
}

/// The delay the relays read for every chunk, settable while connections are live.
#[derive(Debug, Default)]
pub(super) struct DelayKnobs {
    to_backend_us: AtomicU64,
    to_client_us: AtomicU64,
}

impl DelayKnobs {
    pub fn set(&self, delay: PathDelay) {
        self.to_backend_us
            .store(micros(delay.to_backend), Ordering::Relaxed);
        self.to_client_us
            .store(micros(delay.to_client), Ordering::Relaxed);
    }

    pub fn get(&self) -> PathDelay {
        PathDelay {
            to_backend: Duration::from_micros(self.to_backend_us.load(Ordering::Relaxed)),
            to_client: Duration::from_micros(self.to_client_us.load(Ordering::Relaxed)),
        }
    }
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
}

/// Bytes forwarded each way, kept outside the relay so they can be logged even when the
/// connection is dropped mid-flight.
#[derive(Debug, Default)]
pub(super) struct ByteCounts {
    pub to_backend: AtomicU64,
    pub to_client: AtomicU64,
}

/// Relay until both directions have ended. When one side stops sending, the other side's
/// write half is shut down (a half-close is passed on, not turned into a full close); an I/O
/// error in either direction ends the whole relay.
pub(super) async fn relay<C, B>(
    client: C,
    backend: B,
    delays: &DelayKnobs,
    counts: &ByteCounts,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (backend_read, backend_write) = tokio::io::split(backend);
    let up = pump(
        client_read,
        backend_write,
        &delays.to_backend_us,
        &counts.to_backend,
    );
    let down = pump(
        backend_read,
        client_write,
        &delays.to_client_us,
        &counts.to_client,
    );
    tokio::try_join!(up, down).map(|_| ())
}

/// One direction: a reader stamps chunks into the delay line, a writer releases them when due.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    delay_us: &AtomicU64,
    forwarded: &AtomicU64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (line_in, mut line_out) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let read_side = async move {
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                // Dropping `line_in` tells the writer that this direction has ended.
                return Ok::<_, io::Error>(());
            }
            let due = Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
            let chunk = buf.get(..n).unwrap_or_default().to_vec();
            if line_in.send((due, chunk)).await.is_err() {
                // The writer has stopped; its error is what `try_join!` reports.
                return Ok(());
            }
        }
    };
    let write_side = async {
        while let Some((due, chunk)) = line_out.recv().await {
            // A timer is only armed when there is something to wait for: a zero-delay path
            // should not pay a timer tick per chunk.
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            writer.write_all(&chunk).await?;
            // TLS streams buffer records: flush so the chunk leaves now, not with the next one.
            writer.flush().await?;
            forwarded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        writer.shutdown().await
    };
    tokio::try_join!(read_side, write_side).map(|_| ())
}

/// A stream whose first reads return `prefix` (the ClientHello bytes the gateway read to learn
/// the SNI), then continue from `inner`. Writes go straight to `inner`.
#[derive(Debug)]
pub(super) struct Replay<S> {
    prefix: Vec<u8>,
    consumed: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            consumed: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = this.prefix.get(this.consumed..).unwrap_or_default();
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(rest.get(..n).unwrap_or_default());
        this.consumed += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
