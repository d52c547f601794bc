//! Joining with a ticket: peers that never run `add_writer` join through a member's ticket,
//! write, and converge; a later peer joins through a non-founding member while the founder is
//! offline; a used or forged secret is refused.

use multibee::{JoinError, MultiBee, Options, Served, SyncMode, Ticket, join};
use serde_json::json;
use tempfile::TempDir;

use crate::common::{config, json, wait_change, waiting};

struct Joined {
    _dir: TempDir,
    mb: MultiBee,
    served: Served,
}

fn options() -> Options {
    Options::default().sync(SyncMode::Relaxed)
}

async fn start() -> Joined {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open_with(dir.path(), options()).await.unwrap();
    let served = multibee::serve(&mb, config()).await.unwrap();
    Joined {
        _dir: dir,
        mb,
        served,
    }
}

async fn join_with(ticket: &Ticket) -> multibee::Result<Joined> {
    let dir = tempfile::tempdir().unwrap();
    let joining = join(dir.path(), ticket, options(), config());
    let served = waiting("a join with a ticket to end", joining).await?;
    Ok(Joined {
        mb: served.multibee().clone(),
        _dir: dir,
        served,
    })
}

/// Waits until every peer shows `value` at `key`.
async fn everywhere(peers: &[&Joined], key: &str, value: serde_json::Value) {
    for p in peers {
        wait_change(&p.mb, key, &json(value.clone())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_join_with_tickets_write_and_converge_without_adding_writers() {
    let a = start().await;
    let b = join_with(&a.served.invite().await.unwrap()).await.unwrap();
    // The ticket travels as text.
    let text = a.served.invite().await.unwrap().to_string();
    let c = join_with(&text.parse().unwrap()).await.unwrap();
    assert_eq!(b.mb.database().unwrap(), a.mb.diff_key());
    assert_eq!(c.mb.database().unwrap(), a.mb.diff_key());

    a.mb.put("from-a", json(json!(1))).await.unwrap();
    b.mb.put("from-b", json(json!(2))).await.unwrap();
    c.mb.put("from-c", json(json!(3))).await.unwrap();
    for (key, value) in [("from-a", 1), ("from-b", 2), ("from-c", 3)] {
        everywhere(&[&a, &b, &c], key, json!(value)).await;
    }

    // A fourth peer joins through C's ticket while A, the founder, is offline: it learns of
    // the members from what C holds, and its writes count on B and C (B reaches C directly:
    // with A gone, it would otherwise have no one to talk to).
    let c_addr = c.served.listen_addrs().await.unwrap()[0].clone();
    b.served.dial(c_addr).await.unwrap();
    let ticket = c.served.invite().await.unwrap();
    waiting("A to shut down", async {
        a.served.shutdown().await;
        a.mb.close().await;
    })
    .await;
    let d = join_with(&ticket).await.unwrap();
    everywhere(&[&d], "from-a", json!(1)).await;
    everywhere(&[&d], "from-b", json!(2)).await;
    everywhere(&[&d], "from-c", json!(3)).await;
    d.mb.put("from-d", json(json!(4))).await.unwrap();
    everywhere(&[&b, &c, &d], "from-d", json!(4)).await;
    // Every write is everywhere: the merged states are equal.
    let hash = b.mb.state_hash().unwrap();
    assert_eq!(c.mb.state_hash().unwrap(), hash);
    assert_eq!(d.mb.state_hash().unwrap(), hash);

    // The same ticket twice: refused, and nothing changes on the inviter.
    let err = join_with(&ticket)
        .await
        .err()
        .expect("a used ticket is refused");
    assert!(
        matches!(&err, multibee::Error::Join(JoinError::Refused(r)) if r.contains("already used")),
        "{err}"
    );
    // A forged secret: refused alike.
    let mut forged = b.served.invite().await.unwrap();
    forged.secret[0] ^= 1;
    let err = join_with(&forged)
        .await
        .err()
        .expect("a forged secret is refused");
    assert!(
        matches!(&err, multibee::Error::Join(JoinError::Refused(_))),
        "{err}"
    );
    for p in [d, c, b] {
        waiting("a peer to shut down", p.served.shutdown()).await;
    }
}
