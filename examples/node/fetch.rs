//! Fetching the blobs that merged documents reference, by policy: `all` (the default), `none`,
//! or only documents under given key prefixes. A background task reads the changes stream
//! (and, once at start, the documents already held) and fetches each referenced blob the
//! node lacks from the peers connected at that moment, one after another, in change order.
//! A blob no connected peer can serve is left for a read on demand or a later reference. The
//! media type the reference gives (`"type"`) is kept with the fetched blob.

use std::time::Duration;

use multibee::MultiBee;
use multibee::blobs::Blobs;
use multibee::db::{ChangesOptions, RangeOptions, Value};
use multibee::net::NodeHandle;

/// Which referenced blobs a node fetches by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobFetch {
    /// Every blob any document references.
    All,
    /// None: only on demand.
    None,
    /// Those referenced by documents whose keys start with one of these prefixes.
    Prefixes(Vec<String>),
}

impl BlobFetch {
    /// The policy of `values`: `all`, `none`, or key prefixes (any other values).
    pub fn parse(values: &[String]) -> Result<BlobFetch, String> {
        match values {
            [] => Ok(BlobFetch::All),
            [one] if one == "all" => Ok(BlobFetch::All),
            [one] if one == "none" => Ok(BlobFetch::None),
            many if many.iter().any(|v| v == "all" || v == "none") => {
                Err("blob_fetch is \"all\", \"none\", or key prefixes (not mixed with them)".into())
            }
            prefixes => Ok(BlobFetch::Prefixes(prefixes.to_vec())),
        }
    }

    fn covers(&self, key: &[u8]) -> bool {
        match self {
            BlobFetch::All => true,
            BlobFetch::None => false,
            BlobFetch::Prefixes(prefixes) => prefixes.iter().any(|p| key.starts_with(p.as_bytes())),
        }
    }
}

/// How long one fetch may take before the task moves on.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Fetches, by `policy`, the blobs referenced by the documents held now and by every change
/// from now on. Runs until the changes stream ends.
pub async fn fetch_referenced(mb: MultiBee, node: NodeHandle, blobs: Blobs, policy: BlobFetch) {
    if policy == BlobFetch::None {
        return;
    }
    let since = mb.version().unwrap_or(0);
    let Ok(mut changes) = mb.changes(ChangesOptions {
        since,
        live: true,
        ..ChangesOptions::default()
    }) else {
        return;
    };
    // The documents already held (a change made meanwhile is seen by the stream too).
    if let Ok(entries) = mb.range(&RangeOptions::all()) {
        let held: Vec<(Vec<u8>, Value)> = entries.filter_map(Result::ok).collect();
        for (key, value) in held {
            fetch_refs(&node, &blobs, &policy, &key, &value).await;
        }
    }
    while let Some(change) = changes.next().await {
        let Ok(change) = change else { continue };
        if let Some(value) = &change.value {
            fetch_refs(&node, &blobs, &policy, &change.key, value).await;
        }
    }
}

/// Fetches the blobs `value` (the document at `key`) references that the node lacks.
async fn fetch_refs(
    node: &NodeHandle,
    blobs: &Blobs,
    policy: &BlobFetch,
    key: &[u8],
    value: &Value,
) {
    let Value::Json(doc) = value else { return };
    if !policy.covers(key) {
        return;
    }
    for blob in multibee::attachments::blob_refs(doc) {
        if blobs.has(blob.id).await.unwrap_or(false) {
            continue;
        }
        let peers = match node.connected_peers().await {
            Ok(peers) if !peers.is_empty() => peers,
            _ => {
                tracing::debug!(id = %blob.id, "no peer to fetch a referenced blob from");
                continue;
            }
        };
        match tokio::time::timeout(FETCH_TIMEOUT, node.fetch_blob(blob.id, peers)).await {
            Ok(Ok(outcome)) => {
                tracing::debug!(id = %blob.id, bytes = outcome.bytes_fetched, "fetched a referenced blob");
                // The document says what the blob is: kept for reads over HTTP.
                if let Some(t) = &blob.media_type
                    && let Err(e) = blobs.set_media_type(blob.id, Some(t)).await
                {
                    tracing::debug!(id = %blob.id, "the reference's media type is not kept: {e}");
                }
            }
            Ok(Err(e)) => tracing::warn!(id = %blob.id, "cannot fetch a referenced blob: {e}"),
            Err(_) => tracing::warn!(id = %blob.id, "fetching a referenced blob timed out"),
        }
    }
}
