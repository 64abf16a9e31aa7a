//! Sessions over TLS, as against AWS (`https://` API, `wss://` stream URLs, §1.1): the emulator
//! serves a certificate from a test CA, and the client trusts that CA only when given it as a
//! CA bundle. With it, a forward (through a reconnect) and a shell work; without it, both the
//! SDK's calls and the data channel's dial fail with a certificate error, at once; a bundle
//! that is no certificate file is a configuration error naming the file.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use ssm_emulator::{Config, Faults};
use ssm_proto::PayloadType;
use ssm_session::aws::{Control, SharedControl};
use ssm_session::{
    ChannelOptions, Connector, DataChannel, Error, ErrorKind, ForwardSpec, Settings, ShellOptions, Trust, no_stages,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tls_settings(endpoint: &str, ca: Option<&std::path::Path>) -> Settings {
    let mut s = settings(endpoint);
    s.aws.ca_bundle = ca.map(Into::into);
    s
}

fn spec(remote_port: u16) -> ForwardSpec {
    ForwardSpec {
        remote_port,
        remote_host: None,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        per_connection: None,
        document: None,
    }
}

async fn echo_once(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect to the forward");
    s.write_all(data).await.expect("write");
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).await.expect("read the echo");
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_with_a_reconnect_and_a_shell_run_over_tls_with_the_ca_bundle() {
    let (emu, ca) = tls_emulator(Config {
        shell_start_delay_ms: 0,
        ..Config::default()
    })
    .await;
    assert!(emu.endpoint().starts_with("https://"), "{}", emu.endpoint());
    let connector = Connector::new(tls_settings(&emu.endpoint(), Some(ca.path())));

    // StartSession hands out wss:// URLs, as AWS does.
    let api = connector.api().await.expect("SSM client");
    let started = within(20, "StartSession", api.start_session(TARGET, None, &HashMap::new()))
        .await
        .expect("StartSession over https");
    assert!(started.stream_url.starts_with("wss://"), "{}", started.stream_url);
    api.terminate(&started.session_id).await.expect("TerminateSession");

    // A forward whose socket is cut once: the reconnect dials wss:// again, with the same trust.
    let echo = echo_server().await;
    emu.set_faults(Faults {
        cut_after_frames: Some(12),
        max_cuts: Some(1),
        ..Faults::default()
    });
    let fwd = within(30, "the forward", connector.forward(TARGET, spec(echo), &no_stages))
        .await
        .expect("forward over TLS")
        .session;
    let data = random_bytes(256 << 10, 7);
    let back = within(60, "echo through the forward", echo_once(fwd.local_addr(), &data)).await;
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let stats = emu.stats();
    assert_eq!(stats.sockets_cut, 1, "{stats:?}");
    assert!(stats.connections >= 2, "the forward and its reconnect: {stats:?}");
    emu.set_faults(Faults::default());
    within(20, "stopping the forward", fwd.stop())
        .await
        .expect("the forward stops");

    // A shell: a command in, its output back.
    let mut dc = within(
        30,
        "the shell",
        connector.shell(TARGET, ShellOptions::default(), &no_stages),
    )
    .await
    .expect("shell over TLS")
    .session;
    dc.sender()
        .send(PayloadType::Output, b"echo tls-$((6*7))\n".to_vec())
        .await
        .expect("send a command");
    let mut seen = Vec::new();
    within(20, "the shell's answer", async {
        while !String::from_utf8_lossy(&seen).contains("tls-42") {
            match dc.recv().await {
                Some((PayloadType::Output, data)) => seen.extend(data),
                Some(_) => {}
                None => panic!("the shell ended; saw {:?}", String::from_utf8_lossy(&seen)),
            }
        }
    })
    .await;
    dc.sender().finish(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_bundle_the_api_and_the_data_channel_refuse_the_certificate() {
    let (emu, ca) = tls_emulator(Config::default()).await;

    // The SDK's HTTPS call: an API error that says it is the certificate, and what to do.
    let untrusting = Connector::new(tls_settings(&emu.endpoint(), None));
    let e = match within(30, "a refused forward", untrusting.forward(TARGET, spec(9), &no_stages)).await {
        Ok(_) => panic!("a forward started without trusting the emulator's CA"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Api, "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("StartSession failed: TLS: "), "{text}");
    assert!(text.contains("certificate") && text.contains("AWS_CA_BUNDLE"), "{text}");
    assert_eq!(emu.stats().sessions_started, 0);

    // The data channel's dial, for a stream URL from an API call that did trust the CA.
    let trusting = Connector::new(tls_settings(&emu.endpoint(), Some(ca.path())));
    let api = trusting.api().await.expect("SSM client");
    assert_eq!(api.trust().ca_bundle(), Some(ca.path()));
    let started = within(20, "StartSession", api.start_session(TARGET, None, &HashMap::new()))
        .await
        .expect("StartSession with the CA");
    let control: SharedControl = Arc::new(api.clone().with_trust(Trust::default()));
    let open = DataChannel::open(started, control, ChannelOptions::default());
    let e = match within(20, "a refused dial", open).await {
        Ok(_) => panic!("the data channel opened without trusting the emulator's CA"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Connection, "{e:?}");
    let text = e.to_string();
    assert!(text.contains("wss://") && text.contains("TLS: "), "{text}");
    assert!(text.contains("certificate") && text.contains("AWS_CA_BUNDLE"), "{text}");
    assert!(
        !text.contains("role=publish_subscribe"),
        "the query string stays out: {text}"
    );
    assert_eq!(emu.stats().connections, 0, "{:?}", emu.stats());

    // Another emulator's CA is no better than none.
    let (_other, other_ca) = tls_emulator(Config::default()).await;
    let wrong = Connector::new(tls_settings(&emu.endpoint(), Some(other_ca.path())));
    let e = match within(30, "a refused forward", wrong.forward(TARGET, spec(9), &no_stages)).await {
        Ok(_) => panic!("a forward started trusting the wrong CA"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("TLS: "), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_is_no_certificate_file_is_a_config_error_naming_it() {
    let (emu, _ca) = tls_emulator(Config::default()).await;
    let garbage = CaFile::new("garbage.pem", b"this is not a certificate\n");
    let key_only = CaFile::new(
        "key.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAECAwQ=\n-----END PRIVATE KEY-----\n",
    );
    let missing = garbage.path().with_file_name("missing.pem");
    for path in [garbage.path(), key_only.path(), missing.as_path()] {
        let connector = Connector::new(tls_settings(&emu.endpoint(), Some(path)));
        let e = match within(10, "a refused forward", connector.forward(TARGET, spec(9), &no_stages)).await {
            Ok(_) => panic!("a forward started with CA bundle {}", path.display()),
            Err(e) => e,
        };
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "names the file: {text}");
    }
    assert_eq!(emu.stats().sessions_started, 0);
}
