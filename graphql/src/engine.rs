//! The GraphQL schema of a peer's context tables, built at run time (async-graphql's dynamic
//! schema), with Goop²'s names (reference `goop2-handlers.md` §4.2).
//!
//! For a table `T`: the object `T`; `T(where, limit, offset, order_by): [T]` and
//! `T_by_pk(_id): T`; `insert_T(object, peer)`, `update_T_by_pk(_id, _set, peer)` and
//! `delete_T_by_pk(_id, peer): T_delete_result`, which write another peer's table when `peer`
//! names one serving it in a federation ([`mutations`]). Filters are `<col>_eq`, `_neq`, `_in` (a list of at
//! most [`crate::store::MAX_IN`] values), `_gt`, `_gte`, `_lt`, `_lte` (numbers and times) and
//! `_like` (text); `order_by` keys apply in the order written.
//! A relationship offered from `T.c` to `U.d` gives the object `T` a field
//! `U(where, limit, offset, order_by): [U]`: the rows of `U` whose `d` equals the row's `c`,
//! looked up for all the rows of a level at once ([`Lookups`]).
//!
//! Names generated from different tables can be the same (`x_where` is a table's name and
//! table `x`'s filter), and some are taken by every schema (`Query`, `Int`): a table whose
//! names clash is refused when it is created, and left out of the schema (with a warning) when
//! it comes from another peer or was stored unchecked, so no name can make the whole schema
//! fail.

use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Schema,
    TypeRef,
};
use async_graphql::{Name, Value as GqlValue};
use serde_json::Value;

use crate::DataError;
use crate::model::{ColumnType, Relationship, Table};
use crate::store::{Find, Op, Row, SYSTEM_COLUMNS, Tables};

mod lookups;
mod mutations;

pub use lookups::{BATCH_BYTES, BATCH_ROWS, Lookups};

/// The deepest query taken: relationships can nest without end (`notes { levels { notes
/// ... } }`), each level asking other peers again; a client's introspection query is 13 deep.
pub const MAX_DEPTH: usize = 16;

/// The field of every row object that names the peer the row came from.
pub const PEER_FIELD: &str = "_peer";

/// The type names every schema has, whatever its tables: the roots, the shared enum of
/// `order_by` and GraphQL's built-in scalars. No table may generate one, nor any name that
/// starts with `__` (GraphQL keeps those for introspection).
pub const RESERVED_TYPES: [&str; 8] = [
    "Query",
    "Mutation",
    "OrderDirection",
    TypeRef::INT,
    TypeRef::FLOAT,
    TypeRef::STRING,
    TypeRef::BOOLEAN,
    TypeRef::ID,
];

/// A name a table generates: a type, or a field of the query or of the mutation root. Types
/// share one namespace, and each root's fields another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaName {
    /// A type.
    Type(String),
    /// A field of `Query`.
    Query(String),
    /// A field of `Mutation`.
    Mutation(String),
}

impl SchemaName {
    /// The name itself.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Type(name) | Self::Query(name) | Self::Mutation(name) => name,
        }
    }

    /// Whether the name belongs to GraphQL or to every schema, not to a table.
    pub fn reserved(&self) -> bool {
        self.as_str().starts_with("__")
            || matches!(self, Self::Type(name) if RESERVED_TYPES.contains(&name.as_str()))
    }
}

impl std::fmt::Display for SchemaName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Type(name) => write!(f, "type {name}"),
            Self::Query(name) => write!(f, "query field {name}"),
            Self::Mutation(name) => write!(f, "mutation field {name}"),
        }
    }
}

/// Every name table `table` generates: the types `T`, `T_where`, `T_order_by`,
/// `T_insert_input`, `T_set_input` and `T_delete_result`, the query fields `T` and `T_by_pk`,
/// and the mutation fields `insert_T`, `update_T_by_pk` and `delete_T_by_pk`. A table served
/// from other peers only has no `T_by_pk` (nor mutations, when this peer cannot write to
/// others), but it is given all the names: it gets them the day this peer has a table of that
/// name.
pub fn generated_names(table: &str) -> Vec<SchemaName> {
    let ty = type_name(table);
    vec![
        SchemaName::Type(ty.clone()),
        SchemaName::Type(format!("{ty}_where")),
        SchemaName::Type(format!("{ty}_order_by")),
        SchemaName::Type(format!("{ty}_insert_input")),
        SchemaName::Type(format!("{ty}_set_input")),
        SchemaName::Type(format!("{ty}_delete_result")),
        SchemaName::Query(table.to_owned()),
        SchemaName::Query(format!("{table}_by_pk")),
        SchemaName::Mutation(format!("insert_{table}")),
        SchemaName::Mutation(format!("update_{table}_by_pk")),
        SchemaName::Mutation(format!("delete_{table}_by_pk")),
    ]
}

/// Why table `table` cannot be served beside the tables named `others`: the first name it
/// generates that is reserved or that one of them generates too. `None` when it can.
pub fn clash<'a>(table: &str, others: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut taken = Taken::default();
    for other in others {
        taken.take(other);
    }
    taken.claim(table).err()
}

/// The names taken in a schema, and which table took each.
#[derive(Default)]
struct Taken(std::collections::HashMap<SchemaName, String>);

impl Taken {
    /// Takes `table`'s names, whoever has them already.
    fn take(&mut self, table: &str) {
        for name in generated_names(table) {
            self.0.entry(name).or_insert_with(|| table.to_owned());
        }
    }

    /// Takes `table`'s names if none is reserved or taken by another table; otherwise takes
    /// nothing and says which name clashes with what. A table of a name already taken (this
    /// peer's table and the federation's of the same name) is the same table: no clash.
    fn claim(&mut self, table: &str) -> Result<(), String> {
        let names = generated_names(table);
        for name in &names {
            if name.reserved() {
                return Err(format!(
                    "table {table:?} would generate {name}, which is reserved"
                ));
            }
            if let Some(owner) = self.0.get(name).filter(|owner| *owner != table) {
                return Err(format!(
                    "table {table:?} would generate {name}, which table {owner:?} generates"
                ));
            }
        }
        for name in names {
            self.0.insert(name, table.to_owned());
        }
        Ok(())
    }
}

/// The GraphQL type name of a table: characters outside `[A-Za-z0-9_]` become `_`.
fn type_name(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn scalar(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Integer => TypeRef::INT,
        ColumnType::Real => TypeRef::FLOAT,
        _ => TypeRef::STRING,
    }
}

/// Every column of a table, the system ones first, with its type.
fn all_columns(table: &Table) -> Vec<(String, ColumnType)> {
    SYSTEM_COLUMNS
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
        .chain(table.columns.iter().map(|c| (c.name.clone(), c.kind)))
        .collect()
}

/// The filters of a `where` input, by field name.
fn filter_ops(kind: ColumnType) -> Vec<(&'static str, Op)> {
    let mut ops = vec![("_eq", Op::Eq), ("_neq", Op::Neq), ("_in", Op::In)];
    if kind.ordered() {
        ops.extend([
            ("_gt", Op::Gt),
            ("_gte", Op::Gte),
            ("_lt", Op::Lt),
            ("_lte", Op::Lte),
        ]);
    }
    if kind.textual() {
        ops.push(("_like", Op::Like));
    }
    ops
}

fn gql_error(error: DataError) -> async_graphql::Error {
    async_graphql::Error::new(error.to_string())
}

fn to_json(value: &GqlValue) -> Value {
    value.clone().into_json().unwrap_or(Value::Null)
}

fn row_value(row: Row) -> FieldValue<'static> {
    FieldValue::owned_any(row)
}

/// A table whose rows come from several peers: the columns they share, and where to ask.
#[derive(Debug, Clone)]
pub struct Federated {
    /// The shared schema (the columns every contributor has, with the same type).
    pub table: Table,
    /// Whether this peer's own rows are part of it.
    pub local: bool,
    /// The other contributors: peer id and federation group.
    pub sources: Vec<(String, String)>,
}

/// A write to a row of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Adds a row with these values.
    Insert(Row),
    /// Sets these columns of row `_id`.
    Update(i64, Row),
    /// Deletes row `_id`.
    Delete(i64),
}

/// What a write did: the row as stored (an insert, an update), or how many rows a delete
/// deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The row written.
    Row(Row),
    /// The rows deleted.
    Deleted(usize),
}

/// What a write to another peer gives.
pub type RemoteWritten =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Written, String>> + Send>>;

/// Writes a row of a peer's (id, federation group) table.
pub type RemoteWrite = Arc<dyn Fn(String, String, String, Write) -> RemoteWritten + Send + Sync>;

/// How the engine reaches other peers: to read their rows, and (when given) to write them.
#[derive(Clone)]
pub struct Remote {
    /// Asks a peer for rows.
    pub query: RemoteQuery,
    /// Writes a peer's row; without it, only this peer's tables have mutations.
    pub write: Option<RemoteWrite>,
}

impl From<RemoteQuery> for Remote {
    fn from(query: RemoteQuery) -> Self {
        Self { query, write: None }
    }
}

/// What asking a peer for rows gives.
pub type RemoteRows =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Row>, String>> + Send>>;

/// Asks a peer (id, federation group) for the rows of a table.
pub type RemoteQuery = Arc<dyn Fn(String, String, String, Find) -> RemoteRows + Send + Sync>;

/// Builds the schema of `tables` (those with `context: true`) and of `federated` tables; `None`
/// when there are none. A federated table's list query asks every source, this peer included
/// when it has the table; its `_by_pk` stays this peer's own table's, and its mutations write
/// this peer's table or, with `peer`, another's (when `remote` can write). A table whose names
/// are reserved or taken (see [`generated_names`]) is left out: this peer's tables take theirs
/// first, by name, then the federated ones.
pub fn build(
    tables: &[Table],
    store: Arc<Tables>,
    owner: String,
    federated: &[Federated],
    relationships: &[Relationship],
    remote: Option<Remote>,
) -> Result<Option<Schema>, DataError> {
    // A name generated twice would fail the whole schema (or silently replace a type), so a
    // table whose names are taken is left out: this peer's tables first, by name, then the
    // federation's, whose names come from other peers.
    let mut taken = Taken::default();
    let mut claim = |name: &str, origin: &str| match taken.claim(name) {
        Ok(()) => true,
        Err(clash) => {
            tracing::warn!(table = %name, origin, %clash, "table not served: its names clash");
            false
        }
    };
    let mut tables: Vec<&Table> = tables.iter().filter(|t| t.context).collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    tables.retain(|t| claim(&t.name, "local"));
    let federated: Vec<&Federated> = if remote.is_some() {
        federated
            .iter()
            .filter(|f| claim(&f.table.name, "federated"))
            .collect()
    } else {
        Vec::new()
    };
    // What each list query reads: this peer's table, or the federation's in its place.
    let mut sources: Vec<Source> = tables
        .iter()
        .filter(|t| !federated.iter().any(|f| f.table.name == t.name))
        .map(|t| Source::Local((*t).clone()))
        .collect();
    if let Some(remote) = &remote {
        sources.extend(
            federated
                .iter()
                .map(|f| Source::Federated((*f).clone(), remote.query.clone())),
        );
    }
    let remote_write = remote.and_then(|r| r.write);
    if tables.is_empty() && federated.is_empty() {
        return Ok(None);
    }
    let direction = Enum::new("OrderDirection").item("asc").item("desc");
    let mut query = Object::new("Query");
    let mut mutation = Object::new("Mutation");
    // The tables with mutations: this peer's, and those other peers serve when this peer can
    // write to them (the loop below skips the others alike).
    let any_mutations = !tables.is_empty()
        || (remote_write.is_some() && federated.iter().any(|f| !f.sources.is_empty()));
    let mut builder =
        Schema::build("Query", any_mutations.then_some("Mutation"), None).register(direction);
    // Every table served: this peer's, then the federation's it does not have.
    let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    names.extend(
        federated
            .iter()
            .map(|f| f.table.name.as_str())
            .filter(|n| !tables.iter().any(|t| t.name == *n)),
    );
    for table_name in names {
        let local = tables.iter().find(|t| t.name == table_name);
        let shared = federated.iter().find(|f| f.table.name == table_name);
        let remote = match (shared, &remote_write) {
            (Some(f), Some(write)) if !f.sources.is_empty() => {
                Some((f.sources.clone(), write.clone()))
            }
            _ => None,
        };
        // The inputs follow this peer's table, or the columns the federation shares.
        let Some(shape) = local.copied().or(shared.map(|f| &f.table)) else {
            continue;
        };
        if local.is_none() && remote.is_none() {
            // Served from other peers only, with no way to write to them.
            continue;
        }
        let (insert, set, deleted) = mutations::types(shape);
        builder = builder.register(insert).register(set).register(deleted);
        let target = mutations::Target {
            name: table_name.to_owned(),
            owner: owner.clone(),
            local: local.map(|t| (store.clone(), (*t).clone())),
            remote,
        };
        for field in mutations::fields(target) {
            mutation = mutation.field(field);
        }
        if let Some(table) = local {
            let name = type_name(&table.name);
            let field_name = format!("{}_by_pk", table.name);
            let (store, table) = (store.clone(), (*table).clone());
            let by_pk = Field::new(field_name, TypeRef::named(&name), move |ctx| {
                let (store, table) = (store.clone(), table.clone());
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("_id")?.i64()?;
                    Ok(store.get(&table, id).map_err(gql_error)?.map(row_value))
                })
            })
            .argument(InputValue::new("_id", TypeRef::named_nn(TypeRef::INT)));
            query = query.field(by_pk);
        }
    }
    for source in &sources {
        let name = type_name(source.name());
        let columns = source.columns();
        let (mut object, filter, order) = read_types(&name, &columns, &owner);
        for (relation, target) in relations(source, &sources, relationships) {
            object = object.field(relation_field(relation, target, store.clone()));
        }
        query = query.field(list_field(source.clone(), store.clone()));
        builder = builder.register(object).register(filter).register(order);
    }
    builder = builder.register(query);
    // A schema of federated tables alone, with no way to write to them, has no mutations.
    if any_mutations {
        builder = builder.register(mutation);
    }
    builder
        .limit_depth(MAX_DEPTH)
        .finish()
        .map(Some)
        .map_err(|e| DataError::InvalidSchema(e.to_string()))
}

/// The object type of a table's rows, and its `where` and `order_by` inputs. Beside the
/// columns, the object has `_peer`: the peer that served the row (`me` for this peer's own),
/// which `_owner` is not once a row was written by another peer.
fn read_types(
    name: &str,
    columns: &[(String, ColumnType)],
    me: &str,
) -> (Object, InputObject, InputObject) {
    let me = Value::String(me.to_owned());
    let mut object = Object::new(name).field(Field::new(
        PEER_FIELD,
        TypeRef::named_nn(TypeRef::STRING),
        move |ctx| {
            let me = me.clone();
            FieldFuture::new(async move {
                let row = ctx.parent_value.try_downcast_ref::<Row>()?;
                let peer = row.get(PEER_FIELD).cloned().unwrap_or(me);
                Ok(Some(FieldValue::value(GqlValue::from_json(peer)?)))
            })
        },
    ));
    let mut filter = InputObject::new(format!("{name}_where"));
    let mut order = InputObject::new(format!("{name}_order_by"));
    for (column, kind) in columns {
        let key = column.clone();
        object = object.field(Field::new(
            column,
            TypeRef::named(scalar(*kind)),
            move |ctx| {
                let key = key.clone();
                FieldFuture::new(async move {
                    let row = ctx.parent_value.try_downcast_ref::<Row>()?;
                    let value = row.get(&key).cloned().unwrap_or(Value::Null);
                    Ok(Some(FieldValue::value(GqlValue::from_json(value)?)))
                })
            },
        ));
        for (suffix, op) in filter_ops(*kind) {
            let ty = if op == Op::In {
                TypeRef::named_nn_list(scalar(*kind))
            } else {
                TypeRef::named(scalar(*kind))
            };
            filter = filter.field(InputValue::new(format!("{column}{suffix}"), ty));
        }
        order = order.field(InputValue::new(column, TypeRef::named("OrderDirection")));
    }
    (object, filter, order)
}

/// The list arguments of a table's query field.
fn list_arguments(field: Field, name: &str) -> Field {
    field
        .argument(InputValue::new(
            "where",
            TypeRef::named(format!("{name}_where")),
        ))
        .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("offset", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new(
            "order_by",
            TypeRef::named(format!("{name}_order_by")),
        ))
}

/// Orders rows as `order` asks, then by owner, id and serving peer, so pages across peers are
/// stable.
fn sort_rows(rows: &mut [Row], order: &[(String, bool)]) {
    fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&y.as_f64().unwrap_or(0.0)),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
            // Nulls first, as SQLite orders them.
            (Value::Null, _) => std::cmp::Ordering::Less,
            (_, Value::Null) => std::cmp::Ordering::Greater,
            _ => a.to_string().cmp(&b.to_string()),
        }
    }
    let null = Value::Null;
    rows.sort_by(|a, b| {
        for (column, desc) in order {
            let ord = compare(
                a.get(column).unwrap_or(&null),
                b.get(column).unwrap_or(&null),
            );
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        compare(
            a.get("_owner").unwrap_or(&null),
            b.get("_owner").unwrap_or(&null),
        )
        .then_with(|| compare(a.get("_id").unwrap_or(&null), b.get("_id").unwrap_or(&null)))
        .then_with(|| {
            compare(
                a.get(PEER_FIELD).unwrap_or(&null),
                b.get(PEER_FIELD).unwrap_or(&null),
            )
        })
    });
}

/// Where a list query's rows come from.
#[derive(Clone)]
enum Source {
    /// This peer's table.
    Local(Table),
    /// The peers that offer the table (this one too, when it has it), and how to ask them.
    Federated(Federated, RemoteQuery),
}

impl Source {
    /// The table as served: this peer's, or the columns the federation shares.
    fn table(&self) -> &Table {
        match self {
            Self::Local(table) | Self::Federated(Federated { table, .. }, _) => table,
        }
    }

    fn name(&self) -> &str {
        &self.table().name
    }

    fn columns(&self) -> Vec<(String, ColumnType)> {
        all_columns(self.table())
    }

    /// The rows `find` selects, filtered, ordered and paged, with what failed on the way. A
    /// federated table asks every source at once and orders and pages the merged rows as a
    /// whole; a source that fails is named in the errors, and the others' rows are still
    /// answered.
    async fn fetch(&self, store: &Tables, find: &Find) -> Result<Fetched, String> {
        let (federated, remote) = match self {
            Self::Local(table) => {
                let rows = store.find(table, find).map_err(|e| e.to_string())?;
                return Ok((rows, Vec::new()));
            }
            Self::Federated(federated, remote) => (federated, remote),
        };
        // Each source gives its rows up to the end of the page; the page is cut after the
        // merge.
        let each = Find {
            limit: find.limit.map(|l| l.saturating_add(find.offset)),
            offset: 0,
            ..find.clone()
        };
        let table = federated.table.name.clone();
        let asks = federated.sources.iter().map(|(peer, group)| {
            let ask = remote(peer.clone(), group.clone(), table.clone(), each.clone());
            let peer = peer.clone();
            async move { (peer, ask.await) }
        });
        let answers = futures::future::join_all(asks).await;
        let (mut rows, mut errors) = (Vec::new(), Vec::new());
        if federated.local {
            match store.table(&table).and_then(|t| store.find(&t, &each)) {
                Ok(mine) => rows.extend(mine),
                Err(error) => errors.push(format!("this peer: {error}")),
            }
        }
        for (peer, answer) in answers {
            match answer {
                Ok(theirs) => rows.extend(theirs.into_iter().map(|mut row| {
                    // Set here, whatever the peer's rows said.
                    row.insert(PEER_FIELD.to_owned(), Value::String(peer.clone()));
                    row
                })),
                Err(error) => errors.push(format!("peer {peer}: {error}")),
            }
        }
        sort_rows(&mut rows, &find.order);
        let start = usize::try_from(find.offset)
            .unwrap_or(usize::MAX)
            .min(rows.len());
        let mut page = rows.split_off(start);
        if let Some(limit) = find.limit {
            page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok((page, errors))
    }

    /// [`Source::fetch`] for a resolver: the errors of failed sources go to the response.
    async fn rows(
        &self,
        store: &Tables,
        find: &Find,
        ctx: &ResolverContext<'_>,
    ) -> async_graphql::Result<Vec<Row>> {
        let (rows, errors) = self.fetch(store, find).await?;
        report(ctx, errors);
        Ok(rows)
    }
}

/// Names the sources that failed in the response's errors.
fn report(ctx: &ResolverContext<'_>, errors: Vec<String>) {
    for error in errors {
        ctx.add_error(async_graphql::ServerError::new(error, None));
    }
}

/// Rows, and the sources that failed.
type Fetched = (Vec<Row>, Vec<String>);

/// The list query of a table: `T(where, limit, offset, order_by): [T]`.
fn list_field(source: Source, store: Arc<Tables>) -> Field {
    let name = type_name(source.name());
    let columns = source.columns();
    let field = Field::new(
        source.name().to_owned(),
        TypeRef::named_list(&name),
        move |ctx| {
            let (store, source, columns) = (store.clone(), source.clone(), columns.clone());
            FieldFuture::new(async move {
                let find = find_of(&ctx, &columns)?;
                let rows = source.rows(&store, &find, &ctx).await?;
                Ok(Some(FieldValue::list(rows.into_iter().map(row_value))))
            })
        },
    );
    list_arguments(field, &name)
}

/// The relationships that give `source`'s rows a field: those from it to a table served here,
/// on columns both have, whose field name is not one of its columns (nor taken by an earlier
/// relationship), each with the source of the rows it lists.
fn relations<'a>(
    source: &Source,
    sources: &'a [Source],
    relationships: &'a [Relationship],
) -> Vec<(&'a Relationship, &'a Source)> {
    let columns = source.columns();
    let has = |columns: &[(String, ColumnType)], name: &str| columns.iter().any(|(c, _)| c == name);
    let mut out: Vec<(&Relationship, &Source)> = Vec::new();
    for relation in relationships
        .iter()
        .filter(|r| r.from_table == source.name())
    {
        let Some(target) = sources.iter().find(|t| t.name() == relation.to_table) else {
            continue;
        };
        let usable = has(&columns, &relation.from_column)
            && has(&target.columns(), &relation.to_column)
            && !has(&columns, &relation.to_table)
            && !out.iter().any(|(r, _)| r.to_table == relation.to_table);
        if usable {
            out.push((relation, target));
        } else {
            tracing::debug!(
                ?relation,
                "relationship not served: a column is missing or its name is taken"
            );
        }
    }
    out
}

/// A relationship's field on a row: the target's rows whose `to_column` equals the row's
/// `from_column` (none when that is null), with the list query's arguments.
fn relation_field(relation: &Relationship, target: &Source, store: Arc<Tables>) -> Field {
    let name = type_name(target.name());
    let columns = target.columns();
    let (from, to, target) = (
        relation.from_column.clone(),
        relation.to_column.clone(),
        target.clone(),
    );
    let field = Field::new(
        relation.to_table.clone(),
        TypeRef::named_list(&name),
        move |ctx| {
            let (store, target, columns) = (store.clone(), target.clone(), columns.clone());
            let (from, to) = (from.clone(), to.clone());
            FieldFuture::new(async move {
                let row = ctx.parent_value.try_downcast_ref::<Row>()?;
                let value = row.get(&from).cloned().unwrap_or(Value::Null);
                if value.is_null() {
                    return Ok(Some(FieldValue::list(Vec::<FieldValue<'_>>::new())));
                }
                let mut find = find_of(&ctx, &columns)?;
                let rows = match ctx.data_opt::<Lookups>() {
                    Some(lookups) => {
                        let (rows, errors) =
                            lookups.linked(&target, &store, &to, value, find).await?;
                        // A shared lookup names a failed source once, for one row.
                        report(&ctx, errors);
                        rows
                    }
                    None => {
                        find.filters.push((to, Op::Eq, value));
                        target.rows(&store, &find, &ctx).await?
                    }
                };
                Ok(Some(FieldValue::list(rows.into_iter().map(row_value))))
            })
        },
    );
    list_arguments(field, &name)
}

/// The object argument `name` as a row.
fn object_of(ctx: &ResolverContext<'_>, name: &str) -> async_graphql::Result<Row> {
    let object = ctx.args.try_get(name)?.object()?;
    Ok(object
        .iter()
        .map(|(key, value)| (key.to_string(), to_json(value.as_value())))
        .collect())
}

/// An argument that must be an input object (`where: []` is refused, not an internal error).
fn object<'a>(
    name: &str,
    value: async_graphql::dynamic::ValueAccessor<'a>,
) -> async_graphql::Result<async_graphql::dynamic::ObjectAccessor<'a>> {
    value
        .object()
        .map_err(|_| async_graphql::Error::new(format!("{name} must be an object")))
}

/// An argument that counts rows: 0 to `u32::MAX` (a negative one is refused, not ignored).
fn count(
    name: &str,
    value: async_graphql::dynamic::ValueAccessor<'_>,
) -> async_graphql::Result<u32> {
    let n = value.i64()?;
    u32::try_from(n).map_err(|_| {
        async_graphql::Error::new(format!("{name} must be 0 to {}, not {n}", u32::MAX))
    })
}

/// The `where`, `order_by`, `limit` and `offset` arguments.
fn find_of(
    ctx: &ResolverContext<'_>,
    columns: &[(String, ColumnType)],
) -> async_graphql::Result<Find> {
    let mut find = Find::default();
    if let Some(filter) = ctx.args.get("where") {
        for (key, value) in object("where", filter)?.iter() {
            let key: &Name = key;
            let (column, op) = columns
                .iter()
                .flat_map(|(c, kind)| filter_ops(*kind).into_iter().map(move |(s, op)| (c, s, op)))
                .find(|(c, s, _)| key.as_str() == format!("{c}{s}"))
                .map(|(c, _, op)| (c.clone(), op))
                .ok_or_else(|| async_graphql::Error::new(format!("unknown filter {key}")))?;
            find.filters.push((column, op, to_json(value.as_value())));
        }
    }
    if let Some(order) = ctx.args.get("order_by") {
        for (key, value) in object("order_by", order)?.iter() {
            find.order
                .push((key.to_string(), value.enum_name()? == "desc"));
        }
    }
    if let Some(limit) = ctx.args.get("limit") {
        find.limit = Some(count("limit", limit)?);
    }
    if let Some(offset) = ctx.args.get("offset") {
        find.offset = count("offset", offset)?;
    }
    Ok(find)
}
