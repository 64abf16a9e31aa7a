//! The data channel's TCP socket, with what the driver needs to hold its reads during a
//! trickle of the agent's messages (see `ChannelOptions::read_coalesce`): a receive low-water
//! mark that keeps the kernel from waking the runtime for each message that arrives, and a read
//! that takes what has arrived below that mark when a hold ends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket's receive low-water mark while reads are held: more than a hold's worth of the
/// agent's messages, so the kernel does not wake the runtime for each one that arrives.
const HELD_LOWAT: libc::c_int = 256 << 10;

/// The WebSocket's TCP stream.
#[derive(Debug)]
pub(crate) struct Socket {
    tcp: TcpStream,
    /// The receive low-water mark is [`HELD_LOWAT`].
    held: bool,
    /// The next read goes to the kernel whatever the runtime knows of the socket's readiness.
    force: bool,
    /// So does the one after a forced read that filled its buffer.
    more: bool,
}

impl Socket {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            held: false,
            force: false,
            more: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Raises the receive low-water mark to [`HELD_LOWAT`] (`true`) or lowers it to one byte.
    /// epoll reports a TCP socket readable only once the mark's worth waits, and its readiness
    /// is edge-triggered, so while the mark is up nothing wakes the runtime for each message
    /// that arrives. Linux only; elsewhere the mark stays as it is, and a hold saves the work of
    /// each wake-up but not the wake-up. Changing it is a system call, so a steady trickle
    /// raises it once.
    pub(crate) fn hold(&mut self, held: bool) {
        if held != self.held {
            self.held = held;
            set_rcvlowat(&self.tcp, if held { HELD_LOWAT } else { 1 });
        }
    }

    /// Sends TCP's ACK for what has been read now rather than after the kernel's delayed-ACK
    /// wait (up to 40 ms on Linux), for a read we will not answer with data of our own: a
    /// peer that runs Nagle's algorithm holds its next small write until that ACK, and the
    /// kernel, having seen us answer promptly before (its "pingpong" mode), waits for an
    /// answer that is not coming. Linux only (TCP_QUICKACK, which also sends an ACK already
    /// due at once); elsewhere the kernel's timing stands.
    pub(crate) fn quick_ack(&self) {
        set_quickack(&self.tcp);
    }

    /// Whether the mark is up.
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.held
    }

    /// The next read asks the kernel at once, for whatever waits below the mark, rather than
    /// waiting for the runtime to see the socket readable (with the mark up it would not, until
    /// the mark's worth arrived). If nothing waits, the mark is lowered, so that the next
    /// message wakes the runtime. Where there is no such read (not Unix), the mark is lowered
    /// instead.
    pub(crate) fn read_now(&mut self) {
        if cfg!(unix) {
            self.force = true;
        } else {
            self.hold(false);
        }
    }

    /// The forced read of [`Socket::read_now`]: `None` when it is not asked for, or when the
    /// socket holds nothing (then the mark is lowered).
    #[cfg(unix)]
    fn forced_read(&mut self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        use std::os::fd::AsRawFd;
        let asked = std::mem::take(&mut self.force);
        if !std::mem::take(&mut self.more) && !asked {
            return None;
        }
        let room = buf.initialize_unfilled();
        // SAFETY: `room` is initialized, writable memory of the length given, and the socket
        // is open (`self.tcp` owns it); MSG_DONTWAIT keeps the call from blocking.
        let n = unsafe {
            libc::recv(
                self.tcp.as_raw_fd(),
                room.as_mut_ptr().cast(),
                room.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(n) {
            Ok(n) => {
                // A full buffer may have left more behind: the next read asks again.
                self.more = n == room.len() && n > 0;
                buf.advance(n);
                Some(Ok(()))
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    if asked {
                        self.hold(false);
                    }
                    None
                } else {
                    Some(Err(e))
                }
            }
        }
    }

    #[cfg(not(unix))]
    fn forced_read(&mut self, _: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        None
    }
}

#[cfg(target_os = "linux")]
fn set_rcvlowat(tcp: &TcpStream, bytes: libc::c_int) {
    set_int_option(tcp, libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes);
}

/// Linux's TCP signals readiness at once when the mark is lowered under bytes already waiting
/// (`tcp_set_rcvlowat`); where that is not known to hold (BSD kqueue, Windows), the mark is
/// left alone.
#[cfg(not(target_os = "linux"))]
fn set_rcvlowat(_: &TcpStream, _: libc::c_int) {}

#[cfg(target_os = "linux")]
fn set_quickack(tcp: &TcpStream) {
    set_int_option(tcp, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
}

#[cfg(not(target_os = "linux"))]
fn set_quickack(_: &TcpStream) {}

#[cfg(target_os = "linux")]
fn set_int_option(tcp: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: the socket is open (`tcp` owns it); the option reads one `c_int` through the
    // valid pointer, of the length given.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(done) = this.forced_read(buf) {
            return Poll::Ready(done);
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Whether the kernel would ACK at once (1) or delay it for a reply (0, its "pingpong"
    /// mode).
    fn quickack_mode(tcp: &TcpStream) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut val: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the socket is open; the kernel writes at most `len` bytes to `val`.
        let rc = unsafe {
            libc::getsockopt(
                tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                std::ptr::from_mut(&mut val).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
        val
    }

    /// A socket that has answered each read at once is one the kernel delays its ACKs on;
    /// `quick_ack` takes it out of that mode, so the peer's Nagle is not left waiting.
    #[tokio::test]
    async fn quick_ack_ends_the_kernels_wait_for_a_reply() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut sock = Socket::new(tcp);
        let mut buf = [0u8; 8];
        for _ in 0..50 {
            peer.write_all(b"k").await.unwrap();
            sock.read_exact(&mut buf[..1]).await.unwrap();
            sock.write_all(b"e").await.unwrap();
            peer.read_exact(&mut buf[..1]).await.unwrap();
            if quickack_mode(&sock.tcp) == 0 {
                break;
            }
        }
        assert_eq!(
            quickack_mode(&sock.tcp),
            0,
            "prompt replies put the socket in pingpong mode"
        );
        peer.write_all(b"k").await.unwrap();
        sock.read_exact(&mut buf[..1]).await.unwrap();
        sock.quick_ack();
        assert_eq!(
            quickack_mode(&sock.tcp),
            1,
            "quick_ack left the kernel waiting for a reply"
        );
    }

    /// With the mark up, bytes below it do not make the socket readable, and a forced read
    /// still takes them; a forced read that finds nothing lowers the mark, so that the next
    /// bytes are seen at once.
    #[tokio::test]
    async fn a_held_socket_is_read_when_asked_and_released_when_empty() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut sock = Socket::new(tcp);
        let mut buf = [0u8; 64];
        // The runtime reads a socket it believes readable; a read that finds it empty is what
        // tells it otherwise.
        peer.write_all(b"x").await.unwrap();
        assert_eq!(sock.read(&mut buf).await.unwrap(), 1);
        let empty = tokio::time::timeout(std::time::Duration::from_millis(50), sock.read(&mut buf)).await;
        assert!(empty.is_err(), "{empty:?}");
        sock.hold(true);
        assert!(sock.is_held());
        peer.write_all(b"twelve bytes").await.unwrap();
        let unseen = tokio::time::timeout(std::time::Duration::from_millis(200), sock.read(&mut buf)).await;
        assert!(unseen.is_err(), "bytes below the mark woke the reader: {unseen:?}");
        sock.read_now();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("the forced read returns at once")
            .unwrap();
        assert_eq!(&buf[..n], b"twelve bytes");
        assert!(sock.is_held(), "a read that found bytes keeps the mark");
        // A forced read that fills the buffer reads again: what waits behind it is not left
        // for the next hold.
        peer.write_all(&[7u8; 100]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sock.read_now();
        let mut small = [0u8; 60];
        let first = sock.read(&mut small).await.unwrap();
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut small))
            .await
            .expect("the rest is read at once, below the mark")
            .unwrap();
        assert_eq!((first, second), (60, 40));
        sock.read_now();
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), sock.read(&mut buf)).await;
        assert!(pending.is_err(), "an empty socket returned {pending:?}");
        assert!(!sock.is_held(), "an empty forced read keeps the mark up");
        peer.write_all(b"more").await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("with the mark down, the next bytes are read")
            .unwrap();
        assert_eq!(&buf[..n], b"more");
    }
}
