//! One way in: every setting in one [`Settings`], one [`Connector`] built from it, and one
//! method per session kind that takes a target as the user typed it.
//!
//! The recipe each method follows is written only here: load the AWS configuration (once per
//! connector), resolve the target (ids pass through unchecked, other forms go to EC2 and DNS),
//! push an EC2 Instance Connect key when asked, start the session. The helper executable and the
//! C ABI parse their input into [`Settings`], call a method and map the result; they hold no
//! recipe of their own.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OnceCell;

use crate::aws::{AwsOptions, Config, SsmApi, load_config_with};
use crate::command::{CommandOptions, CommandSession};
use crate::driver::{ChannelOptions, DataChannel, End};
use crate::error::Result;
use crate::kms::KmsApi;
use crate::port::{ForwardOptions, PerConnection, PortForward};
use crate::resolve::{ResolveOptions, ResolvedTarget, Via, resolve_session_target, resolve_target};
use crate::shell::ShellOptions;
use crate::tls::Trust;

/// Endpoint overrides, one per service. `None` leaves the choice to the SDK's own order
/// (`AWS_ENDPOINT_URL_<SERVICE>`, the profile's `services` section, `AWS_ENDPOINT_URL`, the
/// regional endpoint); whatever is chosen, plain `http://` is accepted only for loopback.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Systems Manager (StartSession, ResumeSession, TerminateSession).
    pub ssm: Option<String>,
    /// EC2 (target resolution).
    pub ec2: Option<String>,
    /// EC2 Instance Connect (key pushes).
    pub ec2_instance_connect: Option<String>,
    /// KMS (data keys of encrypted sessions, §5.6).
    pub kms: Option<String>,
}

/// Everything a [`Connector`] is built from.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Credentials, profile, region and shared files.
    pub aws: AwsOptions,
    /// Endpoint overrides.
    pub endpoints: Endpoints,
    /// DNS server for DNS-name targets; `None` is the system's resolver.
    pub dns_server: Option<SocketAddr>,
    /// Data-channel tunables, among them how long to keep reconnecting.
    pub channel: ChannelOptions,
    /// StartSession's `Reason` for every session started (the session's audit trail); `None`
    /// for none.
    pub reason: Option<String>,
}

impl Settings {
    /// Fills what is unset from `env`, a caller's view of the environment whose `AWS_*`
    /// variables the SDK cannot see itself (.NET keeps its own copy on Linux and macOS: a
    /// variable set after the process started never reaches the native `getenv`). Read in the
    /// SDK's order: `AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`,
    /// `AWS_REGION` then `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_SSM` / `_EC2` /
    /// `_EC2_INSTANCE_CONNECT` / `_KMS` each falling back to `AWS_ENDPOINT_URL` (unless
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is `true`), `AWS_CA_BUNDLE`, and the access key
    /// pair with its session token when neither keys nor a profile nor a credentials file were
    /// given.
    pub fn with_environment(mut self, env: &HashMap<String, String>) -> Self {
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let aws = &mut self.aws;
        let explicit_credentials = aws.access_key.is_some() || aws.profile.is_some() || aws.credentials_file.is_some();
        aws.profile = aws.profile.take().or_else(|| get("AWS_PROFILE"));
        aws.credentials_file = aws
            .credentials_file
            .take()
            .or_else(|| get("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from));
        aws.config_file = aws
            .config_file
            .take()
            .or_else(|| get("AWS_CONFIG_FILE").map(PathBuf::from));
        aws.ca_bundle = aws.ca_bundle.take().or_else(|| get("AWS_CA_BUNDLE").map(PathBuf::from));
        aws.region = aws
            .region
            .take()
            .or_else(|| get("AWS_REGION"))
            .or_else(|| get("AWS_DEFAULT_REGION"));
        let ignore_endpoints =
            get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !ignore_endpoints {
            let e = &mut self.endpoints;
            for (slot, var) in [
                (&mut e.ssm, "AWS_ENDPOINT_URL_SSM"),
                (&mut e.ec2, "AWS_ENDPOINT_URL_EC2"),
                (&mut e.ec2_instance_connect, "AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT"),
                (&mut e.kms, "AWS_ENDPOINT_URL_KMS"),
            ] {
                *slot = slot.take().or_else(|| get(var)).or_else(|| get("AWS_ENDPOINT_URL"));
            }
        }
        if !explicit_credentials
            && let (Some(key), Some(secret)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"))
        {
            aws.access_key = Some(key);
            aws.secret_key = Some(secret);
            aws.session_token = aws.session_token.take().or_else(|| get("AWS_SESSION_TOKEN"));
        }
        self
    }
}

/// What a connector is doing, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// Loading the AWS configuration (first use of a connector only).
    LoadingConfig,
    /// Resolving the target as typed.
    Resolving(&'a str),
    /// Pushing an EC2 Instance Connect key to the instance.
    PushingKey(&'a str),
    /// Starting a session with the instance (id).
    Starting(&'a str),
}

impl fmt::Display for Stage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::LoadingConfig => f.write_str("Loading AWS configuration"),
            Stage::Resolving(t) => write!(f, "Resolving {t}"),
            Stage::PushingKey(id) => write!(f, "Pushing the public key to {id}"),
            Stage::Starting(id) => write!(f, "Starting a session with {id}"),
        }
    }
}

/// Where a forward listens and what it reaches.
#[derive(Debug, Clone)]
pub struct ForwardSpec {
    /// Port on the target, or on `remote_host`.
    pub remote_port: u16,
    /// A host reached through the target instead of the target itself.
    pub remote_host: Option<String>,
    /// Local address and port (port 0 picks a free one).
    pub local_addr: SocketAddr,
    /// A session of its own for each connection, with warm sessions started ahead; `None`: one
    /// session for all connections.
    pub per_connection: Option<PerConnection>,
    /// Session document of type Port in place of `AWS-StartPortForwardingSession` (or
    /// `…ToRemoteHost` with `remote_host`), e.g. an account's own with the same parameters.
    pub document: Option<String>,
}

/// Where a SOCKS5 proxy listens (dynamic forwarding: each connection names its destination).
#[derive(Debug, Clone)]
pub struct SocksSpec {
    /// Local address and port (port 0 picks a free one).
    pub local_addr: SocketAddr,
    /// Session document of type Port in place of `AWS-StartPortForwardingSessionToRemoteHost`
    /// (an account's own, taking `host` and `portNumber`).
    pub document: Option<String>,
}

/// An EC2 Instance Connect key to push before an SSH session.
#[derive(Debug, Clone)]
pub struct KeyPush {
    /// The OS user the key is for.
    pub os_user: String,
    /// One OpenSSH public-key line.
    pub public_key: String,
}

/// A session with its target, as resolved.
#[derive(Debug)]
pub struct Connected<T> {
    /// The instance the target meant.
    pub target: ResolvedTarget,
    /// The session.
    pub session: T,
}

/// Starts sessions with targets, from one set of [`Settings`]. Cheap to build: nothing is
/// loaded or dialled until the first session; the AWS configuration is then loaded once and
/// kept (a failed load is tried again next time).
pub struct Connector {
    settings: Settings,
    loaded: OnceCell<(Config, SsmApi)>,
}

/// How progress is reported: called with each [`Stage`] as it begins.
pub type StageFn<'a> = &'a (dyn Fn(Stage<'_>) + Send + Sync);

/// A stage callback that ignores every stage.
pub fn no_stages(_: Stage<'_>) {}

impl Connector {
    /// A connector for `settings`. Nothing is checked or loaded yet: endpoints are checked
    /// when the client that uses them is built.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            loaded: OnceCell::new(),
        }
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn loaded(&self, stage: StageFn<'_>) -> Result<&(Config, SsmApi)> {
        self.loaded
            .get_or_try_init(|| async {
                stage(Stage::LoadingConfig);
                let trust = Trust::load(self.settings.aws.ca_bundle.as_deref())?;
                let config = load_config_with(&self.settings.aws, &trust).await?;
                let kms = KmsApi::new(&config, self.settings.endpoints.kms.as_deref())?;
                let api = SsmApi::new(&config, self.settings.endpoints.ssm.as_deref())?
                    .with_trust(trust)
                    .with_reason(self.settings.reason.clone())
                    .with_kms(kms);
                Ok((config, api))
            })
            .await
    }

    /// The loaded AWS configuration.
    pub async fn config(&self) -> Result<&Config> {
        Ok(&self.loaded(&no_stages).await?.0)
    }

    /// The SSM calls, for sessions started elsewhere (the plugin-compatible mode, §1.3).
    pub async fn api(&self) -> Result<&SsmApi> {
        Ok(&self.loaded(&no_stages).await?.1)
    }

    fn resolve_options(&self) -> ResolveOptions {
        ResolveOptions {
            dns_server: self.settings.dns_server,
            ec2_endpoint_url: self.settings.endpoints.ec2.clone(),
            ..ResolveOptions::default()
        }
    }

    /// Resolves `target` for a session: ids pass through unchecked, every other form is looked
    /// up. With `full`, ids are looked up in EC2 too (EC2 Instance Connect needs the zone).
    pub async fn resolve(&self, target: &str, full: bool, stage: StageFn<'_>) -> Result<ResolvedTarget> {
        let (config, _) = self.loaded(stage).await?;
        stage(Stage::Resolving(target));
        let ro = self.resolve_options();
        let resolved = if full {
            resolve_target(config, target, &ro).await?
        } else {
            resolve_session_target(config, target, &ro).await?
        };
        if resolved.via != Via::Unchecked {
            tracing::info!(
                "target {target} is {} ({}; {})",
                resolved.instance_id,
                resolved.name.as_deref().unwrap_or("no Name tag"),
                resolved.via
            );
        }
        Ok(resolved)
    }

    /// Running instances (id and `Name` tag), as EC2 lists them, at most `limit` (for
    /// completing targets as they are typed).
    pub async fn running_instances(&self, limit: usize) -> Result<Vec<crate::Candidate>> {
        let (config, _) = self.loaded(&no_stages).await?;
        crate::resolve::running_instances(config, &self.resolve_options(), limit).await
    }

    /// The Windows Administrator password of `target` (an RDP login), from EC2
    /// `GetPasswordData`, decrypted with the key pair's private key `private_key_pem`.
    pub async fn windows_password(
        &self,
        target: &str,
        private_key_pem: &str,
        stage: StageFn<'_>,
    ) -> Result<(ResolvedTarget, zeroize::Zeroizing<String>)> {
        let resolved = self.resolve(target, false, stage).await?;
        let (config, _) = self.loaded(stage).await?;
        let client = crate::resolve::ec2_client(config, self.settings.endpoints.ec2.as_deref())?;
        let password = crate::windows::password(&client, &resolved.instance_id, private_key_pem).await?;
        Ok((resolved, password))
    }

    /// Opens a port forward to `target`: the local port is bound first, then the session
    /// started and its handshake awaited.
    pub async fn forward(&self, target: &str, spec: ForwardSpec, stage: StageFn<'_>) -> Result<Connected<PortForward>> {
        self.open_forward(target, spec.remote_port, stage, |fo| {
            fo.remote_host = spec.remote_host;
            fo.local_addr = spec.local_addr;
            fo.per_connection = spec.per_connection;
            fo.document = spec.document;
        })
        .await
    }

    /// Opens a SOCKS5 proxy through `target` (dynamic forwarding): the local port is bound and
    /// the target resolved; no session is started until a client asks for a destination, and
    /// then each connection gets a session of its own to the host and port it named
    /// (`AWS-StartPortForwardingSessionToRemoteHost`), terminated when it ends.
    pub async fn socks(&self, target: &str, spec: SocksSpec, stage: StageFn<'_>) -> Result<Connected<PortForward>> {
        self.open_forward(target, 0, stage, |fo| {
            fo.socks = true;
            fo.local_addr = spec.local_addr;
            fo.document = spec.document;
        })
        .await
    }

    /// Resolves `target`, then starts a forward to `remote_port` with the options `configure`
    /// sets: what [`Connector::forward`] and [`Connector::socks`] share.
    async fn open_forward(
        &self,
        target: &str,
        remote_port: u16,
        stage: StageFn<'_>,
        configure: impl FnOnce(&mut ForwardOptions),
    ) -> Result<Connected<PortForward>> {
        let resolved = self.resolve(target, false, stage).await?;
        stage(Stage::Starting(&resolved.instance_id));
        let mut fo = ForwardOptions::new(resolved.instance_id.clone(), remote_port);
        fo.channel = self.settings.channel.clone();
        configure(&mut fo);
        let forward = PortForward::start(self.api().await?, fo).await?;
        Ok(Connected {
            target: resolved,
            session: forward,
        })
    }

    /// Starts a shell (or a document's interactive command) on `target`; run it with
    /// [`crate::shell::run_on_terminal`].
    pub async fn shell(
        &self,
        target: &str,
        mut options: ShellOptions,
        stage: StageFn<'_>,
    ) -> Result<Connected<DataChannel>> {
        let resolved = self.resolve(target, false, stage).await?;
        stage(Stage::Starting(&resolved.instance_id));
        options.channel = self.settings.channel.clone();
        let dc = crate::shell::start(self.api().await?, &resolved.instance_id, options).await?;
        Ok(Connected {
            target: resolved,
            session: dc,
        })
    }

    /// Starts one command on `target` (NonInteractiveCommands, §6.5); read its output with
    /// [`crate::command::CommandSession::next`] or run it with [`crate::command::run`].
    pub async fn command(
        &self,
        target: &str,
        mut options: CommandOptions,
        stage: StageFn<'_>,
    ) -> Result<Connected<CommandSession>> {
        let resolved = self.resolve(target, false, stage).await?;
        stage(Stage::Starting(&resolved.instance_id));
        options.channel = self.settings.channel.clone();
        let session = crate::command::start(self.api().await?, &resolved.instance_id, options).await?;
        Ok(Connected {
            target: resolved,
            session,
        })
    }

    /// Carries an SSH connection to `port` on `target` over `input`/`output` (the ssh
    /// `ProxyCommand` mode, §7.5), after pushing `key` with EC2 Instance Connect when given.
    pub async fn ssh_stdio<R, W>(
        &self,
        target: &str,
        port: u16,
        key: Option<KeyPush>,
        mut input: R,
        mut output: W,
        stage: StageFn<'_>,
    ) -> Result<End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let dc = self.ssh_channel(target, port, key, stage).await?.session;
        crate::stdio::pipe(dc, ssm_proto::DEFAULT_PAYLOAD_SIZE, &mut input, &mut output).await
    }

    /// Opens the stream session of [`Connector::ssh_stdio`] without running it: run it with
    /// [`crate::stdio::pipe`] (the caller keeps a [`crate::DataSender`] to end it).
    pub async fn ssh_channel(
        &self,
        target: &str,
        port: u16,
        key: Option<KeyPush>,
        stage: StageFn<'_>,
    ) -> Result<Connected<DataChannel>> {
        self.ssh_channel_with(target, port, key, None, stage).await
    }

    /// As [`Connector::ssh_channel`], with a session document of type Port in place of
    /// `AWS-StartSSHSession` (an account's own with a `portNumber` parameter).
    pub async fn ssh_channel_with(
        &self,
        target: &str,
        port: u16,
        key: Option<KeyPush>,
        document: Option<&str>,
        stage: StageFn<'_>,
    ) -> Result<Connected<DataChannel>> {
        let resolved = self.resolve(target, key.is_some(), stage).await?;
        if let Some(k) = key {
            stage(Stage::PushingKey(&resolved.instance_id));
            let endpoint = self.settings.endpoints.ec2_instance_connect.as_deref();
            crate::ec2ic::push_key(self.config().await?, endpoint, &resolved, &k.os_user, &k.public_key).await?;
        }
        stage(Stage::Starting(&resolved.instance_id));
        let api = self.api().await?;
        let dc = crate::stdio::open_ssh_with(
            api,
            &resolved.instance_id,
            port,
            document,
            self.settings.channel.clone(),
        )
        .await?;
        Ok(Connected {
            target: resolved,
            session: dc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn environment_fills_only_what_is_unset() {
        let mut given = Settings::default();
        given.aws.region = Some("eu-west-1".into());
        given.endpoints.ec2 = Some("http://127.0.0.1:1".into());
        given.aws.ca_bundle = Some(PathBuf::from("given.pem"));
        let s = given.with_environment(&env(&[
            ("AWS_CA_BUNDLE", "env.pem"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_PROFILE", " dev "),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:2"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]));
        assert_eq!(s.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.aws.ca_bundle, Some(PathBuf::from("given.pem")));
        assert_eq!(s.aws.profile.as_deref(), Some("dev"));
        assert_eq!(s.endpoints.ssm.as_deref(), Some("http://127.0.0.1:2"));
        assert_eq!(s.endpoints.ec2.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(s.endpoints.ec2_instance_connect.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.endpoints.kms.as_deref(), Some("http://127.0.0.1:9"));
        // As in the SDK's default chain, the environment's keys win over its AWS_PROFILE.
        assert_eq!(s.aws.access_key.as_deref(), Some("AKID"));
        let with_profile = Settings {
            aws: AwsOptions {
                profile: Some("ops".into()),
                ..AwsOptions::default()
            },
            ..Settings::default()
        }
        .with_environment(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]));
        assert_eq!(
            with_profile.aws.access_key, None,
            "a profile given by the caller is the whole truth"
        );
    }

    #[test]
    fn environment_keys_default_region_and_ignored_endpoints() {
        let s = Settings::default().with_environment(&env(&[
            ("AWS_DEFAULT_REGION", "ap-south-1"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
            ("AWS_CONFIG_FILE", "/tmp/c"),
            ("AWS_CA_BUNDLE", "/tmp/ca.pem"),
            ("AWS_REGION", "  "),
        ]));
        assert_eq!(s.aws.ca_bundle, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(s.aws.region.as_deref(), Some("ap-south-1"));
        assert_eq!(s.aws.access_key.as_deref(), Some("AKID"));
        assert_eq!(s.aws.secret_key.as_deref(), Some("secret"));
        assert_eq!(s.aws.session_token.as_deref(), Some("tok"));
        assert_eq!(s.aws.config_file, Some(PathBuf::from("/tmp/c")));
        assert!(s.endpoints.ssm.is_none() && s.endpoints.ec2.is_none());
    }
}
