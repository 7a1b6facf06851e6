//! The relationship lookups of one request ([`Lookups`]): the rows that link to one value are
//! read together with those linking to every other value asked for at the same time, in one
//! query per target (for a federated table, one ask per peer), then split by value.
//!
//! The rows of a level are resolved at once: async-graphql resolves the items of a list
//! concurrently, in one task (and the fields of one row one after another). Each relationship
//! field adds its row's value to the open batch of its target and query (the column linked to,
//! the field's `where` and `order_by`), then yields to the runtime once
//! (`tokio::task::yield_now`, whose wake-up waits until the task's other futures have run), and
//! the first field back sends the batch: `<column> IN (<values>)` with the field's `where` and
//! `order_by`, without its page. Each row then takes the rows of its own value, in the batch's
//! order, and applies its own `offset` and `limit`: its list is the one a lookup of its value
//! alone gives. A field whose value a batch took already (a second field of the row with other
//! page arguments, another row of the same value) reads that batch, sent or not; a field of a
//! new value that comes after the batch was sent starts another one: one more query, never a
//! row less.
//!
//! A batch is bounded: at most [`MAX_IN`] values and about [`BATCH_BYTES`] of them, and at most
//! [`BATCH_ROWS`] rows back. When more come, nothing is cut: each of its values is looked up
//! alone, with its own page, as before batching.
//!
//! Rows are matched to values by the target column's type: an integer column's rows to
//! integers, a real column's to numbers (compared as `f64`, as SQLite compares a real column),
//! a text-like column's (text, guid, times, enum, blob) to strings, byte for byte as SQLite's
//! default collation compares them. A value of another JSON type (a number linked to a text
//! column, say) is not batched: it is looked up alone with `=`, so SQLite's conversions decide
//! what it matches, as before batching.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde_json::Value;

use super::{Fetched, Source};
use crate::model::ColumnType;
use crate::store::{Find, MAX_IN, Op, Row, Tables};

/// The most rows one batch brings back (from all its sources together); a batch that would
/// bring more is looked up value by value instead. A peer answers up to 10,000 rows a query
/// (the node checks this stays below), in up to 16 MiB: rows of up to 8 KiB fit.
pub const BATCH_ROWS: u32 = 2_000;

/// About the most bytes of values (as JSON) one batch sends; a value that does not fit starts
/// another batch. A peer reads a request line of up to 64 KiB, so the node checks this leaves
/// room for the rest of the query.
pub const BATCH_BYTES: usize = 32 * 1024;

/// The relationship lookups of one request, by target table and query: rows that link to the
/// same rows (many notes of one level) share one lookup, and the lookups of a level's different
/// values are batched into one (see the module's documentation).
#[derive(Default)]
pub struct Lookups {
    /// The lookups of one value each, by target and query.
    single: Mutex<HashMap<String, Lookup>>,
    /// The batches of each target and query without its page, the latest last.
    batches: Mutex<HashMap<String, Vec<Arc<Batch>>>>,
}

/// One shared lookup, and whether its errors were told already.
type Lookup = (
    Shared<BoxFuture<'static, Result<Fetched, String>>>,
    Arc<AtomicBool>,
);

/// A batch's rows, grouped by value, once they come.
type Sent = Shared<BoxFuture<'static, Result<Arc<Grouped>, String>>>;

/// What a batch brought back.
enum Grouped {
    /// The rows of each value asked for, in the batch's order, and the sources that failed.
    Rows {
        rows: HashMap<Match, Vec<Row>>,
        errors: Vec<String>,
    },
    /// More than [`BATCH_ROWS`] rows: its values are looked up one by one.
    TooMany,
}

/// A batch of values for one target and query.
struct Batch {
    state: Mutex<State>,
    /// Whether the sources that failed were told already (to one field only).
    told: AtomicBool,
}

struct State {
    /// The values taken, each once; kept once sent, for later fields of the same values.
    taken: HashSet<Match>,
    stage: Stage,
}

enum Stage {
    /// Taking values: those to send, in the order taken, and their size as JSON.
    Open { values: Vec<Value>, bytes: usize },
    /// Sent.
    Sent(Sent),
}

/// A value as the rows of a batch are matched to it: by the target column's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Match {
    Integer(i64),
    /// The bits of an `f64`, `-0.0` taken as `0.0`.
    Real(u64),
    Text(String),
}

impl Match {
    /// `value` as a value of a column of type `kind`; `None` when it is of another JSON type
    /// (or null), which is not batched.
    fn of(kind: ColumnType, value: &Value) -> Option<Self> {
        match kind {
            ColumnType::Integer => value.as_i64().map(Self::Integer),
            // Adding 0.0 turns -0.0 into 0.0 (SQLite finds them equal) and leaves the rest.
            ColumnType::Real => value.as_f64().map(|f| Self::Real((f + 0.0).to_bits())),
            _ => value.as_str().map(|s| Self::Text(s.to_owned())),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `find` for the rows whose `to` equals `value`: a lookup of one value.
fn one_value(mut find: Find, to: &str, value: Value) -> Find {
    find.filters.push((to.to_owned(), Op::Eq, value));
    find
}

impl Batch {
    fn new(value: Value, key: Match) -> Self {
        Self {
            state: Mutex::new(State {
                taken: HashSet::from([key]),
                stage: Stage::Open {
                    bytes: value.to_string().len(),
                    values: vec![value],
                },
            }),
            told: AtomicBool::new(false),
        }
    }

    /// Whether `key` was taken, sent or not.
    fn has(&self, key: &Match) -> bool {
        lock(&self.state).taken.contains(key)
    }

    /// Whether the batch is still taking values.
    fn open(&self) -> bool {
        matches!(lock(&self.state).stage, Stage::Open { .. })
    }

    /// Adds `value` unless the batch was sent or is full; whether it did.
    fn add(&self, value: &Value, key: &Match) -> bool {
        let mut state = lock(&self.state);
        let State { taken, stage } = &mut *state;
        let Stage::Open { values, bytes } = stage else {
            return false;
        };
        let size = value.to_string().len();
        if values.len() >= MAX_IN || *bytes + size > BATCH_BYTES {
            return false;
        }
        values.push(value.clone());
        taken.insert(key.clone());
        *bytes += size;
        true
    }

    /// Sends the batch, unless a field did: `to IN (values)` with `query` (the same for every
    /// field of the batch), for at most [`BATCH_ROWS`] rows (one more, to see it overflow).
    fn send(
        &self,
        target: &Source,
        store: &Arc<Tables>,
        to: &str,
        kind: ColumnType,
        query: Find,
    ) -> Sent {
        let mut state = lock(&self.state);
        let values = match &mut state.stage {
            Stage::Sent(sent) => return sent.clone(),
            Stage::Open { values, .. } => std::mem::take(values),
        };
        let (target, store, to) = (target.clone(), store.clone(), to.to_owned());
        let sent = async move {
            let mut find = query;
            let asked = values.len();
            find.filters
                .push((to.clone(), Op::In, Value::Array(values)));
            find.limit = Some(BATCH_ROWS + 1);
            let (rows, errors) = target.fetch(&store, &find).await?;
            if rows.len() > BATCH_ROWS as usize {
                tracing::debug!(
                    table = target.name(),
                    values = asked,
                    "a batched lookup brings too many rows: looking its values up one by one"
                );
                return Ok(Arc::new(Grouped::TooMany));
            }
            let mut grouped: HashMap<Match, Vec<Row>> = HashMap::new();
            for row in rows {
                if let Some(key) = row.get(&to).and_then(|v| Match::of(kind, v)) {
                    grouped.entry(key).or_default().push(row);
                }
            }
            Ok(Arc::new(Grouped::Rows {
                rows: grouped,
                errors,
            }))
        }
        .boxed()
        .shared();
        state.stage = Stage::Sent(sent.clone());
        sent
    }
}

impl Lookups {
    /// The rows of `target` whose `to` equals `value` (not null), as `find` (the field's
    /// `where`, `order_by`, `limit` and `offset`) selects them: batched with the other values
    /// asked for at the same time when `value` is of the column's type (see the module's
    /// documentation), looked up alone otherwise. The sources that failed are handed back to
    /// one field of each lookup only.
    pub(super) async fn linked(
        &self,
        target: &Source,
        store: &Arc<Tables>,
        to: &str,
        value: Value,
        find: Find,
    ) -> Result<Fetched, String> {
        let kind = target
            .columns()
            .into_iter()
            .find(|(column, _)| column == to)
            .map(|(_, kind)| kind);
        let Some((kind, key)) = kind.and_then(|k| Some((k, Match::of(k, &value)?))) else {
            return self.rows(target, store, one_value(find, to, value)).await;
        };
        let query = Find {
            limit: None,
            offset: 0,
            ..find.clone()
        };
        let batch = self.join(target, to, &query, &value, &key);
        if batch.open() {
            // Lets the other fields of the level add their values before the batch is sent.
            tokio::task::yield_now().await;
        }
        let grouped = batch.send(target, store, to, kind, query).await?;
        match &*grouped {
            Grouped::TooMany => self.rows(target, store, one_value(find, to, value)).await,
            Grouped::Rows { rows, errors } => {
                let offset = usize::try_from(find.offset).unwrap_or(usize::MAX);
                let limit = find
                    .limit
                    .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                let page = rows
                    .get(&key)
                    .map(|rows| rows.iter().skip(offset).take(limit).cloned().collect())
                    .unwrap_or_default();
                let first = !batch.told.swap(true, Ordering::Relaxed);
                Ok((page, if first { errors.clone() } else { Vec::new() }))
            }
        }
    }

    /// A batch of `target` and `query` for `to` with `value` in it: one that took it already
    /// (sent or not), else the latest one if it is open and has room, else a new one.
    fn join(
        &self,
        target: &Source,
        to: &str,
        query: &Find,
        value: &Value,
        key: &Match,
    ) -> Arc<Batch> {
        let name = format!(
            "{}\u{0}{to}\u{0}{}",
            target.name(),
            serde_json::to_string(query).unwrap_or_default()
        );
        let mut batches = lock(&self.batches);
        let batches = batches.entry(name).or_default();
        if let Some(batch) = batches.iter().find(|b| b.has(key)) {
            return batch.clone();
        }
        if let Some(batch) = batches.last()
            && batch.add(value, key)
        {
            return batch.clone();
        }
        let batch = Arc::new(Batch::new(value.clone(), key.clone()));
        batches.push(batch.clone());
        batch
    }

    /// The rows of `target` that `find` selects, looked up once per request; the failed
    /// sources are handed back to the first caller only.
    pub(super) async fn rows(
        &self,
        target: &Source,
        store: &Arc<Tables>,
        find: Find,
    ) -> Result<Fetched, String> {
        let key = format!(
            "{}\u{0}{}",
            target.name(),
            serde_json::to_string(&find).unwrap_or_default()
        );
        let (lookup, told) = lock(&self.single)
            .entry(key)
            .or_insert_with(|| {
                let (target, store) = (target.clone(), store.clone());
                let lookup = async move { target.fetch(&store, &find).await }
                    .boxed()
                    .shared();
                (lookup, Arc::default())
            })
            .clone();
        let (rows, errors) = lookup.await?;
        let first = !told.swap(true, Ordering::Relaxed);
        Ok((rows, if first { errors } else { Vec::new() }))
    }
}
