//! Standard-stream mode (§7.5): `AWS-StartSSHSession` carried over stdin/stdout, for an ssh
//! `ProxyCommand`. Nothing but tunnel bytes is ever written to the output.

use std::collections::HashMap;
use std::sync::Arc;

use ssm_proto::{PayloadType, PortMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::aws::{SharedControl, SsmApi, StartedSession};
use crate::driver::{ChannelOptions, DataChannel, End};
use crate::error::{Error, Result};

/// Starts `AWS-StartSSHSession` to `port` on `target` and pipes `input`/`output` through it.
pub async fn run_ssh_stdio<R, W>(
    api: &SsmApi,
    target: &str,
    port: u16,
    opts: ChannelOptions,
    input: R,
    output: W,
) -> Result<End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut params = HashMap::new();
    params.insert("portNumber".to_owned(), vec![port.to_string()]);
    let started = api.start_session(target, Some("AWS-StartSSHSession"), &params).await?;
    let control: SharedControl = Arc::new(api.clone());
    pipe_started(started, control, opts, input, output).await
}

/// Runs an already started stdio session (the plugin-compatible mode gets these from its
/// caller, §1.3).
pub async fn pipe_started<R, W>(
    started: StartedSession,
    control: SharedControl,
    opts: ChannelOptions,
    mut input: R,
    mut output: W,
) -> Result<End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let dc = DataChannel::open(started, control, opts).await?;
    match dc.start.port.as_ref().map(|p| p.mode) {
        Some(PortMode::Stdio) => {}
        Some(_) => {
            return Err(Error::Config(
                "the session is a port forward, not a stream session".into(),
            ));
        }
        None => {
            return Err(Error::Config(format!(
                "expected a port session, the agent started {}",
                dc.start.session_type.as_str()
            )));
        }
    }
    pipe(dc, ssm_proto::DEFAULT_PAYLOAD_SIZE, &mut input, &mut output).await
}

/// Copies `input` into the session and the session's output into `output` until the session
/// ends. On input EOF our data is drained and the session terminated (§9 item 22).
pub async fn pipe<R, W>(dc: DataChannel, payload_size: usize, input: &mut R, output: &mut W) -> Result<End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (sender, mut rx, driver) = dc.into_parts();
    let mut buf = vec![0u8; payload_size.max(1)];
    let mut input_open = true;
    // Read input and wait for send room as separate select arms: awaiting either inside an arm
    // would stop the output from flowing meanwhile, and ssh waits for the server's
    // identification before it writes again (a deadlock at the banner exchange).
    let mut pending: Option<Vec<u8>> = None;
    let mut finishing = false;
    let mut outcome: Result<()> = Ok(());
    loop {
        tokio::select! {
            read = input.read(&mut buf), if input_open && pending.is_none() => match read {
                Ok(0) | Err(_) => {
                    input_open = false;
                    finishing = true;
                }
                Ok(n) => pending = Some(buf.get(..n).unwrap_or_default().to_vec()),
            },
            permit = sender.reserve(), if pending.is_some() || finishing => {
                let Ok(permit) = permit else { break };
                match pending.take() {
                    Some(data) => permit.send(PayloadType::Output, data),
                    None => {
                        finishing = false;
                        drop(permit);
                        sender.finish(true).await;
                    }
                }
            }
            msg = rx.recv() => match msg {
                Some((PayloadType::Output, data)) => {
                    if let Err(e) = async { output.write_all(&data).await?; output.flush().await }.await {
                        outcome = Err(Error::Io(e));
                        sender.finish(true).await;
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    drop(sender);
    let end = driver
        .await
        .map_err(|e| Error::Connect(format!("driver failed: {e}")))?;
    outcome.and(end)
}
