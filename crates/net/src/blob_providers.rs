//! Providers of blobs through Kademlia: a node announces the complete blobs it holds under a
//! record key derived from each id ([`blob_record_key`]), [`NodeHandle::find_blob_providers`]
//! looks them up, and [`NodeHandle::fetch_blob_anywhere`] fetches a blob from the connected
//! peers, or else from the providers it finds and dials.
//!
//! Bounded work: a node provides at most [`Config::max_provided_blobs`](crate::Config) blobs
//! (256 by default; each provider record is published again by Kademlia every 12 hours,
//! one DHT query each, and the record store holds 1024 provided keys in all, feeds included):
//! the first ones in id order among those held at the start, then those that become complete,
//! until the cap. Blobs beyond it are still served and found through store sync
//! ([`NodeHandle::list_peer_blobs`]). The blob store does not tell deletions: whoever deletes
//! a blob calls [`NodeHandle::stop_providing_blob`] (the HTTP API and the node's `blob gc` do);
//! records other nodes hold expire with their TTL, and a node asked for a blob it no longer
//! holds answers `NotFound`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::{PeerId, kad};
use multibee_blobs::{Arrival, BlobId};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::blob_session::FetchOutcome;
use crate::error::FetchError;
use crate::event::Event;
use crate::node::{Command, NodeHandle};
use crate::session::Internal;

/// The most providers a fetch dials (the DHT may name many, and a hostile node any number).
const MAX_PROVIDERS_DIALED: usize = 8;

/// The context of [`blob_record_key`]'s key derivation: feeds' discovery keys are derived
/// otherwise, so the two never collide.
const RECORD_CONTEXT: &str = "multibee 2026-11 blob provider record key v1";

/// How long [`NodeHandle::fetch_blob_anywhere`] waits for each provider's connection.
const PROVIDER_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The DHT key under which the providers of blob `id` are recorded: BLAKE3 `derive_key` of
/// the id in its own context.
pub fn blob_record_key(id: BlobId) -> kad::RecordKey {
    kad::RecordKey::new(&blake3::derive_key(RECORD_CONTEXT, id.as_bytes()))
}

/// The blobs a node provides, and its lookups of providers in progress.
#[derive(Default)]
pub(crate) struct Providers {
    provided: HashSet<BlobId>,
    queries: HashMap<kad::QueryId, Lookup>,
}

/// A lookup of a blob's providers for [`NodeHandle::find_blob_providers`].
struct Lookup {
    local: PeerId,
    reply: oneshot::Sender<Vec<PeerId>>,
}

impl Providers {
    /// Starts providing `id`, unless `max` blobs are provided already.
    pub(crate) fn provide(
        &mut self,
        kad: Option<&mut kad::Behaviour<kad::store::MemoryStore>>,
        id: BlobId,
        max: usize,
    ) {
        let Some(kad) = kad else { return };
        if self.provided.len() >= max || self.provided.contains(&id) {
            return;
        }
        match kad.start_providing(blob_record_key(id)) {
            Ok(_) => {
                self.provided.insert(id);
            }
            Err(e) => tracing::debug!(%id, %e, "cannot record a provided blob"),
        }
    }

    /// Stops providing `id` (a slot under the cap is free again).
    pub(crate) fn unprovide(
        &mut self,
        kad: Option<&mut kad::Behaviour<kad::store::MemoryStore>>,
        id: BlobId,
    ) {
        if self.provided.remove(&id)
            && let Some(kad) = kad
        {
            kad.stop_providing(&blob_record_key(id));
        }
    }

    /// Starts a lookup of `id`'s providers; answers at once (none) without Kademlia.
    pub(crate) fn find(
        &mut self,
        kad: Option<&mut kad::Behaviour<kad::store::MemoryStore>>,
        local: PeerId,
        id: BlobId,
        reply: oneshot::Sender<Vec<PeerId>>,
    ) {
        let Some(kad) = kad else {
            let _ = reply.send(Vec::new());
            return;
        };
        let query = kad.get_providers(blob_record_key(id));
        self.queries.insert(query, Lookup { local, reply });
    }

    /// Handles a step of a query; `false` if it is not a lookup of blob providers. A lookup
    /// answers with the first providers found (other than this node) and stops, or with none
    /// once the query ends.
    pub(crate) fn on_progress(
        &mut self,
        kad: Option<&mut kad::Behaviour<kad::store::MemoryStore>>,
        query: kad::QueryId,
        result: &kad::QueryResult,
        last: bool,
    ) -> bool {
        let Some(lookup) = self.queries.get(&query) else {
            return false;
        };
        let found: Vec<PeerId> = match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => providers
                .iter()
                .copied()
                .filter(|p| *p != lookup.local)
                .collect(),
            _ => Vec::new(),
        };
        if found.is_empty() && !last {
            return true;
        }
        if let Some(lookup) = self.queries.remove(&query) {
            let _ = lookup.reply.send(found);
        }
        if !last && let Some(mut running) = kad.and_then(|kad| kad.query_mut(&query)) {
            running.finish();
        }
        true
    }
}

/// Tells the event loop to provide each blob that becomes complete, until the node stops.
/// Arrivals missed by falling behind are not provided (until the next start).
pub(crate) async fn provide_arrivals(
    mut arrivals: broadcast::Receiver<Arrival>,
    internal: mpsc::Sender<Internal>,
) {
    loop {
        match arrivals.recv().await {
            Ok(arrival) => {
                if internal
                    .send(Internal::ProvideBlob(arrival.id))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "arrived blobs not provided");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl NodeHandle {
    /// Looks up the providers of blob `id` in the DHT: the first ones found (not this node),
    /// or none once the lookup ends (at once without Kademlia). Providers are not dialed.
    pub async fn find_blob_providers(&self, id: BlobId) -> Result<Vec<PeerId>, crate::Error> {
        self.ask(|reply| Command::FindBlobProviders(id, reply))
            .await
    }

    /// Stops announcing blob `id` in the DHT (call it when the blob is deleted): this node no
    /// longer answers as its provider; the records other nodes hold expire with their TTL.
    pub async fn stop_providing_blob(&self, id: BlobId) -> Result<(), crate::Error> {
        self.ask(|done| Command::StopProvidingBlob(id, done)).await
    }

    /// Connects to `peer` at the addresses the node knows for it (from Kademlia), waiting at
    /// most `timeout`. Answers at once if it is connected.
    pub async fn connect_peer(&self, peer: PeerId, timeout: Duration) -> Result<(), String> {
        let mut events = self.subscribe();
        let started = self
            .ask(|reply| Command::DialPeer(peer, reply))
            .await
            .map_err(|e| e.to_string())?;
        if started? {
            return Ok(());
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(Event::PeerConnected { peer: p, .. }) if p == peer => return Ok(()),
                    Ok(Event::DialFailed {
                        peer: Some(p),
                        reason,
                        ..
                    }) if p == peer => return Err(reason),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err("the node has stopped".to_string());
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(done) => done,
            Err(_) => Err(format!("not connected within {timeout:?}")),
        }
    }

    /// Fetches blob `id` wherever it is: from the connected peers first
    /// ([`NodeHandle::fetch_blob`]); if they cannot complete it, from its providers in the DHT
    /// ([`NodeHandle::find_blob_providers`]), dialed if need be (10 s each, at once). Fails
    /// with [`FetchError::Incomplete`] when nobody found can serve the rest.
    pub async fn fetch_blob_anywhere(&self, id: BlobId) -> Result<FetchOutcome, FetchError> {
        let connected = self
            .connected_peers()
            .await
            .map_err(|_| FetchError::Stopped)?;
        if !connected.is_empty() {
            match self.fetch_blob(id, connected.clone()).await {
                Err(FetchError::Incomplete { .. }) => {}
                done => return done,
            }
        }
        let providers = self
            .find_blob_providers(id)
            .await
            .map_err(|_| FetchError::Stopped)?;
        // Those connected already were asked above.
        let new: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| !connected.contains(p))
            .take(MAX_PROVIDERS_DIALED)
            .collect();
        let dials = new
            .iter()
            .map(|peer| self.connect_peer(*peer, PROVIDER_DIAL_TIMEOUT));
        let dialed = futures::future::join_all(dials).await;
        let reachable: Vec<PeerId> = new
            .into_iter()
            .zip(dialed)
            .filter_map(|(peer, dialed)| match dialed {
                Ok(()) => Some(peer),
                Err(e) => {
                    tracing::debug!(%peer, e, %id, "cannot reach a blob provider");
                    None
                }
            })
            .collect();
        // With no peer, this says what is missing.
        self.fetch_blob(id, reachable).await
    }
}
