//! Path indexes against a reference: after every step of random writes, deletes, late diffs
//! (which rewind and re-fold keys), writer removals and expulsions (which un-merge a writer's
//! diffs), reopens and rebuilds across three writers, every declared
//! index answers every query exactly like a scan of the merged store filtered by the same
//! conditions (`Condition::holds`, checked by hand on named cases below).

use std::collections::BTreeSet;

use multibee_multibee::{
    Condition, Error, IndexState, IndexTarget, Op, Query, QueryOrder, RangeOptions, Value,
};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

use crate::support::{Peer, cluster, deliver, run, written};

/// Results the reference found, over every case (to show the queries are not vacuous).
static FOUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

const KEYS: [&str; 5] = ["k1", "k2", "k3", "j1", "j2"];

#[derive(Clone, Debug)]
enum Step {
    Write {
        w: usize,
        k: usize,
        doc: Json,
    },
    Bytes {
        w: usize,
        k: usize,
    },
    Del {
        w: usize,
        k: usize,
    },
    Deliver {
        from: usize,
        to: usize,
        writer: usize,
        count: u64,
    },
    Tick {
        w: usize,
        ms: u64,
    },
    Reopen,
    Rebuild,
    /// Peer 0 expels writer 2 (every diff of it un-merged) or removes it (those after what
    /// peer 0 merged), or adds it back.
    Membership {
        expel: bool,
    },
}

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        (-3i64..4).prop_map(Json::from),
        Just(json!(2.5)),
        prop::sample::select(vec!["a", "ab", "b", "", "x"]).prop_map(Json::from),
    ]
}

fn doc() -> impl Strategy<Value = Json> {
    (
        prop::option::of(scalar()),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["x", "y", "xy"]),
            0..3,
        )),
        prop::option::of(scalar()),
        prop::option::of(scalar()),
    )
        .prop_map(|(n, tags, s, ox)| {
            let mut doc = serde_json::Map::new();
            if let Some(n) = n {
                doc.insert("n".into(), n);
            }
            if let Some(tags) = tags {
                doc.insert("tags".into(), json!(tags));
            }
            if let Some(s) = s {
                doc.insert("s".into(), s);
            }
            if let Some(x) = ox {
                doc.insert("o".into(), json!({ "x": x }));
            }
            Json::Object(doc)
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, 0..KEYS.len(), doc()).prop_map(|(w, k, doc)| Step::Write { w, k, doc }),
        1 => (0..3usize, 0..KEYS.len()).prop_map(|(w, k)| Step::Bytes { w, k }),
        2 => (0..3usize, 0..KEYS.len()).prop_map(|(w, k)| Step::Del { w, k }),
        4 => (0..3usize, 0..3usize, 0..3usize, 1..4u64)
            .prop_map(|(from, to, writer, count)| Step::Deliver { from, to, writer, count }),
        1 => (0..3usize, 0..3u64).prop_map(|(w, ms)| Step::Tick { w, ms }),
        1 => Just(Step::Reopen),
        1 => Just(Step::Rebuild),
        1 => any::<bool>().prop_map(|expel| Step::Membership { expel }),
    ]
}

/// The queries checked after every step.
fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    let values = [
        json!(null),
        json!(false),
        json!(0),
        json!(1),
        json!(2.5),
        json!("a"),
        json!("b"),
    ];
    for op in [Op::Eq, Op::Gt, Op::Gte, Op::Lt, Op::Lte] {
        for v in &values {
            out.push(Query::new(vec![Condition::new("/n", op, v.clone())]));
        }
    }
    out.push(Query::new(vec![Condition::new(
        "/s",
        Op::Prefix,
        json!("a"),
    )]));
    out.push(Query::new(vec![Condition::new(
        "/tags/[]",
        Op::Eq,
        json!("x"),
    )]));
    out.push(Query::new(vec![Condition::new(
        "/tags/[]",
        Op::Prefix,
        json!("x"),
    )]));
    out.push(Query::new(vec![
        Condition::new("/n", Op::Gte, json!(0)),
        Condition::new("/tags/[]", Op::Eq, json!("y")),
    ]));
    // Several conditions on one path narrow one range of rows.
    for (lo, hi) in [
        (json!(0), json!(2)),
        (json!(-1), json!("a")),
        (json!(1), json!(1)),
    ] {
        out.push(Query::new(vec![
            Condition::new("/n", Op::Gte, lo.clone()),
            Condition::new("/n", Op::Lt, hi.clone()),
        ]));
        out.push(Query::new(vec![
            Condition::new("/n", Op::Gt, lo),
            Condition::new("/n", Op::Lte, hi),
            Condition::new("/n", Op::Eq, json!(1)),
        ]));
    }
    out.push(Query::new(vec![
        Condition::new("/tags/[]", Op::Gte, json!("x")),
        Condition::new("/tags/[]", Op::Lt, json!("xy")),
    ]));
    // The every-path index of "k" answers for documents under "k" only.
    for v in [json!(1), json!("a"), json!(true)] {
        out.push(Query::new(vec![Condition::new("/o/x", Op::Eq, v.clone())]).key_prefix("k"));
        out.push(Query::new(vec![Condition::new("/s", Op::Gte, v)]).key_prefix("k"));
    }
    out
}

/// What a scan of `peer`'s merged store finds for `query`: keys in order.
fn reference(peer: &Peer, query: &Query) -> Vec<String> {
    let mut keys = Vec::new();
    for entry in peer.mb.range(&RangeOptions::all()).unwrap() {
        let (key, value) = entry.unwrap();
        let Value::Json(doc) = value else { continue };
        if key.starts_with(&query.key_prefix) && query.conditions.iter().all(|c| c.holds(&doc)) {
            keys.push(String::from_utf8(key).unwrap());
        }
    }
    keys
}

fn keys(results: &[multibee_multibee::Hit]) -> Vec<String> {
    results
        .iter()
        .map(|hit| String::from_utf8(hit.key.clone()).unwrap())
        .collect()
}

/// Every query, whole and in pages of 2, in both orders, against the reference.
fn check(peer: &Peer, step: usize) {
    for query in queries() {
        let expected = reference(peer, &query);
        FOUND.fetch_add(expected.len(), std::sync::atomic::Ordering::Relaxed);
        let whole = peer.mb.query(&query.clone().limit(1000)).unwrap();
        let mut got = keys(&whole.results);
        got.sort();
        assert_eq!(got, expected, "step {step}: {query:?} ({})", whole.used);
        assert!(whole.used.starts_with("index"), "{}", whole.used);
        let by_key = peer
            .mb
            .query(&query.clone().limit(1000).order(QueryOrder::Key))
            .unwrap();
        assert_eq!(
            keys(&by_key.results),
            expected,
            "step {step}: {query:?} by key"
        );
        for order in [QueryOrder::Index, QueryOrder::Key] {
            let mut paged = BTreeSet::new();
            let mut after = None;
            for _ in 0..20 {
                let page = peer
                    .mb
                    .query(&query.clone().limit(2).order(order).after(after))
                    .unwrap();
                assert!(page.results.len() <= 2);
                paged.extend(keys(&page.results));
                after = page.next;
                if after.is_none() {
                    break;
                }
            }
            let paged: Vec<String> = paged.into_iter().collect();
            assert_eq!(
                paged, expected,
                "step {step}: {query:?} in pages, {order:?}"
            );
        }
    }
}

fn targets() -> [IndexTarget; 4] {
    [
        IndexTarget::Path("/n".into()),
        IndexTarget::Path("/s".into()),
        IndexTarget::Path("/tags/[]".into()),
        IndexTarget::EveryPath(b"k".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn indexes_answer_like_a_scan_through_merges_rebases_and_reopens(
        before in prop::collection::vec(step(), 0..12),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        run(async {
            let mut peers = cluster(3).await;
            // Some history before the indexes exist: they are built from it.
            for s in &before {
                apply(&mut peers, s).await;
            }
            for target in targets() {
                let info = peers[0].mb.add_index(target).await.unwrap();
                let built = peers[0].mb.wait_index(info.id).await.unwrap();
                assert_eq!(built.state, IndexState::Ready);
            }
            check(&peers[0], 0);
            for (i, s) in steps.iter().enumerate() {
                apply(&mut peers, s).await;
                check(&peers[0], i + 1);
            }
        });
        eprintln!("results found by the reference so far: {}", FOUND.load(std::sync::atomic::Ordering::Relaxed));
    }
}

async fn apply(peers: &mut Vec<Peer>, step: &Step) {
    match step {
        Step::Write { w, k, doc } => written(peers[*w].mb.put(KEYS[*k], doc.clone()).await),
        Step::Bytes { w, k } => {
            let bytes = Value::Bytes(b"opaque".to_vec());
            written(peers[*w].mb.put(KEYS[*k], bytes).await)
        }
        Step::Del { w, k } => written(peers[*w].mb.del(KEYS[*k]).await),
        Step::Deliver {
            from,
            to,
            writer,
            count,
        } => {
            if from != to {
                let key = peers[*writer].key();
                deliver(&peers[*from], &peers[*to], key, *count).await;
            }
        }
        Step::Tick { w, ms } => peers[*w].clock.advance(*ms as i64),
        Step::Reopen => {
            let peer = peers.remove(0);
            peers.insert(0, peer.reopen().await);
        }
        Step::Membership { expel } => {
            let key = peers[2].key();
            let removed = peers[0]
                .mb
                .writers()
                .unwrap()
                .iter()
                .any(|w| w.key == key && w.state != multibee_multibee::WriterState::Active);
            match (removed, expel) {
                (true, _) => peers[0].mb.add_writer(key).await.unwrap(),
                (false, true) => peers[0].mb.expel_writer(key).await.unwrap(),
                (false, false) => peers[0].mb.remove_writer(key).await.unwrap(),
            }
        }
        Step::Rebuild => {
            let ids: Vec<u32> = peers[0]
                .mb
                .indexes()
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect();
            for id in ids {
                peers[0].mb.rebuild_index(id).await.unwrap();
                peers[0].mb.wait_index(id).await.unwrap();
            }
        }
    }
}

#[test]
fn barrel_paths_headquarters_belgium_and_exports_moscow() {
    run(async {
        let peers = cluster(1).await;
        let mb = &peers[0].mb;
        mb.put(
            "acme",
            json!({"headquarters": "belgium", "exports": [{"city": "Moscow"}, {"city": "Athens"}]}),
        )
        .await
        .unwrap();
        mb.put(
            "other",
            json!({"headquarters": "france", "exports": [{"city": "Athens"}]}),
        )
        .await
        .unwrap();
        let every = mb
            .add_index(IndexTarget::EveryPath(Vec::new()))
            .await
            .unwrap();
        mb.wait_index(every.id).await.unwrap();
        let hq = mb
            .query(&Query::new(vec![Condition::new(
                "/headquarters",
                Op::Eq,
                json!("belgium"),
            )]))
            .unwrap();
        assert_eq!(keys(&hq.results), ["acme"]);
        assert!(hq.used.starts_with("index"), "{}", hq.used);
        let moscow = mb
            .query(&Query::new(vec![Condition::new(
                "/exports/[]/city",
                Op::Eq,
                json!("Moscow"),
            )]))
            .unwrap();
        assert_eq!(keys(&moscow.results), ["acme"]);
        let athens = mb
            .query(&Query::new(vec![Condition::new(
                "/exports/[]/city",
                Op::Eq,
                json!("Athens"),
            )]))
            .unwrap();
        assert_eq!(keys(&athens.results), ["acme", "other"]);
    });
}

#[test]
fn a_query_without_an_index_fails_unless_a_scan_is_allowed_and_bad_queries_are_refused() {
    run(async {
        let peers = cluster(1).await;
        let mb = &peers[0].mb;
        mb.put("a", json!({"n": 1})).await.unwrap();
        let q = Query::new(vec![Condition::new("/n", Op::Eq, json!(1))]);
        assert!(matches!(mb.query(&q), Err(Error::NoIndex(_))));
        let scanned = mb.query(&q.clone().allow_scan(true)).unwrap();
        assert_eq!(
            (keys(&scanned.results), scanned.used.as_str()),
            (vec!["a".to_string()], "scan")
        );
        for bad in [
            Query::new(vec![]),
            Query::new(vec![Condition::new("n", Op::Eq, json!(1))]),
            Query::new(vec![Condition::new("/n", Op::Prefix, json!(1))]),
            q.clone().allow_scan(true).after(Some("zz".into())),
        ] {
            assert!(
                matches!(mb.query(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(mb.add_index(IndexTarget::Path("n".into())).await.is_err());
    });
}

#[test]
fn a_building_index_says_so_instead_of_answering_partially() {
    run(async {
        let peers = cluster(1).await;
        let mb = &peers[0].mb;
        let ops = (0..2000)
            .map(|i| {
                multibee_multibee::BatchOp::Put(
                    format!("d{i:05}").into_bytes(),
                    json!({"n": i % 7}).into(),
                )
            })
            .collect();
        mb.batch(ops).await.unwrap();
        let info = mb.add_index(IndexTarget::Path("/n".into())).await.unwrap();
        let q = Query::new(vec![Condition::new("/n", Op::Eq, json!(3))]).limit(10_000);
        // Before the first batch is built (or while it builds), the answer is an error.
        match mb.query(&q) {
            Err(Error::IndexBuilding { .. }) => {}
            Ok(answer) => assert_eq!(
                answer.results.len(),
                (0..2000).filter(|i| i % 7 == 3).count()
            ),
            Err(e) => panic!("{e}"),
        }
        mb.wait_index(info.id).await.unwrap();
        let answer = mb.query(&q).unwrap();
        assert_eq!(
            answer.results.len(),
            (0..2000).filter(|i| i % 7 == 3).count()
        );
        // An index survives a reopen, built.
        assert_eq!(mb.indexes().unwrap()[0].state, IndexState::Ready);
    });
}

#[test]
fn a_build_stopped_by_a_close_resumes_on_open_and_answers_like_a_scan() {
    run(async {
        let mut peers = cluster(1).await;
        let ops = (0..3000)
            .map(|i| {
                multibee_multibee::BatchOp::Put(
                    format!("d{i:05}").into_bytes(),
                    json!({"n": i % 11}).into(),
                )
            })
            .collect();
        peers[0].mb.batch(ops).await.unwrap();
        let info = peers[0]
            .mb
            .add_index(IndexTarget::Path("/n".into()))
            .await
            .unwrap();
        // Closing stops the background build wherever it is (between two transactions, as
        // a crash would); writes meanwhile land on both sides of its progress.
        peers[0].mb.put("d00001", json!({"n": 5})).await.unwrap();
        peers[0].mb.put("d02999", json!({"n": 5})).await.unwrap();
        let peer = peers.remove(0);
        let peer = peer.reopen().await;
        let state = peer.mb.indexes().unwrap()[0].state.clone();
        eprintln!("after the reopen: {state:?}");
        peer.mb.wait_index(info.id).await.unwrap();
        let q = Query::new(vec![Condition::new("/n", Op::Eq, json!(5))]).limit(10_000);
        let got = keys(&peer.mb.query(&q).unwrap().results);
        assert_eq!(got.len(), reference(&peer, &q).len());
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, reference(&peer, &q));
        assert!(got.contains(&"d00001".to_string()) && got.contains(&"d02999".to_string()));
    });
}

#[test]
fn an_every_path_index_answers_only_what_its_leaves_can_and_cursors_stay_with_their_index() {
    run(async {
        let peers = cluster(1).await;
        let mb = &peers[0].mb;
        mb.put("a", json!({"tags": ["x"], "o": {"x": 1}, "e": [], "n": 1}))
            .await
            .unwrap();
        mb.put("b", json!({"tags": "zzzz", "n": 2})).await.unwrap();
        let every = mb
            .add_index(IndexTarget::EveryPath(Vec::new()))
            .await
            .unwrap();
        mb.wait_index(every.id).await.unwrap();
        let ask = |conditions: Vec<Condition>| {
            let q = Query::new(conditions).allow_scan(true);
            let answer = mb.query(&q).unwrap();
            assert_eq!(keys(&answer.results), reference(&peers[0], &q), "{q:?}");
            (keys(&answer.results), answer.used)
        };
        // Arrays and objects sort above strings: the leaves cannot answer these.
        let (found, used) = ask(vec![Condition::new("/tags", Op::Gt, json!("zzz"))]);
        assert_eq!(
            (found, used.as_str()),
            (vec!["a".to_string(), "b".to_string()], "scan")
        );
        let (found, used) = ask(vec![Condition::new("/o", Op::Eq, json!({"x": 1}))]);
        assert_eq!((found, used.as_str()), (vec!["a".to_string()], "scan"));
        // Leaves, empty containers and anything below a scalar can.
        for (c, expected) in [
            (Condition::new("/e", Op::Eq, json!([])), vec!["a"]),
            (Condition::new("/tags/[]", Op::Eq, json!("x")), vec!["a"]),
            (Condition::new("/tags", Op::Lt, json!("zzzzz")), vec!["b"]),
            (Condition::new("/o/x", Op::Lte, json!(1)), vec!["a"]),
        ] {
            let (found, used) = ask(vec![c]);
            assert_eq!(found, expected);
            assert!(used.starts_with("index"), "{used}");
        }
        // A cursor of another index is refused, not misread.
        let n = mb.add_index(IndexTarget::Path("/n".into())).await.unwrap();
        mb.wait_index(n.id).await.unwrap();
        let first = mb
            .query(&Query::new(vec![Condition::new("/o/x", Op::Lte, json!(5))]).limit(1))
            .unwrap();
        let q = Query::new(vec![Condition::new("/n", Op::Gte, json!(0))]).after(first.next);
        assert!(matches!(mb.query(&q), Err(Error::InvalidArgument(_))));
    });
}
