//! A replica bee fed through feed ingest answers exactly like the writer's bee.

use multibee_bee::{Bee, HistoryOptions, RangeOptions};
use multibee_feed::Store;

use crate::{pairs, run};

#[test]
fn a_replica_answers_like_the_writer_at_every_version() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        let wstore = Store::open(wd.path()).unwrap();
        let writer = Bee::open(wstore.create_feed().await.unwrap())
            .await
            .unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..300 {
            let key = format!("k{}", rng.u8(0..40));
            if rng.u8(0..4) == 0 {
                writer.del(&key).await.unwrap();
            } else {
                writer.put(&key, rng.u32(..).to_string()).await.unwrap();
            }
        }
        // Deletes of absent keys appended nothing, so the feed holds fewer than 300 entries.
        let n = writer.version().unwrap();
        assert!((200..300).contains(&n), "{n}");
        let rstore = Store::open(rd.path()).unwrap();
        let replica = Bee::open(rstore.replica(writer.feed().key()).await.unwrap())
            .await
            .unwrap();
        assert!(
            replica.put("x", "y").await.is_err(),
            "a replica is read-only"
        );
        let mut at = 0;
        while at < n {
            let end = (at + 37).min(n);
            replica
                .ingest(writer.feed().proof(at..end).unwrap())
                .await
                .unwrap();
            at = end;
        }
        assert_eq!(replica.version().unwrap(), n);
        for version in (0..=n).step_by(23).chain([n]) {
            let (w, r) = (
                writer.checkout(version).unwrap(),
                replica.checkout(version).unwrap(),
            );
            for opts in [
                RangeOptions::all(),
                RangeOptions::all().gte("k2").lt("k3").reverse(),
                RangeOptions::all().limit(3),
            ] {
                assert_eq!(
                    pairs(w.range(&opts).unwrap()),
                    pairs(r.range(&opts).unwrap())
                );
            }
        }
        let h = |b: &Bee| {
            b.history(&HistoryOptions::default())
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        };
        assert_eq!(h(&writer), h(&replica));
    });
}

#[test]
fn a_lost_index_is_rebuilt_on_open_from_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, before) = run(async {
        let store = Store::open(dir.path()).unwrap();
        let bee = Bee::open(store.create_feed().await.unwrap()).await.unwrap();
        for i in 0..100u32 {
            bee.put(format!("k{}", i % 30), i.to_string())
                .await
                .unwrap();
        }
        (
            bee.feed().key(),
            pairs(
                bee.checkout(60)
                    .unwrap()
                    .range(&RangeOptions::all())
                    .unwrap(),
            ),
        )
    });
    // Drop the index tables and the record of what they reflect, as a crash or a bug might.
    {
        let db = redb::Database::create(dir.path().join(multibee_feed::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        for name in ["bees-1", "bee-latest-1", "bee-versions-1"] {
            txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name))
                .ok();
        }
        txn.commit().unwrap();
    }
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let bee = Bee::open(store.feed(&key).unwrap()).await.unwrap();
        assert_eq!(bee.version().unwrap(), 100);
        assert_eq!(
            pairs(
                bee.checkout(60)
                    .unwrap()
                    .range(&RangeOptions::all())
                    .unwrap()
            ),
            before
        );
    });
}
