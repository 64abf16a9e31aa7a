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
    mut input: R,
    mut output: W,
) -> Result<End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let dc = open_ssh(api, target, port, opts).await?;
    pipe(dc, ssm_proto::DEFAULT_PAYLOAD_SIZE, &mut input, &mut output).await
}

/// Starts `AWS-StartSSHSession` to `port` on `target` and opens its data channel, checked to
/// be a stream session; run it with [`pipe`].
pub async fn open_ssh(api: &SsmApi, target: &str, port: u16, opts: ChannelOptions) -> Result<DataChannel> {
    open_ssh_with(api, target, port, None, opts).await
}

/// As [`open_ssh`], with `document` (of type Port, taking `portNumber`) in place of
/// `AWS-StartSSHSession` when given.
pub async fn open_ssh_with(
    api: &SsmApi,
    target: &str,
    port: u16,
    document: Option<&str>,
    opts: ChannelOptions,
) -> Result<DataChannel> {
    let mut params = HashMap::new();
    params.insert("portNumber".to_owned(), vec![port.to_string()]);
    let document = document.unwrap_or("AWS-StartSSHSession");
    let started = api.start_session(target, Some(document), &params).await?;
    let control: SharedControl = Arc::new(api.clone());
    open_started(started, control, opts).await
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
    let dc = open_started(started, control, opts).await?;
    pipe(dc, ssm_proto::DEFAULT_PAYLOAD_SIZE, &mut input, &mut output).await
}

/// Opens the data channel of an already started session and checks that it is a stream
/// session; one that is not is ended at once.
pub async fn open_started(
    started: StartedSession,
    control: SharedControl,
    opts: ChannelOptions,
) -> Result<DataChannel> {
    let dc = DataChannel::open(started, control, opts).await?;
    let wrong = match dc.start.port.as_ref().map(|p| p.mode) {
        Some(PortMode::Stdio) => return Ok(dc),
        Some(_) => "the session is a port forward, not a stream session".to_owned(),
        None => format!(
            "expected a port session, the agent started {}",
            dc.start.session_type.as_str()
        ),
    };
    let _ = dc.end().await;
    Err(Error::Config(wrong))
}

/// Copies `input` into the session and the session's output into `output` until the session
/// ends.
///
/// End of input is a half-close: nothing more goes out, but the agent's output is written
/// until the session ends (`channel_closed`, typically when the server closes its side), so a
/// server's last bytes after the request are never cut (the official plugin exits at once,
/// §7.5). An input that fails, an output that can no longer be written, or a
/// [`DataSender::finish`](crate::DataSender::finish) from elsewhere (a signal) ends the
/// session: our data is drained and the session terminated (§9 item 22).
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
                Ok(0) => input_open = false,
                Err(e) => {
                    tracing::debug!("input ended the session: {e}");
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
