//! A TCP stream that reads ahead of rustls.
//!
//! rustls asks its transport for 4 KB at a time, and shrinks its receive
//! buffer back to 4 KB whenever it is empty. So every 6–7 KB admission
//! review, one TLS record, took two `recvfrom` calls and a grow-and-shrink of
//! that buffer (a `realloc` and a 4 KB `memset`). This stream asks the socket
//! for up to a whole TLS record at once and hands rustls its 4 KB slices
//! from memory: one system call per review. Writes go straight through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::rt::net::{ActixStream, Ready, TcpStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS record's largest ciphertext (16 KB of data plus its header and
/// AEAD overhead): the most one read can usefully take.
const READ_AHEAD: usize = 16 * 1024 + 256;

pub struct ReadAhead {
    io: TcpStream,
    /// Bytes read from the socket and not handed on yet: `ahead[at..]`.
    /// Freed once handed on, so an idle connection holds no buffer (a flood
    /// of idle connections costs no more than before).
    ahead: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            ahead: Vec::new(),
            at: 0,
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }

    fn buffered(&self) -> &[u8] {
        &self.ahead[self.at..]
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered().is_empty() {
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            // Allocate only once the socket has something to read.
            ready!(this.io.poll_read_ready(cx))?;
            let mut ahead = Vec::with_capacity(READ_AHEAD);
            let mut into = ReadBuf::uninit(&mut ahead.spare_capacity_mut()[..READ_AHEAD]);
            // `poll_read`, not `try_read_buf`: after a short read it marks the
            // socket drained, which saves the next read's `EAGAIN` call.
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            // SAFETY: `ReadBuf` vouches that its first `filled().len()` bytes
            // are initialized, and they are the start of `ahead`'s spare
            // capacity.
            unsafe { ahead.set_len(n) };
            if ahead.is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.ahead = ahead;
            this.at = 0;
        }
        let n = out.remaining().min(this.buffered().len());
        out.put_slice(&this.ahead[this.at..this.at + n]);
        this.at += n;
        if this.at == this.ahead.len() {
            this.ahead = Vec::new();
            this.at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl ActixStream for ReadAhead {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        // Bytes already read ahead are ready without asking the socket.
        if !self.buffered().is_empty() {
            return Poll::Ready(Ok(Ready::READABLE));
        }
        ActixStream::poll_read_ready(&self.io, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.io, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What rustls does with a 7 KB record: two 4 KB reads. The first one
    /// takes the whole record from the socket; the second is served from
    /// memory (and readiness says so without asking the socket).
    #[tokio::test]
    async fn one_socket_read_serves_two_rustls_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record: Vec<u8> = (0..7000u32).map(|i| (i % 251) as u8).collect();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&record).await.unwrap();
        client.flush().await.unwrap();
        let mut io = ReadAhead::new(server);
        // Wait (10 s at most) until the whole record is in the socket's
        // receive queue.
        let mut seen = [0u8; 8192];
        let queued = async {
            while io.get_ref().peek(&mut seen).await.unwrap() < record.len() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), queued)
            .await
            .expect("the record reaches the receive queue");

        let mut got = vec![0u8; 4096];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, record[..4096]);
        assert_eq!(io.buffered(), &record[4096..], "the rest was read ahead");
        let ready = std::future::poll_fn(|cx| ActixStream::poll_read_ready(&io, cx));
        assert!(ready.await.unwrap().is_readable());

        let mut rest = vec![0u8; 4096];
        let n = io.read(&mut rest).await.unwrap();
        assert_eq!(rest[..n], record[4096..]);
        assert!(io.buffered().is_empty());
        assert_eq!(io.ahead.capacity(), 0, "an idle connection holds no buffer");

        // Writes go straight through.
        io.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }
}
