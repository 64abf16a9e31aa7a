//! Errors of the client runtime. Messages never contain tokens.

use std::net::SocketAddr;

/// Everything that can go wrong starting or running a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No region was configured.
    #[error("no AWS region is set: pass --region (or -Region), set AWS_REGION, or set `region` in the profile")]
    NoRegion,
    /// The configuration is unusable (bad endpoint URL, conflicting options, …).
    #[error("{0}")]
    Config(String),
    /// An AWS API call failed.
    #[error("{operation} failed: {message}")]
    Api {
        /// Operation name, e.g. `StartSession`.
        operation: &'static str,
        /// Service error code, when the service sent one (e.g. `TargetNotConnected`).
        code: Option<String>,
        /// Human-readable message.
        message: String,
    },
    /// No credentials were found anywhere the SDK looks (a first run, usually).
    #[error(
        "no AWS credentials found ({detail}). Looked in: the environment (AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY), the profile (--profile or -ProfileName, else AWS_PROFILE, else \
         default) in ~/.aws/credentials and ~/.aws/config (keys, SSO, credential_process, role), \
         web identity (AWS_WEB_IDENTITY_TOKEN_FILE), the container (ECS) and the instance role \
         (IMDS). Fix: set those variables, run `aws configure` or `aws sso login --profile NAME`, \
         name a profile that has credentials, or in PowerShell Set-AWSCredential"
    )]
    NoCredentials {
        /// The credential chain's own reason, one line.
        detail: String,
    },
    /// The credentials found have expired: an SSO login, or a session token.
    #[error("{}", if *.sso {
        format!("the AWS SSO (IAM Identity Center) login has expired ({detail}): run `aws sso login --profile NAME` for the profile in use, then try again")
    } else {
        format!("the AWS credentials have expired ({detail}): get new ones (a new session token, or `aws sso login` / `aws configure export-credentials`) and try again")
    })]
    CredentialsExpired {
        /// Why, one line.
        detail: String,
        /// Whether it was an SSO login that expired.
        sso: bool,
    },
    /// The AWS endpoint could not be reached (refused, no route, name not found, timed out).
    #[error(
        "{operation} failed: cannot reach the AWS endpoint ({detail}). Check the region \
         (--region or -Region), any endpoint override (--endpoint-url, AWS_ENDPOINT_URL_*, \
         endpoint_url in the profile) and proxy settings (HTTPS_PROXY)"
    )]
    Unreachable {
        /// Operation name, e.g. `StartSession`.
        operation: &'static str,
        /// The connection's failure, one line.
        detail: String,
    },
    /// The local port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The WebSocket could not be opened or was lost for good.
    #[error("data channel: {0}")]
    Connect(String),
    /// The session did not start properly (handshake failures, unsupported features).
    #[error("session could not start: {0}")]
    Handshake(#[from] ssm_proto::HandshakeError),
    /// KMS encryption of the session failed (§5.6).
    #[error("{0}")]
    Kms(#[from] crate::kms::KmsError),
    /// The service ended the session.
    #[error("session {session_id} ended by the service{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Closed {
        /// Session id.
        session_id: String,
        /// Text from `channel_closed`, if any.
        reason: String,
    },
    /// `ResumeSession` returned no token: the service let the session expire while the
    /// connection was lost (§1.4).
    #[error("session {0} timed out")]
    SessionExpired(String),
    /// A local deadline passed while waiting for the named step.
    #[error("{0} timed out")]
    DeadlinePassed(&'static str),
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// The target text is none of the accepted forms (id, `key:value` tag, IP address, DNS name).
    #[error("{target:?} is not a valid target: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No running instance matched the target.
    #[error(
        "no running instance matches {target:?}; searched {searched}. If it is in another region, \
         pass --region (or -Region)"
    )]
    TargetNotFound {
        /// The target as given.
        target: String,
        /// What was searched, e.g. `EC2 instances with tag Name=web`; ends with the
        /// instances that matched but were not running, when there were any.
        searched: String,
    },
    /// More than one running instance matched the target; none is picked.
    #[error("{target:?} matches {} running instances{}: {}; use an instance id or a more specific target",
        .candidates.len(), if *.more { " or more" } else { "" }, Candidate::list(.candidates))]
    AmbiguousTarget {
        /// The target as given.
        target: String,
        /// The instances that matched (at most [`crate::resolve::MAX_CANDIDATES`]).
        candidates: Vec<Candidate>,
        /// Whether more matched than are listed.
        more: bool,
    },
    /// No record type of a DNS-name target gave a usable answer and at least one failed
    /// (refused, SERVFAIL, timed out): whether the name means an instance is unknown.
    #[error("DNS lookup of {name} found nothing usable: {outcomes}")]
    Dns {
        /// Name looked up.
        name: String,
        /// Each record type's outcome, e.g. `A: refused, AAAA: timed out after 3 s, TXT: none`.
        outcomes: String,
    },
}

/// One instance among several that matched an ambiguous target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Instance id.
    pub instance_id: String,
    /// Value of the `Name` tag, if any.
    pub name: Option<String>,
    /// Instance state name, e.g. `running`.
    pub state: String,
}

impl Candidate {
    fn list(candidates: &[Candidate]) -> String {
        candidates
            .iter()
            .map(|c| match &c.name {
                Some(n) => format!("{} (Name={n}, {})", c.instance_id, c.state),
                None => format!("{} (no Name tag, {})", c.instance_id, c.state),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What kind of failure an [`Error`] is: the one classification that the helper's exit codes
/// and the C ABI's error kinds are both mapped from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No region, a bad endpoint, conflicting credentials or settings.
    Config,
    /// The target text is malformed.
    InvalidTarget,
    /// No running instance matched the target.
    TargetNotFound,
    /// Several running instances matched the target.
    AmbiguousTarget,
    /// DNS failed while resolving a name target.
    TargetLookup,
    /// An AWS API call failed.
    Api,
    /// No AWS credentials were found.
    NoCredentials,
    /// The AWS credentials (an SSO login, a session token) have expired.
    CredentialsExpired,
    /// The AWS endpoint could not be reached.
    EndpointUnreachable,
    /// The target has no agent connected to Session Manager (`TargetNotConnected`).
    TargetNotConnected,
    /// The local port could not be bound.
    Listen,
    /// The data channel could not be opened, was lost for good, or was closed by the service.
    Connection,
    /// The session could not start (handshake, unsupported feature).
    Session,
    /// KMS refused the data key to these credentials.
    KmsAccessDenied,
    /// The session's KMS key is missing, disabled or unusable.
    KmsKeyUnavailable,
    /// The agent's encryption challenge did not verify, or the agent broke the KMS sequence.
    KmsChallengeFailed,
    /// An encrypted message from the agent failed authentication.
    KmsTampered,
    /// The session expired or a local deadline passed.
    TimedOut,
    /// The caller cancelled.
    Cancelled,
    /// Local I/O failed.
    Io,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoRegion | Error::Config(_) => ErrorKind::Config,
            Error::InvalidTarget { .. } => ErrorKind::InvalidTarget,
            Error::TargetNotFound { .. } => ErrorKind::TargetNotFound,
            Error::AmbiguousTarget { .. } => ErrorKind::AmbiguousTarget,
            Error::Dns { .. } => ErrorKind::TargetLookup,
            Error::Api { code: Some(c), .. } if c == TARGET_NOT_CONNECTED => ErrorKind::TargetNotConnected,
            Error::Api { .. } => ErrorKind::Api,
            Error::NoCredentials { .. } => ErrorKind::NoCredentials,
            Error::CredentialsExpired { .. } => ErrorKind::CredentialsExpired,
            Error::Unreachable { .. } => ErrorKind::EndpointUnreachable,
            Error::Listen { .. } => ErrorKind::Listen,
            Error::Connect(_) | Error::Closed { .. } => ErrorKind::Connection,
            Error::Handshake(_) => ErrorKind::Session,
            Error::Kms(e) => match e {
                crate::kms::KmsError::AccessDenied { .. } => ErrorKind::KmsAccessDenied,
                crate::kms::KmsError::KeyUnavailable { .. } => ErrorKind::KmsKeyUnavailable,
                crate::kms::KmsError::ChallengeMismatch | crate::kms::KmsError::OutOfOrder(_) => {
                    ErrorKind::KmsChallengeFailed
                }
                crate::kms::KmsError::Tampered => ErrorKind::KmsTampered,
            },
            Error::SessionExpired(_) | Error::DeadlinePassed(_) => ErrorKind::TimedOut,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Io(_) => ErrorKind::Io,
        }
    }

    /// The AWS error code, when this is an API error that carried one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// The service's error code for a target without a connected agent.
pub(crate) const TARGET_NOT_CONNECTED: &str = "TargetNotConnected";

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
