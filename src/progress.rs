//! How fast each writer's diffs are being merged (a rate over the last seconds), how much of
//! each feed the connected peers hold, and a log line now and then while a long catch-up runs
//! (see [`Progress`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multibee_multibee::{Event, FeedKey, MultiBee};
use multibee_net::{Event as NetEvent, NodeHandle, PeerId};
use tokio::sync::broadcast::error::RecvError;

/// The window a merge rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How often a catch-up is logged at most (per writer).
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// How many entries behind a writer must be for its catch-up to be logged.
pub const LOG_BEHIND: u64 = 10_000;

/// Per writer: when how many of its entries were merged, oldest first.
type Samples = Arc<Mutex<HashMap<FeedKey, VecDeque<(Instant, u64)>>>>;

/// Per feed: how many entries each connected peer holds (as far as it told or sent us).
type Remote = Arc<Mutex<HashMap<FeedKey, HashMap<PeerId, u64>>>>;

/// Follows a [`MultiBee`]'s merge events: how many entries of each writer were merged when,
/// over the last [`RATE_WINDOW`]. Logs (tracing `info`) the progress of a catch-up of more than
/// [`LOG_BEHIND`] entries every [`LOG_EVERY`]. Stops with the last clone.
#[derive(Clone, Debug)]
pub struct Progress {
    samples: Samples,
    remote: Remote,
    _tasks: Arc<[AbortOnDrop]>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Progress {
    /// Starts following `mb` (within a tokio runtime).
    pub fn start(mb: &MultiBee) -> Progress {
        Progress::follow(mb, None)
    }

    /// Starts following `mb` and the node serving it, whose events tell how much of each
    /// feed the connected peers hold.
    pub fn start_served(served: &crate::Served) -> Progress {
        Progress::follow(served.multibee(), Some(served.node()))
    }

    pub(crate) fn follow(mb: &MultiBee, node: Option<NodeHandle>) -> Progress {
        let samples = Arc::new(Mutex::new(HashMap::new()));
        let remote = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = vec![AbortOnDrop(
            tokio::spawn(follow(mb.clone(), samples.clone())).abort_handle(),
        )];
        if let Some(node) = node {
            let task = tokio::spawn(follow_peers(node, remote.clone()));
            tasks.push(AbortOnDrop(task.abort_handle()));
        }
        Progress {
            samples,
            remote,
            _tasks: tasks.into(),
        }
    }

    /// The connected peer that holds the most of feed `key`, and how much, as far as it told
    /// or sent us.
    pub fn best_peer(&self, key: &FeedKey) -> Option<(PeerId, u64)> {
        let remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        remote
            .get(key)?
            .iter()
            .max_by_key(|(_, length)| **length)
            .map(|(peer, length)| (*peer, *length))
    }

    /// Entries of `writer` merged per second over the last [`RATE_WINDOW`] (0 when none were).
    pub fn rate(&self, writer: &FeedKey) -> f64 {
        let mut all = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        all.get_mut(writer).map_or(0.0, rate)
    }
}

/// The merge rate the samples show, once the old ones are dropped.
fn rate(samples: &mut VecDeque<(Instant, u64)>) -> f64 {
    prune(samples, Instant::now());
    match (samples.front(), samples.back()) {
        (Some(&(t0, m0)), Some(&(_, m1))) if m1 > m0 => {
            (m1 - m0) as f64 / t0.elapsed().as_secs_f64().max(0.001)
        }
        _ => 0.0,
    }
}

/// Drops the samples older than the window, keeping the newest one as a baseline.
fn prune(samples: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while samples.len() > 1
        && samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
    {
        samples.pop_front();
    }
}

async fn follow(mb: MultiBee, samples: Samples) {
    let mut events = mb.events();
    let mut logged: HashMap<FeedKey, Instant> = HashMap::new();
    loop {
        let (writer, merged) = match events.recv().await {
            Ok(Event::Merged { writer, merged }) => (writer, merged),
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let now = Instant::now();
        let rate = {
            let mut all = samples.lock().unwrap_or_else(|p| p.into_inner());
            let mine = all.entry(writer).or_default();
            mine.push_back((now, merged));
            rate(mine)
        };
        let due = logged
            .get(&writer)
            .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
        if !due {
            continue;
        }
        let Ok(writers) = mb.writers() else { continue };
        if let Some(w) = writers.iter().find(|w| w.key == writer)
            && w.length.saturating_sub(w.merged) >= LOG_BEHIND
        {
            logged.insert(writer, now);
            tracing::info!(
                %writer,
                done = w.merged,
                known = w.length,
                rate = format!("{rate:.0}/s"),
                "catching up"
            );
        }
    }
}

async fn follow_peers(node: NodeHandle, remote: Remote) {
    let mut events = node.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let mut remote = remote.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            NetEvent::PeerHas { key, peer, length }
            | NetEvent::FeedProgressed { key, length, peer } => {
                let held = remote.entry(key).or_default().entry(peer).or_default();
                *held = (*held).max(length);
            }
            NetEvent::PeerDisconnected { peer } => {
                for peers in remote.values_mut() {
                    peers.remove(&peer);
                }
            }
            _ => {}
        }
    }
}
