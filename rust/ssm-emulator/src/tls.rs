//! TLS for the emulator's one listener: AWS serves the SSM API only as `https://ssm.<region>.
//! amazonaws.com` and hands out only `wss://ssmmessages.<region>.amazonaws.com/v1/data-channel/
//! <id>?role=publish_subscribe` stream URLs (§1.1; `StreamUrl` in the botocore model's
//! `StartSessionResponse`). With [`crate::Config::tls`], the emulator does the same on loopback
//! with a certificate of its own: a fresh test CA per emulator, and a server certificate it
//! signed for the loopback names. Clients trust it by being given the CA (the PEM of
//! [`crate::Emulator::ca_pem`]), as users behind a private CA give theirs (`AWS_CA_BUNDLE`).

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// What a TLS emulator serves with and hands out.
pub(crate) struct TestPki {
    /// The test CA's certificate, PEM: what clients must trust.
    pub(crate) ca_pem: String,
    /// The server side: the CA-signed certificate for the loopback names and its key.
    pub(crate) server: Arc<rustls::ServerConfig>,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("emulator TLS: {what}: {e}"))
}

/// Makes a test CA and a server certificate for `localhost`, `127.0.0.1`, `::1` and `host`
/// signed by it, and the rustls server configuration that presents it.
pub(crate) fn issue(host: IpAddr) -> std::io::Result<TestPki> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error("CA parameters", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "SSMConnect emulator test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_error("CA certificate", e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let host = host.to_string();
    if !names.contains(&host) && host != "0.0.0.0" && host != "::" {
        names.push(host);
    }
    let mut params = CertificateParams::new(names).map_err(|e| tls_error("server names", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "SSMConnect emulator");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_error("server certificate", e))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| tls_error("server configuration", e))?;
    // HTTP/1.1 only: the data channel is an HTTP/1.1 WebSocket upgrade (§2.1), and the SDK's
    // awsJson1.1 calls work the same over it.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TestPki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    })
}
