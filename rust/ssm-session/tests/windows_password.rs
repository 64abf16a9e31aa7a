//! The Windows Administrator password for an RDP login: EC2 `GetPasswordData` at the emulator
//! (which encrypts the inventory's password to the instance's key pair, as EC2Launch does),
//! decrypted with the key pair's private key. Keys are made by openssl, as `.pem` files are.

mod common;

use std::path::Path;

use common::*;
use ssm_emulator::{Config, Instance};
use ssm_session::{Connector, Error, ErrorKind, no_stages};

const WINDOWS: &str = "i-0aaaaaaaaaaaaaaa1";
const LINUX: &str = "i-0bbbbbbbbbbbbbbb2";

/// An RSA key pair: the private key in PKCS#1 PEM (as EC2 gives it out) and the public key.
async fn key_pair(dir: &Path, name: &str) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    run_ok(
        tokio::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&private)
            .arg("2048"),
        "openssl genrsa",
    )
    .await;
    run_ok(
        tokio::process::Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
        "openssl rsa -pubout",
    )
    .await;
    (
        std::fs::read_to_string(private).unwrap(),
        std::fs::read_to_string(public).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_decrypts_with_the_key_pair_and_with_no_other_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(dir.path(), "launch").await;
    let (other, _) = key_pair(dir.path(), "other").await;
    let password = "Adm1n!-p4ss word\u{e9}";
    let emu = emulator(Config {
        inventory: vec![
            Instance::running(WINDOWS).tag("Name", "win").windows(password, public),
            Instance::running(LINUX).tag("Name", "linux"),
        ],
        ..Config::default()
    })
    .await;
    let mut settings = settings(&emu.endpoint());
    settings.endpoints.ec2 = Some(emu.endpoint());
    let connector = Connector::new(settings);

    // By id and by tag.
    for target in [WINDOWS, "Name:win"] {
        let (resolved, got) = connector.windows_password(target, &private, &no_stages).await.unwrap();
        assert_eq!(resolved.instance_id, WINDOWS);
        assert_eq!(got.as_str(), password);
    }

    let e = connector
        .windows_password(WINDOWS, &other, &no_stages)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("not the key pair"), "{e}");
    assert!(!e.to_string().contains(password));

    let e = connector
        .windows_password(LINUX, &private, &no_stages)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Api {
                operation: "GetPasswordData",
                ..
            }
        ) && e.to_string().contains("not a Windows instance"),
        "{e}"
    );

    let e = connector
        .windows_password(
            WINDOWS,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &no_stages,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");

    // An instance EC2 does not know: EC2's own error.
    let e = connector
        .windows_password("i-0cccccccccccccccc", &private, &no_stages)
        .await
        .unwrap_err();
    assert_eq!(e.api_code(), Some("InvalidInstanceID.NotFound"), "{e}");
}
