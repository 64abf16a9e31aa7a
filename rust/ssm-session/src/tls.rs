//! What TLS connections trust: the platform's roots, plus the certificates of a CA bundle when
//! one is given (`AWS_CA_BUNDLE`, the helper's `--ca-bundle`, the C ABI's `ca_bundle`), the way
//! the AWS CLI and SDKs take a private CA (a TLS-inspecting proxy, a VPC endpoint behind one).
//!
//! One [`Trust`] serves both kinds of connection a session makes: the SDK's HTTPS calls (SSM,
//! EC2, EC2 Instance Connect) and the data-channel WebSocket (§2.1). The bundle is read and
//! checked once, when the trust is made: a missing, unreadable or malformed bundle is an
//! [`Error::Config`] naming the file, never a panic later in the middle of a TLS handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The roots to trust: the platform's, and a CA bundle's if given. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trust {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    bundle: Option<Bundle>,
    /// The data channel's rustls configuration, made on first use (reading the platform's
    /// store takes a while) and kept for reconnects.
    config: OnceLock<Arc<rustls::ClientConfig>>,
}

struct Bundle {
    path: PathBuf,
    /// The file as read; checked to parse exactly as the SDK parses it (see [`Trust::load`]).
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("ca_bundle", &self.ca_bundle())
            .finish_non_exhaustive()
    }
}

impl Trust {
    /// The platform's roots and, when `ca_bundle` is given, every certificate in that PEM file.
    pub fn load(ca_bundle: Option<&Path>) -> Result<Self> {
        let Some(path) = ca_bundle else {
            return Ok(Self::default());
        };
        let named = |what: String| Error::Config(format!("CA bundle {}: {what}", path.display()));
        let pem = std::fs::read(path).map_err(|e| named(format!("cannot be read: {e}")))?;
        // The SDK parses the PEM again with these same calls, and panics on what they reject:
        // everything it will see is checked here first.
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| named(format!("is not a PEM file of certificates: {e}")))?;
        if certs.is_empty() {
            return Err(named("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        let mut store = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            store
                .add(cert.clone())
                .map_err(|e| named(format!("certificate {} of {} is unusable: {e}", i + 1, certs.len())))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                bundle: Some(Bundle {
                    path: path.to_owned(),
                    pem,
                    certs,
                }),
                config: OnceLock::new(),
            }),
        })
    }

    /// The CA bundle file, if one was given.
    pub fn ca_bundle(&self) -> Option<&Path> {
        self.inner.bundle.as_ref().map(|b| b.path.as_path())
    }

    /// The rustls client configuration of the data channel: the one place one is built.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        if let Some(config) = self.inner.config.get() {
            return Ok(config.clone());
        }
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("platform certificate store: {e}");
        }
        let (_, unusable) = roots.add_parsable_certificates(native.certs);
        if unusable > 0 {
            tracing::debug!("{unusable} platform certificates are unusable and ignored");
        }
        if let Some(b) = &self.inner.bundle {
            // Checked in `load`: every one is accepted.
            roots.add_parsable_certificates(b.certs.iter().cloned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Two first uses at once build it twice; both are the same and one is kept.
        Ok(self.inner.config.get_or_init(|| Arc::new(config)).clone())
    }

    /// The HTTPS client of every SDK call: rustls with ring, the platform's roots and the
    /// bundle's certificates. The SDK builds its own rustls configuration from these.
    pub(crate) fn http_client(&self) -> Result<SharedHttpClient> {
        let mut store = tls::TrustStore::default();
        if let Some(b) = &self.inner.bundle {
            store = store.with_pem_certificate(b.pem.clone());
        }
        let context = tls::TlsContext::builder()
            .with_trust_store(store)
            .build()
            .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .tls_context(context)
            .build_https())
    }
}

/// The certificate problem behind a failed connection, if TLS is what failed: rustls's error
/// found anywhere in `error`'s chain, also inside `io::Error`s (where hyper-rustls and
/// tokio-rustls put it), with a hint when the peer's certificate is not trusted.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

pub(crate) fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(_) => format!(
            "TLS: {e}; if a private CA signs this endpoint's certificate, give its PEM file as \
             AWS_CA_BUNDLE or --ca-bundle"
        ),
        _ => format!("TLS: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    fn config_error(r: Result<Trust>) -> String {
        match r {
            Err(Error::Config(m)) => m,
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn bad_bundles_are_config_errors_naming_the_file() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let m = config_error(Trust::load(Some(&missing)));
        assert!(m.contains("/nonexistent/ca.pem") && m.contains("cannot be read"), "{m}");

        let (_d, text) = file(b"just some text\n");
        let m = config_error(Trust::load(Some(&text)));
        assert!(
            m.contains(&text.display().to_string()) && m.contains("no PEM certificate"),
            "{m}"
        );

        let (_d, bad_base64) = file(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let m = config_error(Trust::load(Some(&bad_base64)));
        assert!(
            m.contains(&bad_base64.display().to_string()) && m.contains("not a PEM file"),
            "{m}"
        );

        // Base64 of bytes that are no X.509 certificate.
        let (_d, not_x509) = file(b"-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n");
        let m = config_error(Trust::load(Some(&not_x509)));
        assert!(
            m.contains(&not_x509.display().to_string()) && m.contains("certificate 1 of 1"),
            "{m}"
        );
    }

    #[test]
    fn no_bundle_is_the_platform_roots_alone() {
        let t = Trust::load(None).unwrap();
        assert!(t.ca_bundle().is_none());
        assert!(format!("{t:?}").contains("None"));
    }
}
