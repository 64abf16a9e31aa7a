//! AWS configuration and the three SSM calls a session needs (§1.1): StartSession,
//! ResumeSession and TerminateSession.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_ssm::error::ProvideErrorMetadata;

use crate::error::{Error, Result, TARGET_NOT_CONNECTED};
use crate::kms::{DataKey, DataKeyRequest, KmsApi};
use crate::tls::{Trust, tls_failure};

/// The loaded AWS configuration, re-exported so that callers need no aws-config dependency.
pub use aws_config::SdkConfig as Config;

/// Where credentials and the region come from (endpoints are in [`crate::connect::Endpoints`]). Unset fields fall back to the AWS SDK
/// default chain (environment, profiles, SSO, credential_process, instance metadata).
#[derive(Clone, Default)]
pub struct AwsOptions {
    /// Named profile.
    pub profile: Option<String>,
    /// Region, e.g. `eu-west-1`.
    pub region: Option<String>,
    /// Explicit access key id (with `secret_key`).
    pub access_key: Option<String>,
    /// Explicit secret key.
    pub secret_key: Option<String>,
    /// Explicit session token.
    pub session_token: Option<String>,
    /// Shared credentials file in place of the default (`~/.aws/credentials` or
    /// `AWS_SHARED_CREDENTIALS_FILE`).
    pub credentials_file: Option<PathBuf>,
    /// Shared config file in place of the default (`~/.aws/config` or `AWS_CONFIG_FILE`).
    pub config_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted besides the platform's, by the SDK's HTTPS calls
    /// and the data channel alike (`AWS_CA_BUNDLE`, as the AWS CLI and SDKs read it).
    pub ca_bundle: Option<PathBuf>,
}

impl fmt::Debug for AwsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsOptions")
            .field("profile", &self.profile)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("credentials_file", &self.credentials_file)
            .field("config_file", &self.config_file)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

/// Plain `http://` and `ws://` are accepted only for loopback hosts (design §7).
pub fn check_endpoint(url: &str, what: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| Error::Config(format!("{what} {url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" | "wss" => Ok(()),
        "http" | "ws" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "{what} {url} is not encrypted; plain {}:// is allowed only for loopback addresses",
                    parsed.scheme()
                )))
            }
        }
        other => Err(Error::Config(format!("{what} {url} has unsupported scheme {other}"))),
    }
}

/// The endpoint URL a client of `service_id` (the SDK's service id, e.g. `EC2`) will use, checked
/// against the loopback rule: `explicit` if given, else what the SDK would pick itself, which is
/// `AWS_ENDPOINT_URL_<SERVICE>` or the profile's `services` section, then the global
/// `AWS_ENDPOINT_URL`. `None` means the SDK's regional https endpoint.
///
/// Resolving it here, rather than leaving it to the client builder, is what lets every
/// endpoint source pass through [`check_endpoint`].
pub fn service_endpoint(config: &SdkConfig, service_id: &str, explicit: Option<&str>) -> Result<Option<String>> {
    let (url, what) = if let Some(url) = explicit {
        (Some(url.to_owned()), format!("{service_id} endpoint URL"))
    } else if config.get_origin("endpoint_url").is_client_config() {
        (config.endpoint_url().map(str::to_owned), "endpoint URL".to_owned())
    } else {
        let env = format!("AWS_ENDPOINT_URL_{}", service_id.to_ascii_uppercase().replace(' ', "_"));
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id(service_id)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .map_err(|e| Error::Config(format!("endpoint settings for {service_id}: {e}")))?;
        match config.service_config().and_then(|c| c.load_config(key)) {
            Some(url) => (Some(url), format!("{env} (or the profile's {service_id} endpoint_url)")),
            None => (config.endpoint_url().map(str::to_owned), "AWS_ENDPOINT_URL".to_owned()),
        }
    };
    match url {
        Some(u) if !u.is_empty() => {
            check_endpoint(&u, &what)?;
            Ok(Some(u))
        }
        _ => Ok(None),
    }
}

/// Loads the shared SDK configuration for `opts`, trusting what `opts.ca_bundle` adds.
pub async fn load_config(opts: &AwsOptions) -> Result<SdkConfig> {
    load_config_with(opts, &Trust::load(opts.ca_bundle.as_deref())?).await
}

/// Loads the shared SDK configuration for `opts`; its HTTPS client trusts what `trust` trusts
/// (made from `opts.ca_bundle` by the caller, who hands the same trust to the data channel).
pub async fn load_config_with(opts: &AwsOptions, trust: &Trust) -> Result<SdkConfig> {
    crate::install_crypto_provider();
    let http_client = trust.http_client()?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client.clone());
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    if opts.credentials_file.is_some() || opts.config_file.is_some() {
        loader = loader.profile_files(profile_files(opts));
    }
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    match (&opts.access_key, &opts.secret_key) {
        (Some(ak), Some(sk)) => {
            let creds = Credentials::new(ak, sk, opts.session_token.clone(), None, "ssmconnect-explicit");
            loader = loader.credentials_provider(creds);
        }
        // A profile asked for by name or file is the whole truth: the default chain would let
        // AWS_ACCESS_KEY_ID in the process environment win over it, unlike AWS Tools.
        (None, None) if opts.profile.is_some() || opts.credentials_file.is_some() => {
            let provider_config = ProviderConfig::default()
                .with_http_client(http_client)
                .with_region(opts.region.clone().map(Region::new));
            let mut b = ProfileFileCredentialsProvider::builder().configure(&provider_config);
            if let Some(p) = &opts.profile {
                b = b.profile_name(p);
            }
            b = b.profile_files(profile_files(opts));
            loader = loader.credentials_provider(b.build());
        }
        (None, None) => {}
        _ => {
            return Err(Error::Config(
                "an access key needs its secret key, and the other way round".into(),
            ));
        }
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(Error::NoRegion);
    }
    Ok(config)
}

/// The shared files to read profiles from: the given ones, the SDK's defaults for the others.
fn profile_files(opts: &AwsOptions) -> EnvConfigFiles {
    let mut b = EnvConfigFiles::builder();
    b = match &opts.config_file {
        Some(path) => b.with_file(EnvConfigFileKind::Config, path),
        None => b.include_default_config_file(true),
    };
    b = match &opts.credentials_file {
        Some(path) => b.with_file(EnvConfigFileKind::Credentials, path),
        None => b.include_default_credentials_file(true),
    };
    b.build()
}

/// A session token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the open frame only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What `StartSession` returns (§1.1).
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// Session id.
    pub session_id: String,
    /// The instance the session was started with (the agent's own id, which KMS encryption
    /// contexts name, §5.6).
    pub target_id: String,
    /// Single-use token for the first WebSocket open.
    pub token: Token,
    /// WebSocket URL, used verbatim (§1.1).
    pub stream_url: String,
}

/// The SSM API calls a session needs, and the trust their stream URLs are dialled with.
#[derive(Clone, Debug)]
pub struct SsmApi {
    client: aws_sdk_ssm::Client,
    trust: Trust,
    kms: Option<KmsApi>,
    reason: Option<String>,
}

type StartSessionResult = std::result::Result<
    aws_sdk_ssm::operation::start_session::StartSessionOutput,
    aws_sdk_ssm::error::SdkError<
        aws_sdk_ssm::operation::start_session::StartSessionError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
>;

/// A StartSession request in flight. Dropped before its answer was taken (the caller gave up),
/// it terminates the session the answer names, so a cancel never leaves one behind.
struct InFlightStart {
    task: Option<tokio::task::JoinHandle<StartSessionResult>>,
    client: aws_sdk_ssm::Client,
}

impl Drop for InFlightStart {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            task.abort();
            return;
        }
        let client = self.client.clone();
        spawn_detached(async move {
            let Ok(Ok(out)) = task.await else { return };
            let Some(id) = out.session_id else { return };
            let terminate = client.terminate_session().session_id(&id).send();
            match tokio::time::timeout(crate::driver::TERMINATE_WAIT, terminate).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(session = %id, "TerminateSession after cancel: {}", api_error("TerminateSession", e))
                }
                Err(_) => tracing::debug!(session = %id, "TerminateSession after cancel: no answer"),
            }
        });
    }
}

/// Calls running on tasks of their own because their caller gave up (the `TerminateSession`
/// that follows a cancel): a process about to exit waits for them with [`detached_calls_done`].
static DETACHED: AtomicUsize = AtomicUsize::new(0);

/// Runs `work` on a task of its own (when there is a runtime), counted in [`DETACHED`] until it
/// ends or is dropped.
pub(crate) fn spawn_detached(work: impl Future<Output = ()> + Send + 'static) {
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            DETACHED.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    DETACHED.fetch_add(1, Ordering::SeqCst);
    let counted = Counted;
    rt.spawn(async move {
        let _counted = counted;
        work.await;
    });
}

/// Waits, at most `limit`, until the calls that cancelled operations left running (their
/// `TerminateSession`) are done; `false` if some were still running. For a process about to
/// exit after abandoning a start: its runtime would drop them unfinished.
pub async fn detached_calls_done(limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if DETACHED.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one reader of SDK errors: a failure a user can act on. Missing or expired credentials
/// and an endpoint that cannot be reached are told apart from the service's own refusals, which
/// keep their code (`TargetNotConnected` with what to check).
pub(crate) fn api_error<E, R>(operation: &'static str, e: aws_sdk_ssm::error::SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    use aws_sdk_ssm::error::SdkError;
    let source = std::error::Error::source(&e);
    if let Some(failure) = source.and_then(credentials_failure) {
        return failure;
    }
    let code = e.code().map(str::to_owned);
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        // A certificate problem, said so; else the most specific text of the source chain
        // (connection refused, DNS…).
        _ => match source.and_then(tls_failure) {
            Some(tls) => tls,
            None => {
                let unreachable = match &e {
                    SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
                    SdkError::TimeoutError(_) => true,
                    _ => false,
                };
                let detail = deepest_text(&e);
                if unreachable {
                    return Error::Unreachable { operation, detail };
                }
                detail
            }
        },
    };
    match code.as_deref() {
        Some("ExpiredToken" | "ExpiredTokenException") => Error::CredentialsExpired {
            detail: message,
            sso: false,
        },
        Some(TARGET_NOT_CONNECTED) => Error::Api {
            operation,
            code,
            message: format!(
                "{message} The instance's SSM agent is not connected to Session Manager: it is \
                 stopped, not running the agent, lacks an instance profile allowing Systems \
                 Manager (AmazonSSMManagedInstanceCore), cannot reach the ssm and ssmmessages \
                 endpoints, or is in another region than the one used (--region or -Region)"
            ),
        },
        _ => Error::Api {
            operation,
            code,
            message,
        },
    }
}

/// The most specific text of an error's source chain, on one line.
fn deepest_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text = s.to_string();
        next = s.source();
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.trim_end_matches('.').to_owned()
}

/// The credential chain's failure, when that is why a call was not sent: none found anywhere,
/// or an SSO login or session that has expired.
fn credentials_failure(error: &(dyn std::error::Error + 'static)) -> Option<Error> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<CredentialsError>().is_some() {
            let detail = deepest_text(e);
            let lower = detail.to_ascii_lowercase();
            return Some(if lower.contains("expired") {
                Error::CredentialsExpired {
                    sso: lower.contains("sso"),
                    detail,
                }
            } else {
                Error::NoCredentials { detail }
            });
        }
        next = e.source();
    }
    None
}

impl SsmApi {
    /// A client from loaded configuration, with an optional endpoint override; the endpoint,
    /// wherever it comes from (the override, the environment, the profile), is checked as
    /// [`service_endpoint`] describes.
    pub fn new(config: &SdkConfig, endpoint_url: Option<&str>) -> Result<Self> {
        let mut b = aws_sdk_ssm::config::Builder::from(config);
        if let Some(url) = service_endpoint(config, "SSM", endpoint_url)? {
            b = b.endpoint_url(url);
        }
        Ok(Self {
            client: aws_sdk_ssm::Client::from_conf(b.build()),
            trust: Trust::default(),
            kms: None,
            reason: None,
        })
    }

    /// The same calls; sessions the agent encrypts get their data keys from `kms` (§5.6).
    /// Without it, an encrypted session fails to start.
    pub fn with_kms(mut self, kms: KmsApi) -> Self {
        self.kms = Some(kms);
        self
    }

    /// The same calls; the data channels of their sessions trust what `trust` trusts (the
    /// trust `config` was loaded with, [`load_config_with`]). Without it, the platform's roots.
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// The same calls; every StartSession gives `reason` as its `Reason` (kept in the session's
    /// audit trail; the service takes 1 to 256 characters without line breaks).
    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    /// `StartSession`.
    pub async fn start_session(
        &self,
        target: &str,
        document: Option<&str>,
        parameters: &HashMap<String, Vec<String>>,
    ) -> Result<StartedSession> {
        let mut req = self
            .client
            .start_session()
            .target(target)
            .set_reason(self.reason.clone());
        if let Some(d) = document {
            req = req.document_name(d);
        }
        for (k, v) in parameters {
            req = req.parameters(k, v.clone());
        }
        // The request runs on its own task: should this future be dropped (a cancel) while it is
        // in flight, the session the service starts anyway is terminated when the answer comes.
        let mut sending = InFlightStart {
            task: Some(tokio::spawn(req.send())),
            client: self.client.clone(),
        };
        let sent = match sending.task.as_mut() {
            Some(task) => task.await,
            None => return Err(Error::Cancelled),
        };
        sending.task = None;
        let out = sent
            .map_err(|e| Error::Connect(format!("StartSession failed: {e}")))?
            .map_err(|e| api_error("StartSession", e))?;
        let missing = |what: &str| Error::Api {
            operation: "StartSession",
            code: None,
            message: format!("the response has no {what}"),
        };
        let session_id = out.session_id.ok_or_else(|| missing("SessionId"))?;
        let stream_url = out.stream_url.ok_or_else(|| missing("StreamUrl"))?;
        let token = out.token_value.ok_or_else(|| missing("TokenValue"))?;
        check_endpoint(&stream_url, "stream URL")?;
        Ok(StartedSession {
            session_id,
            target_id: target.to_owned(),
            token: Token(token),
            stream_url,
        })
    }
}

/// What the data channel needs from the API after the start: fresh tokens and termination.
pub trait Control: Send + Sync + 'static {
    /// `ResumeSession`: `Ok(None)` means the session is over (§1.4).
    fn resume(&self, session_id: &str) -> futures_util::future::BoxFuture<'_, Result<Option<Token>>>;
    /// `TerminateSession`.
    fn terminate(&self, session_id: &str) -> futures_util::future::BoxFuture<'_, Result<()>>;
    /// What the stream URL's TLS certificate is checked against: the API client's trust, since
    /// the URL came from that API (§2.1).
    fn trust(&self) -> Trust;
    /// KMS `GenerateDataKey` for a session the agent encrypts (§5.6).
    fn data_key(&self, request: DataKeyRequest) -> futures_util::future::BoxFuture<'_, Result<DataKey>>;
}

impl Control for SsmApi {
    fn trust(&self) -> Trust {
        self.trust.clone()
    }

    fn data_key(&self, request: DataKeyRequest) -> futures_util::future::BoxFuture<'_, Result<DataKey>> {
        Box::pin(async move {
            match &self.kms {
                Some(kms) => kms.generate_data_key(&request).await,
                None => Err(Error::Config(format!(
                    "the session is KMS-encrypted with key {}, and no KMS client was set up",
                    request.key_id
                ))),
            }
        })
    }

    fn resume(&self, session_id: &str) -> futures_util::future::BoxFuture<'_, Result<Option<Token>>> {
        let id = session_id.to_owned();
        Box::pin(async move {
            let out = self
                .client
                .resume_session()
                .session_id(id)
                .send()
                .await
                .map_err(|e| api_error("ResumeSession", e))?;
            Ok(out.token_value.filter(|t| !t.is_empty()).map(Token))
        })
    }

    fn terminate(&self, session_id: &str) -> futures_util::future::BoxFuture<'_, Result<()>> {
        let id = session_id.to_owned();
        Box::pin(async move {
            self.client
                .terminate_session()
                .session_id(id)
                .send()
                .await
                .map_err(|e| api_error("TerminateSession", e))?;
            Ok(())
        })
    }
}

/// Shared handle to a [`Control`].
pub type SharedControl = Arc<dyn Control>;
