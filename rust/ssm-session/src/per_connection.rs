//! Session per connection: each accepted local connection is carried by a port session of its
//! own, instead of all of them sharing one.
//!
//! Why: the agent reads its destination 1 KiB at a time with a 1 ms pause after each read
//! (§9 item 1), so one session never carries more than about 1 MB/s towards the client, however
//! many connections smux puts into it (§7.4). Only more sessions lift that ceiling.
//!
//! How: every session is opened by [`crate::port::open_session`], the code the one-session
//! forward opens its session with (same document and parameters, same StartSession with its
//! waiting out of throttling, same data channel and handshake), and runs the same basic or smux
//! loop; its connection is handed to it instead of accepted from a listener of its own, and the
//! session is terminated when that connection ends. Sessions start concurrently, each on a task
//! of its own.
//!
//! Warm sessions: [`PerConnection::warm_sessions`] sessions are started ahead and wait for a
//! connection, so a new connection does not wait for a StartSession round trip, the data
//! channel's dial and the handshake. A warm session that ends while it waits (MGS ends a session
//! without client data after its idle timeout) is replaced; a connection handed to a warm session
//! that turns out to have ended comes back and goes to the next one, or to a session started for
//! it: it is never failed for that. A session started for a connection that cannot start (the
//! target is gone, access denied) closes that connection, with a warning.
//!
//! Stopping the forward closes the listener and terminates every session: serving, warm and
//! starting (a start in flight is terminated when its answer comes).
//!
//! SOCKS forwards ([`ForwardOptions::socks`]) are sessions per connection too, with no warm
//! sessions (each session's destination is known only once its connection asked for one): each
//! accepted connection is read as a SOCKS5 request ([`crate::socks`]), and its session is
//! opened by the same [`crate::port::open_session`] with the requested host and port, then run
//! and ended as any other here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ssm_proto::PortMode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::aws::SsmApi;
use crate::driver::End;
use crate::error::{Error, Result};
use crate::port::{Acceptor, ForwardOptions, ForwardStats, Handoff, PerConnection, PortForward, Source, open_session};

/// What a session task tells the pool.
enum Event {
    /// The session is open (waiting for its connection, or serving it).
    Ready(u64, PortMode),
    /// The session could not start.
    Failed(u64, Error),
    /// The session has ended.
    Ended(u64),
}

/// What every session task shares.
struct Ctx {
    api: SsmApi,
    opts: ForwardOptions,
    local_addr: SocketAddr,
    stats: Arc<ForwardStats>,
    /// Set when the forward stops: every session task terminates its session.
    stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
    /// Where a warm session that ended before taking its connection gives it back.
    back: mpsc::UnboundedSender<TcpStream>,
}

/// First pause before replacing a warm session that could not start, doubled up to
/// [`REFILL_MAX_WAIT`] while starts keep failing (so a target that is gone is not asked again
/// and again; connections still get sessions of their own meanwhile).
const REFILL_FIRST_WAIT: Duration = Duration::from_secs(1);
const REFILL_MAX_WAIT: Duration = Duration::from_secs(60);

/// Starts a session-per-connection forward on `listener` (bound already). With warm sessions,
/// waits until the first is open (or fails with its error), so a forward that cannot start
/// sessions at all fails here, as a one-session forward does.
pub(crate) async fn start(
    api: SsmApi,
    opts: ForwardOptions,
    pc: PerConnection,
    listener: TcpListener,
) -> Result<PortForward> {
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(ForwardStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (sessions_stop, sessions_stop_rx) = watch::channel(false);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (back_tx, back) = mpsc::unbounded_channel();
    let ctx_socks = opts.socks;
    let ctx = Arc::new(Ctx {
        api,
        opts,
        local_addr,
        stats: stats.clone(),
        stop: sessions_stop_rx,
        events: events_tx,
        back: back_tx,
    });
    let mut pool = Pool {
        ctx,
        target: pc.warm_sessions,
        warm: VecDeque::new(),
        starting: HashMap::new(),
        tasks: JoinSet::new(),
        next_id: 0,
        refill_at: None,
        refill_wait: REFILL_FIRST_WAIT,
        sessions_stop,
    };
    pool.refill();
    let mut mode = PortMode::Basic;
    if pc.warm_sessions > 0 {
        // Dropping `pool` on an error (or a cancel) aborts its tasks: a session being started is
        // terminated when its answer comes, an open one when its forward is dropped.
        loop {
            let Some(ev) = events.recv().await else {
                return Err(Error::Connect("the session pool ended".into()));
            };
            if let Event::Failed(_, e) = ev {
                pool.stop().await;
                return Err(e);
            }
            let ready = matches!(ev, Event::Ready(..));
            if let Event::Ready(_, m) = ev {
                mode = m;
            }
            pool.handle(ev);
            if ready {
                break;
            }
        }
    }
    if ctx_socks {
        tracing::info!(%local_addr, "SOCKS5 proxy ready, one session per connection");
    } else {
        tracing::info!(%local_addr, warm = pc.warm_sessions, "port forward ready, one session per connection");
    }
    let task = tokio::spawn(pool.run(Acceptor::new(Source::Listener(listener)), stop_rx, events, back));
    Ok(PortForward::managed(local_addr, mode, stats, stop_tx, task, ctx_socks))
}

/// The sessions of a session-per-connection forward.
struct Pool {
    ctx: Arc<Ctx>,
    /// Warm sessions wanted.
    target: usize,
    /// Warm sessions open and waiting, oldest first: id and where their connection goes.
    warm: VecDeque<(u64, oneshot::Sender<TcpStream>)>,
    /// Warm sessions being started.
    starting: HashMap<u64, oneshot::Sender<TcpStream>>,
    tasks: JoinSet<()>,
    next_id: u64,
    /// No warm session is started before this (after a failed start).
    refill_at: Option<tokio::time::Instant>,
    refill_wait: Duration,
    sessions_stop: watch::Sender<bool>,
}

impl Pool {
    async fn run(
        mut self,
        mut listener: Acceptor,
        mut stop: watch::Receiver<bool>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut back: mpsc::UnboundedReceiver<TcpStream>,
    ) -> Result<End> {
        loop {
            let refill_at = self.refill_at;
            tokio::select! {
                accepted = listener.accept() => if let Some((stream, peer)) = accepted {
                    tracing::debug!(%peer, "connection accepted");
                    if self.ctx.opts.socks {
                        self.next_id += 1;
                        self.tasks.spawn(socks_session(self.ctx.clone(), self.next_id, stream));
                    } else {
                        self.dispatch(stream);
                    }
                },
                Some(stream) = back.recv() => {
                    tracing::debug!("a warm session ended before taking its connection; passing it on");
                    self.dispatch(stream);
                }
                Some(ev) = events.recv() => self.handle(ev),
                // Finished session tasks are reaped as they end, not kept until the forward stops.
                Some(_) = self.tasks.join_next() => {}
                () = sleep_until_opt(refill_at) => {
                    self.refill_at = None;
                    self.refill();
                }
                // A change, or the stopper dropped with the forward.
                _ = stop.changed() => break,
            }
        }
        drop(listener);
        self.stop().await;
        Ok(End::Finished)
    }

    /// Gives `stream` to the oldest open warm session, else to the oldest one starting, else to
    /// a session started for it; then starts warm sessions to make up the number.
    fn dispatch(&mut self, mut stream: TcpStream) {
        while let Some((id, tx)) = self.warm.pop_front() {
            match tx.send(stream) {
                Ok(()) => {
                    tracing::debug!(session_task = id, "connection handed to a warm session");
                    self.refill();
                    return;
                }
                // That session has ended (its Ended event is on its way).
                Err(s) => stream = s,
            }
        }
        if let Some(&id) = self.starting.keys().min()
            && let Some(tx) = self.starting.remove(&id)
        {
            match tx.send(stream) {
                Ok(()) => {
                    tracing::debug!(session_task = id, "connection handed to a warm session being started");
                    self.refill();
                    return;
                }
                Err(s) => stream = s,
            }
        }
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(stream);
        // No way back: if this session cannot start, the connection is closed.
        self.spawn(rx, None);
        self.refill();
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Ready(id, _) => {
                if let Some(tx) = self.starting.remove(&id) {
                    self.warm.push_back((id, tx));
                }
                self.refill_wait = REFILL_FIRST_WAIT;
            }
            Event::Failed(id, e) => {
                if self.starting.remove(&id).is_some() {
                    tracing::warn!(
                        "a warm session could not start: {e}; trying again in {} s",
                        self.refill_wait.as_secs()
                    );
                    self.refill_at = Some(tokio::time::Instant::now() + self.refill_wait);
                    self.refill_wait = (self.refill_wait * 2).min(REFILL_MAX_WAIT);
                } else {
                    tracing::warn!("a connection was closed: its session could not start: {e}");
                }
            }
            Event::Ended(id) => {
                let before = self.warm.len() + self.starting.len();
                self.warm.retain(|(w, _)| *w != id);
                self.starting.remove(&id);
                if self.warm.len() + self.starting.len() < before {
                    tracing::info!("a warm session ended before it was used; starting another");
                    self.refill();
                }
            }
        }
    }

    /// Starts warm sessions until as many are open or starting as wanted (unless a failed start
    /// asked for a pause).
    fn refill(&mut self) {
        if self.refill_at.is_some() || *self.sessions_stop.borrow() {
            return;
        }
        while self.warm.len() + self.starting.len() < self.target {
            let (tx, rx) = oneshot::channel();
            let id = self.spawn(rx, Some(self.ctx.back.clone()));
            self.starting.insert(id, tx);
        }
    }

    fn spawn(&mut self, rx: oneshot::Receiver<TcpStream>, back: Option<mpsc::UnboundedSender<TcpStream>>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let handoff = Handoff {
            rx,
            back,
            local_addr: self.ctx.local_addr,
        };
        self.tasks.spawn(session(self.ctx.clone(), id, handoff));
        id
    }

    /// Terminates every session (serving, warm, starting) and waits for their tasks.
    async fn stop(mut self) {
        let _ = self.sessions_stop.send(true);
        self.warm.clear();
        self.starting.clear();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One session: started, then run until its connection ends, it ends by itself, or the forward
/// stops (then terminated).
async fn session(ctx: Arc<Ctx>, id: u64, handoff: Handoff) {
    let mut stop = ctx.stop.clone();
    let port = ctx.local_addr.port();
    let opened = tokio::select! {
        opened = open_session(&ctx.api, &ctx.opts, port, Source::Handoff(handoff), ctx.stats.clone()) => opened,
        // Dropping the start terminates a session the service starts anyway.
        _ = stop.wait_for(|s| *s) => {
            let _ = ctx.events.send(Event::Ended(id));
            return;
        }
    };
    let forward = match opened {
        Ok(f) => f,
        Err(e) => {
            let _ = ctx.events.send(Event::Failed(id, e));
            return;
        }
    };
    let _ = ctx.events.send(Event::Ready(id, forward.mode()));
    serve(&ctx, forward, None).await;
    let _ = ctx.events.send(Event::Ended(id));
}

/// One SOCKS connection: its request read, a session opened to the destination it names, the
/// reply sent, and the session run as [`session`] runs one. A session that cannot start gets a
/// failure reply and a warning; the forward carries on.
async fn socks_session(ctx: Arc<Ctx>, id: u64, stream: TcpStream) {
    let mut stop = ctx.stop.clone();
    let request = tokio::select! {
        request = crate::socks::accept(stream) => request,
        _ = stop.wait_for(|s| *s) => None,
    };
    let Some(request) = request else { return };
    let destination = request.destination();
    tracing::debug!(session_task = id, %destination, "SOCKS CONNECT");
    let mut opts = ctx.opts.clone();
    opts.remote_host = Some(request.host.clone());
    opts.remote_port = request.port;
    // The connection goes to the session only after the reply, so nothing of the destination's
    // reaches the client before it.
    let (tx, rx) = oneshot::channel();
    let handoff = Handoff {
        rx,
        back: None,
        local_addr: ctx.local_addr,
    };
    let port = ctx.local_addr.port();
    let opened = tokio::select! {
        opened = open_session(&ctx.api, &opts, port, Source::Handoff(handoff), ctx.stats.clone()) => opened,
        // Dropping the start terminates a session the service starts anyway.
        _ = stop.wait_for(|s| *s) => Err(Error::Cancelled),
    };
    let forward = match opened {
        Ok(f) => f,
        Err(Error::Cancelled) => {
            request.fail(&Error::Cancelled).await;
            return;
        }
        Err(e) => {
            tracing::warn!("SOCKS connection to {destination} refused: its session could not start: {e}");
            request.fail(&e).await;
            return;
        }
    };
    match request.succeed().await {
        Ok(stream) => {
            let _ = tx.send(stream);
        }
        Err(e) => {
            tracing::debug!(%destination, "SOCKS client gone before its reply: {e}");
            let _ = forward.stop().await;
            return;
        }
    }
    tracing::info!(session = %forward.session_id(), %destination, "SOCKS connection open");
    serve(&ctx, forward, Some(&destination)).await;
}

/// Runs an open session until its connection ends, it ends by itself, or the forward stops
/// (then it is terminated). `socks`: the destination a SOCKS client asked for, named in a
/// warning when the agent ends the session with a reason (it refused the destination, or could
/// not reach it).
async fn serve(ctx: &Ctx, mut forward: PortForward, socks: Option<&str>) {
    let mut stop = ctx.stop.clone();
    let session_id = forward.session_id().to_owned();
    tracing::debug!(session = %session_id, "session open");
    let ended = tokio::select! {
        end = forward.wait() => Some(end),
        _ = stop.wait_for(|s| *s) => None,
    };
    let end = match ended {
        Some(end) => end,
        None => forward.stop().await,
    };
    match end {
        Ok(End::Closed(reason)) => match socks {
            Some(destination) if !reason.is_empty() => {
                tracing::warn!(session = %session_id, "SOCKS connection to {destination} closed by the agent: {reason}");
            }
            _ => tracing::info!(session = %session_id, "session closed by the service: {reason}"),
        },
        Ok(End::Finished) => tracing::debug!(session = %session_id, "session ended"),
        Err(e) => tracing::warn!(session = %session_id, "session failed: {e}"),
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
