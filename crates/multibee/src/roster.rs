//! The writers table kept in step with the membership: recording membership operations (local
//! or replicated), evaluating them ([`crate::membership::evaluate`]) and applying the outcome to
//! each writer's row and to the merged store, inside the transaction that brought the change.

use std::collections::{BTreeMap, HashSet};

use multibee_feed::{FeedKey, WriteTxn};
use redb::{ReadableTable, WriteTransaction};

use crate::INVITE_TTL_MS;
use crate::error::{Error, Result};
use crate::fold::{corrupt, storage};
use crate::hlc::Hlc;
use crate::membership::{self, MemberOp, MemberRecord, Stamped, Status};
use crate::options::Event;
use crate::tables::{self, INVITES, MEMBERS, META, WriterRow, WriterState, split_diff_row};
use crate::txn::{Ctx, set_writer, writer_rows};

type FeedResult<T> = multibee_feed::Result<T>;

/// What a writer's row should say: its state, its limit and who removed it.
type Wanted = (WriterState, u64, Option<[u8; 32]>);

/// The identity of the database a peer belongs to (its first writer's diff feed key).
pub(crate) fn database(raw: &WriteTransaction) -> FeedResult<[u8; 32]> {
    let meta = raw.open_table(META).map_err(storage)?;
    let row = meta.get(tables::DATABASE).map_err(storage)?;
    let row = row.ok_or_else(|| corrupt("the database identity is missing"))?;
    row.value()
        .try_into()
        .map_err(|_| corrupt("the database identity in mb-meta-1"))
}

/// Every membership operation held.
fn member_ops(raw: &WriteTransaction) -> FeedResult<Vec<Stamped>> {
    let table = raw.open_table(MEMBERS).map_err(storage)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let (ts, author) = k.value();
        let (seq, bytes) = split_diff_row(v.value()).ok_or_else(|| corrupt("a member row"))?;
        let record = MemberRecord::decode(bytes).map_err(corrupt)?;
        out.push(Stamped {
            ts,
            author,
            seq,
            op: record.op,
        });
    }
    Ok(out)
}

impl Ctx<'_> {
    /// The membership as the operations held so far give it.
    pub(crate) fn membership(&self, raw: &WriteTransaction) -> FeedResult<membership::Outcome> {
        Ok(membership::evaluate(database(raw)?, &member_ops(raw)?))
    }

    /// Records membership operations read from writers' feeds (`(author, seq, record)`) and
    /// applies the membership they give.
    pub(crate) fn record_members(
        &self,
        txn: &mut WriteTxn<'_>,
        ops: &[([u8; 32], u64, MemberRecord)],
        events: &mut Vec<Event>,
    ) -> FeedResult<()> {
        let mut fresh = HashSet::new();
        {
            let mut table = txn.raw().open_table(MEMBERS).map_err(storage)?;
            for (author, seq, record) in ops {
                let id = (record.ts.0, *author);
                let row = tables::diff_row(*seq, &record.encode());
                let held = table.get(id).map_err(storage)?.map(|v| v.value().to_vec());
                match held {
                    None => {
                        table.insert(id, row.as_slice()).map_err(storage)?;
                        fresh.insert(id);
                    }
                    Some(held) if held == row => {}
                    Some(_) => events.push(Event::InvalidDiff {
                        writer: FeedKey(*author),
                        seq: *seq,
                        reason: format!(
                            "the writer already wrote another membership operation at {}",
                            record.ts
                        ),
                    }),
                }
            }
        }
        self.apply_membership(txn, &fresh, events)
    }

    /// Writes a local membership operation (refused unless this peer is a member and the
    /// operation makes sense) and applies it; returns what changed.
    pub(crate) fn write_member(&self, txn: &mut WriteTxn<'_>, op: MemberOp) -> Result<Vec<Event>> {
        let outcome = self.membership(txn.raw())?;
        if outcome.members.get(&self.own.0) != Some(&Status::Active) {
            return Err(Error::NotAMember(self.own));
        }
        let op = match op {
            MemberOp::Add { writer } if writer == self.own.0 => {
                return Err(Error::InvalidArgument(
                    "a peer cannot add its own feeds".into(),
                ));
            }
            MemberOp::Remove { writer, cut } => {
                if writer == self.own.0 {
                    return Err(Error::InvalidArgument("a peer cannot remove itself".into()));
                }
                if !outcome.members.contains_key(&writer) {
                    return Err(Error::UnknownWriter(FeedKey(writer)));
                }
                // Cut where this peer's view of the writer ends, unless asked for less.
                let counted = crate::txn::writer_row(txn.raw(), &writer)?
                    .map_or(0, |row| row.merged.min(row.limit));
                MemberOp::Remove {
                    writer,
                    cut: cut.min(counted),
                }
            }
            add => add,
        };
        let last = {
            let table = txn.raw().open_table(MEMBERS).map_err(storage)?;
            let newest = table.last().map_err(storage)?;
            newest.map(|(k, _)| k.value().0)
        };
        let ts = self.stamp(last)?;
        let record = MemberRecord { ts, op };
        let seq = txn.length(&self.own)?;
        txn.append(&self.own, &[record.entry()])?;
        {
            let mut table = txn.raw().open_table(MEMBERS).map_err(storage)?;
            let row = tables::diff_row(seq, &record.encode());
            table
                .insert((ts.0, self.own.0), row.as_slice())
                .map_err(storage)?;
        }
        let mut events = Vec::new();
        self.apply_membership(txn, &HashSet::new(), &mut events)?;
        self.persist_hlc(txn.raw())?;
        Ok(events)
    }

    /// Records an invitation (the hash of its secret) that one joiner may redeem.
    pub(crate) fn write_invite(&self, txn: &mut WriteTxn<'_>, secret: [u8; 32]) -> Result<()> {
        if self.membership(txn.raw())?.members.get(&self.own.0) != Some(&Status::Active) {
            return Err(Error::NotAMember(self.own));
        }
        let now = self.clock.now_ms();
        let mut table = txn.raw().open_table(INVITES).map_err(storage)?;
        // Expired invitations go as new ones come: the table stays small.
        table
            .retain(|_, made| now.saturating_sub(made) <= INVITE_TTL_MS)
            .map_err(storage)?;
        table
            .insert(*blake3::hash(&secret).as_bytes(), now)
            .map_err(storage)?;
        Ok(())
    }

    /// Adds `writer` if `secret` is an invitation not redeemed yet, and uses it up.
    pub(crate) fn redeem_invite(
        &self,
        txn: &mut WriteTxn<'_>,
        secret: [u8; 32],
        writer: FeedKey,
    ) -> Result<Vec<Event>> {
        let hash = *blake3::hash(&secret).as_bytes();
        let made = {
            let table = txn.raw().open_table(INVITES).map_err(storage)?;
            table.get(hash).map_err(storage)?.map(|v| v.value())
        };
        let fresh =
            made.is_some_and(|made| self.clock.now_ms().saturating_sub(made) <= INVITE_TTL_MS);
        if !fresh {
            return Err(Error::InvalidInvite);
        }
        let events = self.write_member(txn, MemberOp::Add { writer: writer.0 })?;
        let mut table = txn.raw().open_table(INVITES).map_err(storage)?;
        table.remove(hash).map_err(storage)?;
        Ok(events)
    }

    /// Evaluates the membership and brings every writer's row, and the merged store, in step
    /// with it. Reports the rejected operations among `fresh` and every change of status.
    pub(crate) fn apply_membership(
        &self,
        txn: &mut WriteTxn<'_>,
        fresh: &HashSet<(u64, [u8; 32])>,
        events: &mut Vec<Event>,
    ) -> FeedResult<()> {
        let outcome = self.membership(txn.raw())?;
        for (ts, author, seq, reason) in &outcome.rejected {
            if fresh.contains(&(*ts, *author)) {
                events.push(Event::MembershipRejected {
                    author: FeedKey(*author),
                    seq: *seq,
                    ts: Hlc(*ts),
                    reason: reason.clone(),
                });
            }
        }
        let rows: BTreeMap<[u8; 32], WriterRow> = writer_rows(txn.raw())?.into_iter().collect();
        // What each writer should be: (state, limit, remover).
        let mut wanted: BTreeMap<[u8; 32], Wanted> = outcome
            .members
            .iter()
            .map(|(w, status)| {
                let row = match *status {
                    Status::Active => (WriterState::Active, u64::MAX, None),
                    Status::Removed { cut, by } => (WriterState::Removed, cut, Some(by)),
                };
                (*w, row)
            })
            .collect();
        // A writer whose adding operation no longer counts does not count at all.
        for w in rows.keys() {
            wanted.entry(*w).or_insert((WriterState::Removed, 0, None));
        }
        for (w, (state, limit, by)) in wanted {
            let key = FeedKey(w);
            let read = if key == self.own {
                txn.length(&self.own)?
            } else {
                rows.get(&w).map_or(0, |r| r.merged)
            };
            // The own writer counted everything before it first had a row.
            let old = rows.get(&w).copied().unwrap_or(WriterRow {
                merged: 0,
                ..WriterRow::new(WriterState::Active, u64::MAX, None)
            });
            if old.state == WriterState::Forked {
                continue;
            }
            if rows.contains_key(&w) && (old.state, old.limit, old.removed_by) == (state, limit, by)
            {
                continue;
            }
            if key != self.own && !rows.contains_key(&w) {
                txn.create_replica(key)?;
            }
            let (before, after) = (old.limit.min(read), limit.min(read));
            if after < before {
                self.unmerge(txn, key, after, before)?;
            } else if after > before {
                self.remerge(txn, key, before, after, events)?;
            }
            let row = WriterRow {
                state,
                merged: old.merged,
                limit,
                removed_by: by,
            };
            set_writer(txn.raw(), &w, row)?;
            let changed = !rows.contains_key(&w) || old.state != state;
            if key != self.own && changed {
                events.push(match state {
                    WriterState::Active => Event::WriterAdded { writer: key },
                    _ => Event::WriterRemoved { writer: key },
                });
            }
        }
        Ok(())
    }
}

impl Ctx<'_> {
    /// Sets the database identity of a new folder (`wanted`, or this peer's own diff key for a
    /// new database); refuses a folder that belongs to another database. A folder written
    /// before membership operations existed counted writers by local configuration: each of
    /// them becomes an `Add` operation of this peer, the database's first writer.
    pub(crate) fn init_membership(
        &self,
        txn: &mut WriteTxn<'_>,
        wanted: Option<FeedKey>,
    ) -> Result<Vec<Event>> {
        let stored = {
            let meta = txn.raw().open_table(META).map_err(storage)?;
            let row = meta.get(tables::DATABASE).map_err(storage)?;
            row.map(|v| v.value().to_vec())
        };
        if let Some(stored) = stored {
            if let Some(wanted) = wanted
                && stored != wanted.0
            {
                return Err(Error::InvalidArgument(format!(
                    "this folder belongs to another database than {wanted}"
                )));
            }
            return Ok(Vec::new());
        }
        let database = wanted.unwrap_or(self.own);
        {
            let mut meta = txn.raw().open_table(META).map_err(storage)?;
            meta.insert(tables::DATABASE, database.0.as_slice())
                .map_err(storage)?;
        }
        let legacy: Vec<[u8; 32]> = writer_rows(txn.raw())?
            .into_iter()
            .filter(|(w, row)| row.state == WriterState::Active && *w != self.own.0)
            .map(|(w, _)| w)
            .collect();
        let mut events = Vec::new();
        if legacy.is_empty() || database != self.own {
            self.apply_membership(txn, &HashSet::new(), &mut events)?;
        }
        if database == self.own {
            for writer in legacy {
                events.extend(self.write_member(txn, MemberOp::Add { writer })?);
            }
        }
        Ok(events)
    }
}
