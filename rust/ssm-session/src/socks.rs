//! The SOCKS5 side of dynamic forwarding (RFC 1928): what one local connection asks for.
//!
//! Each connection to a SOCKS forward is a SOCKS5 client naming its own destination. Its
//! greeting and request are read with `fast-socks5` (no authentication; CONNECT only; IPv4,
//! IPv6 and domain-name addresses), and the destination becomes the `host` and `portNumber` of
//! a port session of its own (`AWS-StartPortForwardingSessionToRemoteHost`), started by
//! [`crate::per_connection`] through the one session opener, [`crate::port::open_session`].
//! Domain names go to the agent as they are, so they are resolved on the far side, as the
//! target sees them.
//!
//! The reply: success once the session is open (its handshake done). Session Manager tells the
//! client nothing when the agent reaches its destination (smux v1 has no stream
//! acknowledgement, §7.4; basic mode dials after the handshake, §7.3), so a destination the
//! agent cannot reach shows as a connection that closes after the success reply. A session that
//! cannot start gets a failure reply; BIND and UDP ASSOCIATE get "command not supported".
//!
//! What it is not: a SOCKS parser (that is `fast-socks5`'s), or a proxy that dials anything
//! itself.

use std::net::SocketAddr;
use std::time::Duration;

use fast_socks5::server::{Socks5ServerProtocol, states};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind};

/// How long a client may take to send its greeting and request. A connection that sends
/// nothing must not hold a task forever.
pub(crate) const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A CONNECT request read from a client, waiting for its reply.
pub(crate) struct Request {
    proto: Socks5ServerProtocol<TcpStream, states::CommandRead>,
    /// Host as the client named it: an IP address (IPv6 without brackets) or a domain name.
    pub(crate) host: String,
    /// Destination port.
    pub(crate) port: u16,
}

impl Request {
    /// `host:port`, IPv6 in brackets, for messages.
    pub(crate) fn destination(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Replies success and gives the connection back, ready for the destination's bytes.
    pub(crate) async fn succeed(self) -> std::io::Result<TcpStream> {
        // BND.ADDR: the address the agent dialled from is not known here; zeros, as many
        // servers send when they cannot tell.
        self.proto
            .reply_success(SocketAddr::from(([0, 0, 0, 0], 0)))
            .await
            .map_err(std::io::Error::other)
    }

    /// Replies failure with the code that fits `e`, then closes the connection.
    pub(crate) async fn fail(self, e: &Error) {
        let code = reply_for(e);
        if let Err(err) = self.proto.reply_error(&code).await {
            tracing::debug!("SOCKS failure reply not delivered: {err}");
        }
    }
}

/// The SOCKS reply code for a session that could not start.
fn reply_for(e: &Error) -> ReplyError {
    match e {
        Error::Api { code: Some(c), .. } if c.contains("AccessDenied") => ReplyError::ConnectionNotAllowed,
        _ if e.kind() == ErrorKind::TimedOut => ReplyError::TtlExpired,
        _ => ReplyError::GeneralFailure,
    }
}

/// Reads the greeting (only "no authentication" is offered) and the request from `stream`.
/// A CONNECT comes back; anything else is answered here (BIND and UDP ASSOCIATE: command not
/// supported; an unknown command or address type: its RFC 1928 reply; a client offering no
/// method we take: "no acceptable methods") and `None` comes back, as for a client that goes
/// away or is silent for [`NEGOTIATION_TIMEOUT`].
pub(crate) async fn accept(stream: TcpStream) -> Option<Request> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(NEGOTIATION_TIMEOUT, negotiate(stream)).await {
        Ok(Ok(req)) => req,
        Ok(Err(e)) => {
            tracing::debug!(?peer, "SOCKS negotiation failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "SOCKS client sent no request within {NEGOTIATION_TIMEOUT:?}");
            None
        }
    }
}

async fn negotiate(stream: TcpStream) -> Result<Option<Request>, fast_socks5::server::SocksServerError> {
    let (proto, cmd, addr) = Socks5ServerProtocol::accept_no_auth(stream)
        .await?
        .read_command()
        .await?;
    let unsupported = match cmd {
        Socks5Command::TCPConnect => None,
        Socks5Command::TCPBind => Some("BIND"),
        Socks5Command::UDPAssociate => Some("UDP ASSOCIATE"),
    };
    if let Some(name) = unsupported {
        tracing::warn!("SOCKS {name} for {addr} refused: only CONNECT is supported");
        proto.reply_error(&ReplyError::CommandNotSupported).await?;
        return Ok(None);
    }
    let (host, port) = match addr {
        TargetAddr::Ip(sa) => (sa.ip().to_canonical().to_string(), sa.port()),
        TargetAddr::Domain(name, port) => (name, port),
    };
    Ok(Some(Request { proto, host, port }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One client connection to a listener whose accepted side goes through [`accept`].
    async fn exchange(client_bytes: Vec<u8>) -> (Option<(String, u16)>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            match accept(s).await {
                Some(req) => {
                    let dest = (req.host.clone(), req.port);
                    req.fail(&Error::Connect("test".into())).await;
                    Some(dest)
                }
                None => None,
            }
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&client_bytes).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut back)).await;
        (server.await.unwrap(), back)
    }

    #[tokio::test]
    async fn connect_requests_name_their_destination() {
        let v4 = [5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 7, 0x1f, 0x90].to_vec();
        let (dest, back) = exchange(v4).await;
        assert_eq!(dest, Some(("10.0.0.7".into(), 8080)));
        assert_eq!(back.get(..2), Some(&[5, 0][..]), "no-auth chosen");
        assert_eq!(back.get(2..4), Some(&[5, 1][..]), "general failure replied: {back:?}");

        let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(exchange(v6).await.0, Some(("::1".into(), 443)));

        let mut name = vec![5, 1, 0, 5, 1, 0, 3, 11];
        name.extend_from_slice(b"db.internal");
        name.extend_from_slice(&5432u16.to_be_bytes());
        assert_eq!(exchange(name).await.0, Some(("db.internal".into(), 5432)));
    }

    #[tokio::test]
    async fn bind_and_udp_associate_are_not_supported() {
        for cmd in [2u8, 3] {
            let (dest, back) = exchange(vec![5, 1, 0, 5, cmd, 0, 1, 127, 0, 0, 1, 0, 80]).await;
            assert_eq!(dest, None);
            assert_eq!(back.get(2..4), Some(&[5, 7][..]), "command {cmd}: {back:?}");
        }
    }

    #[tokio::test]
    async fn bad_bytes_get_a_reply_or_a_close_never_a_panic() {
        // No "no authentication" offered: 0xff, no acceptable method.
        let (dest, back) = exchange(vec![5, 1, 2]).await;
        assert_eq!((dest, back), (None, vec![5, 0xff]));
        // An unknown address type.
        let (dest, back) = exchange(vec![5, 1, 0, 5, 1, 0, 9, 1, 2]).await;
        assert_eq!(dest, None);
        assert_eq!(back.get(2..4), Some(&[5, 8][..]), "{back:?}");
        // An unknown command.
        let (dest, back) = exchange(vec![5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80]).await;
        assert_eq!(dest, None);
        assert_eq!(back.get(2..4), Some(&[5, 7][..]), "{back:?}");
        // SOCKS4, truncated requests, a domain that is not UTF-8, nothing at all.
        for bytes in [
            vec![4, 1, 0, 80, 127, 0, 0, 1, 0],
            vec![5, 1, 0, 5, 1],
            vec![5, 1, 0, 5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80],
            vec![5],
            vec![],
        ] {
            assert_eq!(exchange(bytes.clone()).await.0, None, "{bytes:?}");
        }
    }
}
