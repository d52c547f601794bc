//! Folders written by earlier releases open with this one: each fixture under
//! `tests/fixtures/` is a peer's folder as an earlier release left it, next to `expected.txt`,
//! that release's description of everything a user can read from it. Opening a copy converts
//! it (the test compares what this release reads with the description), and the converted
//! folder goes on being written and reopened.
//!
//! A fixture is made by the release whose format it records, with
//! `MULTIBEE_WRITE_FIXTURE=DIR cargo test -p multibee-multibee --test multibee -- --ignored write_fixture`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use multibee_bee::RangeOptions;
use multibee_multibee::{ChangesOptions, MultiBee, Value};
use serde_json::json;

use crate::support::{Peer, cluster, deliver, run, sync_all};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn show(value: &Value) -> String {
    match value {
        Value::Json(j) => format!("json {j}"),
        Value::Bytes(b) => format!("bytes {}", hex(b)),
    }
}

/// Everything a user can read from `mb`, as text: membership, every key's value, revision,
/// history and conflicts, the changes stream, and the store at every version.
async fn describe(mb: &MultiBee) -> String {
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "database {}", mb.database().unwrap()).unwrap();
    writeln!(w, "diff feed {}", mb.diff_key()).unwrap();
    writeln!(w, "version {}", mb.version().unwrap()).unwrap();
    writeln!(w, "state hash {}", hex(&mb.state_hash().unwrap())).unwrap();
    for info in mb.writers().unwrap() {
        writeln!(
            w,
            "writer {} {:?} merged {} length {} cut {:?} removed_by {:?}",
            info.key, info.state, info.merged, info.length, info.cut, info.removed_by
        )
        .unwrap();
    }
    let keys: Vec<Vec<u8>> = mb
        .range(&RangeOptions::all())
        .unwrap()
        .map(|e| e.unwrap().0)
        .collect();
    for key in &keys {
        let (rev, value) = mb.get_rev(key).unwrap().unwrap();
        writeln!(w, "key {} rev {rev} {}", hex(key), show(&value)).unwrap();
        for h in mb.history(key).unwrap() {
            let change = serde_json::to_string(&h.change).unwrap();
            writeln!(w, "  history {} {} {} {change}", h.writer, h.ts.0, h.seq).unwrap();
        }
        for c in mb.conflicts(key).unwrap() {
            let change = serde_json::to_string(&c.change).unwrap();
            writeln!(w, "  conflict {} {} {change}", c.writer, c.ts.0).unwrap();
        }
    }
    let mut changes = mb.changes(ChangesOptions::default()).unwrap();
    while let Some(change) = changes.next().await {
        let change = change.unwrap();
        let value = change.value.as_ref().map(show);
        writeln!(w, "change {} {} {value:?}", change.seq, hex(&change.key)).unwrap();
    }
    let bee = mb.store_bee();
    for version in 1..=bee.version().unwrap() {
        let at = bee.checkout(version).unwrap();
        let rows: Vec<String> = at
            .range(&RangeOptions::all())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                format!("{}@{}={}", hex(&e.key), e.seq, hex(&e.value))
            })
            .collect();
        writeln!(w, "at {version}: {}", rows.join(" ")).unwrap();
    }
    out
}

/// Writes the fixture of this release's format into `$MULTIBEE_WRITE_FIXTURE`: two writers,
/// objects edited field by field and concurrently (conflicts), a key past several checkpoints,
/// a late diff that rebases, bytes values, deletes, and a third writer removed at a cut.
#[test]
#[ignore = "writes a fixture; run by hand when a format changes"]
fn write_fixture() {
    let Some(out) = std::env::var_os("MULTIBEE_WRITE_FIXTURE") else {
        panic!("set MULTIBEE_WRITE_FIXTURE to the folder to write");
    };
    let out = PathBuf::from(out);
    run(async {
        let peers = cluster(3).await;
        let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
        a.mb.put("doc", json!({"title": "one", "tags": ["x"], "n": 0}))
            .await
            .unwrap();
        b.mb.put("bin", Value::Bytes(vec![0, 1, 2, 255]))
            .await
            .unwrap();
        sync_all(&peers).await;
        // Concurrent edits: different fields of one object, and the same field.
        a.clock.advance(10);
        b.clock.advance(10);
        a.mb.patch("doc", json!({"title": "two"})).await.unwrap();
        b.mb.patch("doc", json!({"n": 1, "title": "three"}))
            .await
            .unwrap();
        // A key with many diffs: several checkpoints (interval 4 in the test options).
        for i in 0..30 {
            a.clock.advance(1);
            a.mb.put("counter", json!({"i": i})).await.unwrap();
        }
        sync_all(&peers).await;
        // A late diff: B writes with an older clock, merged after A's newer ones.
        for i in 0..5 {
            a.clock.advance(100);
            a.mb.put("late", json!({"a": i})).await.unwrap();
        }
        b.mb.put("late", json!({"b": "old"})).await.unwrap();
        sync_all(&peers).await;
        // Deletes, and a key deleted then written again.
        a.mb.del("bin").await.unwrap();
        a.mb.put("gone", json!(1)).await.unwrap();
        a.mb.del("gone").await.unwrap();
        a.mb.put("again", json!("first")).await.unwrap();
        a.mb.del("again").await.unwrap();
        a.clock.advance(1);
        a.mb.put("again", json!("second")).await.unwrap();
        // C writes, then is removed: what it wrote after the cut does not count.
        c.mb.put("from-c", json!({"c": 1})).await.unwrap();
        sync_all(&peers).await;
        a.mb.remove_writer(c.key()).await.unwrap();
        c.clock.advance(1_000);
        c.mb.put("from-c", json!({"c": 2})).await.unwrap();
        c.mb.put("after-cut", json!(true)).await.unwrap();
        deliver(c, a, c.key(), u64::MAX).await;
        deliver(a, b, a.key(), u64::MAX).await;
        deliver(c, b, c.key(), u64::MAX).await;
        a.mb.merge().await.unwrap();
        b.mb.merge().await.unwrap();
        assert_eq!(a.mb.state_hash().unwrap(), b.mb.state_hash().unwrap());

        let expected = describe(&a.mb).await;
        let Peer { mb, dir, .. } = peers.into_iter().next().unwrap();
        mb.close().await;
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(dir.path().join("multibee.redb"), out.join("multibee.redb")).unwrap();
        std::fs::write(out.join("expected.txt"), expected).unwrap();
    });
}

/// Opens a copy of fixture `name` with the test options, compares it with the release's
/// description, then writes, merges and reopens it.
fn upgrade(name: &str) {
    let from = fixture(name);
    let expected = std::fs::read_to_string(from.join("expected.txt")).unwrap();
    run(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(from.join("multibee.redb"), dir.path().join("multibee.redb")).unwrap();
        let clock = multibee_multibee::ManualClock::new(10_000_000);
        let open = || MultiBee::open_with(dir.path(), crate::support::options(&clock));
        let mb = open().await.unwrap();
        let read = describe(&mb).await;
        pretty_assertions_lite(&expected, &read);

        // The converted folder takes writes and merges, and reopens as it was left.
        mb.patch("doc", json!({"after": "upgrade"})).await.unwrap();
        mb.put("new", json!([1, 2])).await.unwrap();
        let before = describe(&mb).await;
        mb.close().await;
        let mb = open().await.unwrap();
        pretty_assertions_lite(&before, &describe(&mb).await);
        let doc = mb.get("doc").unwrap().unwrap();
        assert_eq!(
            doc,
            Value::Json(json!({"title": "three", "tags": ["x"], "n": 1, "after": "upgrade"}))
        );
        mb.close().await;
    });
}

/// Asserts two descriptions are equal, printing the first line that differs.
fn pretty_assertions_lite(expected: &str, got: &str) {
    if expected == got {
        return;
    }
    let line = expected
        .lines()
        .zip(got.lines())
        .position(|(e, g)| e != g)
        .unwrap_or_else(|| expected.lines().count().min(got.lines().count()));
    panic!(
        "line {} differs:\nexpected: {:?}\n     got: {:?}\n({} lines expected, {} read)",
        line + 1,
        expected.lines().nth(line),
        got.lines().nth(line),
        expected.lines().count(),
        got.lines().count()
    );
}

/// The names of the tables of a closed folder's database.
fn tables(dir: &Path) -> Vec<String> {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(dir.join("multibee.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let mut names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

/// A copy of fixture `name` in a new temporary folder.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(name).join("multibee.redb"),
        dir.path().join("multibee.redb"),
    )
    .unwrap();
    dir
}

#[test]
fn a_folder_of_format_1_opens_converted_and_reads_as_it_did() {
    upgrade("format-1");
}

#[test]
fn the_upgrade_replaces_the_tables_that_copied_values() {
    let dir = copy_of("format-1");
    let before = tables(dir.path());
    assert!(before.contains(&"mb-diffs-1".to_string()), "{before:?}");
    assert!(before.contains(&"bee-versions-1".to_string()), "{before:?}");
    run(async {
        let mb = MultiBee::open(dir.path()).await.unwrap();
        mb.close().await;
    });
    let after = tables(dir.path());
    for gone in ["mb-diffs-1", "bee-versions-1"] {
        assert!(
            !after.contains(&gone.to_string()),
            "{gone} is left: {after:?}"
        );
    }
    for new in ["mb-diffs-2", "bee-versions-2"] {
        assert!(
            after.contains(&new.to_string()),
            "{new} is missing: {after:?}"
        );
    }
}

#[test]
fn a_diff_row_that_does_not_match_its_entry_stops_the_upgrade_and_changes_nothing() {
    let dir = copy_of("format-1");
    let db_file = dir.path().join("multibee.redb");
    {
        // Point one row at the entry after it.
        use redb::ReadableTable;
        let db = redb::Database::open(&db_file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def = redb::TableDefinition::<(&[u8], u64, [u8; 32]), &[u8]>::new("mb-diffs-1");
            let mut table = txn.open_table(def).unwrap();
            let (key, value) = {
                let (k, v) = table.first().unwrap().unwrap();
                let (key, ts, w) = k.value();
                let mut value = v.value().to_vec();
                value[0] = value[0].wrapping_add(1);
                ((key.to_vec(), ts, w), value)
            };
            table
                .insert((key.0.as_slice(), key.1, key.2), value.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    run(async {
        let err = MultiBee::open(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("does not match entry"), "{err}");
    });
    let after = tables(dir.path());
    assert!(after.contains(&"mb-diffs-1".to_string()), "{after:?}");
    assert!(!after.contains(&"mb-diffs-2".to_string()), "{after:?}");
}

#[test]
fn a_folder_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mb = MultiBee::open(dir.path()).await.unwrap();
        mb.put("k", json!(1)).await.unwrap();
        mb.close().await;
    });
    {
        let db = redb::Database::open(dir.path().join("multibee.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def = redb::TableDefinition::<&str, &[u8]>::new("mb-meta-1");
            let mut meta = txn.open_table(def).unwrap();
            meta.insert("format", 3u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    run(async {
        let err = MultiBee::open(dir.path()).await.unwrap_err().to_string();
        assert!(
            err.contains("format 3, written by a newer release"),
            "{err}"
        );
    });
}

/// The rows of the derived tables of a closed folder's database, as text: the bee index
/// (`bee-latest-1`, `bee-versions-2`, `bees-1`) and `mb-diffs-2`.
fn derived_rows(dir: &Path) -> (Vec<String>, Vec<String>) {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let db = redb::Database::open(dir.join("multibee.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let mut bee = Vec::new();
    let latest = TableDefinition::<(u64, &[u8]), &[u8]>::new("bee-latest-1");
    for row in txn.open_table(latest).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        let (id, key) = k.value();
        bee.push(format!("latest {id} {} {}", hex(key), hex(v.value())));
    }
    let versions = TableDefinition::<(u64, &[u8], u64), u8>::new("bee-versions-2");
    for row in txn.open_table(versions).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        let (id, key, seq) = k.value();
        bee.push(format!("version {id} {} {seq} {}", hex(key), v.value()));
    }
    let bees = TableDefinition::<[u8; 32], [u8; 16]>::new("bees-1");
    for row in txn.open_table(bees).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        bee.push(format!("bee {} {}", hex(&k.value()), hex(&v.value())));
    }
    let mut diffs = Vec::new();
    let table = TableDefinition::<(&[u8], u64, [u8; 32]), u64>::new("mb-diffs-2");
    for row in txn.open_table(table).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        let (key, ts, writer) = k.value();
        diffs.push(format!("{} {ts} {} {}", hex(key), hex(&writer), v.value()));
    }
    (bee, diffs)
}

/// A peer's folder copied while it is open, between two commits: what a crash leaves (redb
/// finds it was not closed and recovers it when it opens).
fn crashed_copy(peer: &Peer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        peer.dir.path().join("multibee.redb"),
        dir.path().join("multibee.redb"),
    )
    .unwrap();
    dir
}

#[test]
fn a_crashed_folder_reopens_with_derived_rows_that_rebuild_identically() {
    run(async {
        // Durable commits: a crash keeps every commit made (relaxed ones may roll back).
        let durable = |o: multibee_multibee::Options| o.sync(multibee_feed::SyncMode::Durable);
        let first = Peer::with(1_000_000, durable).await;
        let database = first.key();
        let mut peers = vec![first];
        for _ in 1..3 {
            peers.push(Peer::with(1_000_000, |o| durable(o).database(database)).await);
        }
        for i in 1..3 {
            let key = peers[i].key();
            peers[0].mb.add_writer(key).await.unwrap();
            deliver(&peers[0], &peers[i], database, u64::MAX).await;
        }
        // Interleaved writers, late diffs (rebases), deletes, and partial deliveries.
        for round in 0..12u64 {
            for (i, p) in peers.iter().enumerate() {
                p.clock.advance(if (round + i as u64).is_multiple_of(3) {
                    -5
                } else {
                    7
                });
                let key = format!("k{}", (round * 7 + i as u64 * 3) % 9);
                if round % 5 == 4 {
                    p.mb.del(&key).await.unwrap();
                } else {
                    p.mb.put(&key, json!({"w": i, "round": round}))
                        .await
                        .unwrap();
                }
            }
            deliver(
                &peers[round as usize % 3],
                &peers[(round as usize + 1) % 3],
                peers[round as usize % 3].key(),
                2,
            )
            .await;
        }
        sync_all(&peers).await;
        let copy = crashed_copy(&peers[1]);

        // Reopened after the crash: the bee index rebuilt from the feed is the same, row for row.
        let clock = multibee_multibee::ManualClock::new(10_000_000);
        let mb = MultiBee::open_with(copy.path(), crate::support::options(&clock))
            .await
            .unwrap();
        let state = mb.state_hash().unwrap();
        assert_eq!(state, peers[0].mb.state_hash().unwrap());
        mb.close().await;
        let (bee_before, diffs_before) = derived_rows(copy.path());
        let mb = MultiBee::open_with(copy.path(), crate::support::options(&clock))
            .await
            .unwrap();
        mb.store_bee().rebuild().await.unwrap();
        mb.close().await;
        let (bee_after, _) = derived_rows(copy.path());
        assert_eq!(bee_before, bee_after);

        // A fresh peer that merges every diff feed from scratch names the same diffs.
        let fresh = Peer::with(1_000_000, |o| durable(o).database(database)).await;
        for p in &peers {
            deliver(p, &fresh, p.key(), u64::MAX).await;
        }
        assert_eq!(fresh.mb.state_hash().unwrap(), state);
        let fresh_dir = crashed_copy(&fresh);
        let (_, fresh_diffs) = derived_rows(fresh_dir.path());
        assert_eq!(diffs_before, fresh_diffs);
        assert!(diffs_before.len() >= 30, "{} diff rows", diffs_before.len());
    });
}
