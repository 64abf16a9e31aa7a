//! `ssmconnect socks` end to end against the in-process emulator, with real curl as the SOCKS5
//! client: each connection reaches the destination it names, through a session of its own.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::*;
use ssm_emulator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOCUMENT: &str = "AWS-StartPortForwardingSessionToRemoteHost";

/// Parses `SOCKS5 proxy on ADDR, a session for each connection.`.
fn proxy_addr(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("SOCKS5 proxy on ")?
        .strip_suffix(", a session for each connection.")?
        .parse()
        .ok()
}

/// Starts `ssmconnect socks TARGET` against `emu`; returns the process, its proxy address and
/// its stderr (read to the end in the background).
async fn start_socks(
    home: &Home,
    emu: &ssm_emulator::Emulator,
    target: &str,
) -> (Proc, SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let mut cmd = ssmconnect(home);
    cmd.env("SSMCONNECT_LOG", "ssm_session=info,ssmconnect=info,warn");
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["socks", target, "--local-port", "0", "--bind", "127.0.0.1"]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect socks");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 180));
    let line = out.until(20, |l| l.starts_with("SOCKS5 proxy on ")).await;
    let addr = proxy_addr(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert_ne!(addr.port(), 0);
    assert_eq!(out.next(10).await.as_deref(), Some("Waiting for connections..."));
    (proc, addr, stderr)
}

/// `curl -sS --max-time 30 <proxy flag> PROXY URL`: its exit code and stdout.
async fn curl(proxy_flag: &str, proxy: SocketAddr, url: &str) -> (i32, String) {
    let out = within(
        60,
        "curl",
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", proxy_flag, &proxy.to_string(), url])
            .output(),
    )
    .await
    .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_each_destination_it_names_through_a_session_of_its_own() {
    require("curl", &["--version"], "install curl");
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let alpha = http_server(IpAddr::V4(Ipv4Addr::LOCALHOST), "alpha")
        .await
        .expect("serve on 127.0.0.1");
    // A second loopback address where the system has one (Linux: all of 127/8), else a second
    // server on 127.0.0.1: either way another server with other content.
    let bravo = match http_server(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), "bravo").await {
        Some(a) => a,
        None => {
            eprintln!("127.0.0.2 cannot be bound here: the second server is on 127.0.0.1");
            http_server(IpAddr::V4(Ipv4Addr::LOCALHOST), "bravo")
                .await
                .expect("serve")
        }
    };
    let (mut proc, proxy, stderr) = start_socks(&home, &emu, TARGET).await;
    assert_eq!(
        emu.stats().sessions_started,
        0,
        "no session before a client asks for one"
    );

    // A domain name (ATYP 3): resolved by the agent, on the far side.
    let (code, body) = curl(
        "--socks5-hostname",
        proxy,
        &format!("http://localhost:{}/", alpha.port()),
    )
    .await;
    assert_eq!((code, body.as_str()), (0, "alpha"), "curl --socks5-hostname localhost");
    // An IPv4 address (ATYP 1), resolved by curl.
    let (code, body) = curl("--socks5", proxy, &url(bravo)).await;
    assert_eq!((code, body.as_str()), (0, "bravo"), "curl --socks5 {bravo}");
    let mut expected = vec![
        ("localhost".to_owned(), alpha.port()),
        (bravo.ip().to_string(), bravo.port()),
    ];
    // An IPv6 address (ATYP 4), where the machine has ::1.
    if loopbacks().contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)) {
        let charlie = http_server(IpAddr::V6(Ipv6Addr::LOCALHOST), "charlie")
            .await
            .expect("serve on ::1");
        let (code, body) = curl("--socks5-hostname", proxy, &url(charlie)).await;
        assert_eq!(
            (code, body.as_str()),
            (0, "charlie"),
            "curl --socks5-hostname {charlie}"
        );
        expected.push(("::1".to_owned(), charlie.port()));
    }
    // And the first again: a new connection, a new session.
    let (code, body) = curl("--socks5", proxy, &url(alpha)).await;
    assert_eq!((code, body.as_str()), (0, "alpha"));
    expected.push(("127.0.0.1".to_owned(), alpha.port()));

    // One session per connection, each with the requested host and port as its parameters.
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), expected.len(), "{sessions:?}");
    let mut asked: Vec<(String, u16)> = sessions
        .iter()
        .map(|s| {
            assert_eq!(s.document, DOCUMENT, "{s:?}");
            assert_eq!(s.target, TARGET);
            let host = s
                .parameters
                .get("host")
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default();
            let port = s
                .parameters
                .get("portNumber")
                .and_then(|v| v.first())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            (host, port)
        })
        .collect();
    asked.sort();
    expected.sort();
    assert_eq!(asked, expected);
    // Each session ends with its connection.
    assert!(
        sessions_end(&emu, 10).await,
        "sessions still open: {:?}",
        emu.sessions()
    );

    proc.signal(libc::SIGINT);
    let code = proc.exit_code(10).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 0, "exit code after SIGINT; stderr: {stderr}");
    assert_closed(proxy, 5).await;
}

/// The reply code of one raw SOCKS5 exchange: greeting (no authentication), then `request`
/// (VER CMD RSV ATYP ADDR PORT).
async fn socks_reply(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).await.expect("connect to the proxy");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut method = [0u8; 2];
    within(30, "method reply", s.read_exact(&mut method))
        .await
        .expect("method");
    assert_eq!(method, [5, 0], "no authentication chosen");
    s.write_all(request).await.expect("request");
    let mut reply = Vec::new();
    let _ = within(60, "reply", s.read_to_end(&mut reply)).await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_commands_refused_destinations_and_failed_starts_get_socks_replies() {
    require("curl", &["--version"], "install curl");
    let home = Home::new();
    // Only TARGET has an agent: sessions with any other id cannot start (TargetNotConnected).
    let emu = emulator(Config {
        targets: vec![TARGET.to_owned()],
        ..Config::default()
    })
    .await;
    let alpha = http_server(IpAddr::V4(Ipv4Addr::LOCALHOST), "alpha")
        .await
        .expect("serve");
    let (mut proc, proxy, stderr) = start_socks(&home, &emu, TARGET).await;

    // BIND and UDP ASSOCIATE: "command not supported" (07), no session.
    for cmd in [2u8, 3] {
        let reply = socks_reply(proxy, &[5, cmd, 0, 1, 127, 0, 0, 1, 0, 80]).await;
        assert_eq!(reply.get(..2), Some(&[5, 7][..]), "command {cmd}: {reply:?}");
    }
    assert_eq!(emu.stats().sessions_started, 0, "no session for an unsupported command");

    // Instance metadata: the agent refuses the destination once the session is open (after
    // the success reply, as Session Manager gives no earlier word), so curl gets no response.
    let (code, body) = curl("--socks5", proxy, "http://169.254.169.254/latest/meta-data/").await;
    assert_ne!(code, 0, "curl through a refused destination");
    assert!(body.is_empty(), "{body:?}");

    // The proxy carries on.
    let (code, body) = curl("--socks5", proxy, &url(alpha)).await;
    assert_eq!((code, body.as_str()), (0, "alpha"));
    proc.signal(libc::SIGINT);
    assert_eq!(proc.exit_code(10).await, 0);
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert!(
        stderr.contains("SOCKS BIND") && stderr.contains("SOCKS UDP ASSOCIATE") && stderr.contains("only CONNECT"),
        "unsupported commands are warned about: {stderr}"
    );
    assert!(
        stderr.contains("169.254.169.254:80")
            && stderr.contains("Forwarding to IP address 169.254.169.254 is forbidden."),
        "the agent's refusal is warned about with the destination: {stderr}"
    );
    assert!(
        sessions_end(&emu, 10).await,
        "sessions still open: {:?}",
        emu.sessions()
    );

    // A target whose sessions cannot start: the proxy still listens (no session is started
    // before a client asks), each connection gets "general failure" (01) and a warning.
    let other = "i-0fedcba9876543210";
    let (mut proc, proxy, stderr) = start_socks(&home, &emu, other).await;
    let reply = socks_reply(
        proxy,
        &[5, 1, 0, 1, 127, 0, 0, 1, (alpha.port() >> 8) as u8, alpha.port() as u8],
    )
    .await;
    assert_eq!(reply.get(..2), Some(&[5, 1][..]), "general failure: {reply:?}");
    let (code, body) = curl(
        "--socks5-hostname",
        proxy,
        &format!("http://localhost:{}/", alpha.port()),
    )
    .await;
    assert_ne!(code, 0, "curl through a proxy whose sessions cannot start");
    assert!(body.is_empty(), "{body:?}");
    assert!(!proc.has_exited(), "a failed start does not end the proxy");
    proc.signal(libc::SIGINT);
    assert_eq!(proc.exit_code(10).await, 0);
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert!(
        stderr.contains("SOCKS connection to 127.0.0.1:")
            && stderr.contains("its session could not start: StartSession failed: TargetNotConnected"),
        "a failed start is warned about: {stderr}"
    );
    assert!(
        stderr.contains(&format!("SOCKS connection to localhost:{}", alpha.port())),
        "the warning names the destination as asked for: {stderr}"
    );
}
