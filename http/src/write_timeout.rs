//! A write timeout on a connection's socket whose timer exists only while a
//! write is pending, so an idle connection (a WebSocket waiting for events)
//! keeps no timer: `tokio-io-timeout` keeps two boxed timers per socket for
//! its whole life, read and write, about 300 bytes of every idle socket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// `io` whose writes, flushes and shutdown fail with `TimedOut` once one
/// has made no progress for `timeout`.
#[derive(Debug)]
pub(crate) struct WriteTimeout<S> {
    io: S,
    timeout: Duration,
    /// Armed when a write first returns `Pending`, dropped when one completes.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(io: S, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            timer: None,
        }
    }

    /// Passes on a ready result (progress: the timer goes); on `Pending`,
    /// arms the timer, or fails once it has fired.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(timer.as_mut().poll(cx));
        self.timer = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "a write made no progress within the write timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_write_that_stays_pending_fails_after_the_timeout_and_none_waits_before() {
        // A pipe of 8 bytes nobody reads: the second write stays pending.
        let (client, _server) = tokio::io::duplex(8);
        let timeout = Duration::from_millis(200);
        let mut io = WriteTimeout::new(client, timeout);
        io.write_all(&[0; 8]).await.unwrap();
        assert!(
            io.timer.is_none(),
            "no timer kept after a write that went through"
        );
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeout);
        assert!(io.timer.is_none(), "no timer kept after it fired");
    }

    #[tokio::test]
    async fn progress_restarts_the_timeout() {
        let (client, mut server) = tokio::io::duplex(8);
        let mut io = WriteTimeout::new(client, Duration::from_secs(1));
        io.write_all(&[0; 8]).await.unwrap();
        // The peer reads a byte every 0.4 s: each write waits less than the
        // timeout, all of them together longer.
        let reader = tokio::spawn(async move {
            let mut byte = [0; 1];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                tokio::io::AsyncReadExt::read_exact(&mut server, &mut byte)
                    .await
                    .unwrap();
            }
            server
        });
        for _ in 0..4 {
            io.write_all(&[0; 1]).await.unwrap();
        }
        drop(reader.await.unwrap());
    }
}
