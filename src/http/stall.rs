//! Connections whose peer stops reading are closed: a write that waits longer than a limit
//! fails, and the server drops the connection. Without it, a client that never reads would
//! hold its connection (and the response it stopped reading) forever.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// A TCP listener whose connections fail a write that waits longer than `after`.
pub(super) struct StallListener {
    inner: TcpListener,
    after: Duration,
}

impl StallListener {
    pub(super) fn new(inner: TcpListener, after: Duration) -> Self {
        StallListener { inner, after }
    }
}

impl axum::serve::Listener for StallListener {
    type Io = StallGuard<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Answers and streamed results go out at once, not when the previous one is acked.
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        (StallGuard::new(io, self.after), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An IO whose writes fail once one has waited longer than `after`.
pub(super) struct StallGuard<T> {
    io: T,
    after: Duration,
    /// Since the current write began to wait.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(io: T, after: Duration) -> Self {
        StallGuard {
            io,
            after,
            stalled: None,
        }
    }

    /// What a write that returned `poll` becomes: an error once it has waited too long.
    fn guard<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let after = self.after;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer read nothing for {after:?}"),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_write_that_waits_too_long_fails_and_one_that_moves_on_does_not() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(client, Duration::from_millis(50));
        guarded.write_all(&[1; 64]).await.unwrap();
        // The peer reads: the next write goes through.
        let mut buf = [0; 64];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .unwrap();
        guarded.write_all(&[2; 64]).await.unwrap();
        // The peer reads nothing more: the write fails once it has waited 50 ms.
        let stalled = guarded.write_all(&[3; 64]).await.unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
    }
}
