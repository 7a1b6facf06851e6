//! The mutation fields of a table `T`: `insert_T(object, peer)`, `update_T_by_pk(_id, _set,
//! peer)` and `delete_T_by_pk(_id, peer): T_delete_result`, with their input types.
//!
//! Without `peer`, or naming this peer, they write this peer's own table. Naming another peer
//! that serves `T` in a federation, they write that peer's table through [`RemoteWrite`]; the
//! peer decides (its access rules) and answers with the row as it stored it. A table only other
//! peers serve has `peer` required.

use std::sync::Arc;

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, TypeRef,
};
use serde_json::Value;

use super::{
    PEER_FIELD, RemoteWrite, Write, Written, gql_error, object_of, row_value, scalar, type_name,
};
use crate::model::Table;
use crate::store::Tables;

/// Where the mutations of one table write.
pub(super) struct Target {
    /// The table's name.
    pub name: String,
    /// This peer's id, which owns the rows it writes.
    pub owner: String,
    /// This peer's table, when it has one.
    pub local: Option<(Arc<Tables>, Table)>,
    /// The other peers serving the table (peer id, federation group), and how to write there.
    pub remote: Option<(Vec<(String, String)>, RemoteWrite)>,
}

/// Where one write goes.
enum Place<'a> {
    Here(&'a Tables, &'a Table),
    There {
        peer: &'a str,
        group: &'a str,
        write: &'a RemoteWrite,
    },
}

impl Target {
    /// Where a write naming `peer` (or none) goes.
    fn place(&self, peer: Option<&str>) -> async_graphql::Result<Place<'_>> {
        let others = || match &self.remote {
            Some((sources, _)) if !sources.is_empty() => {
                let peers: Vec<&str> = sources.iter().map(|(p, _)| p.as_str()).collect();
                format!("the peers serving it: {}", peers.join(", "))
            }
            _ => "no other peer serves it".to_owned(),
        };
        match peer.filter(|p| *p != self.owner) {
            None => match &self.local {
                Some((store, table)) => Ok(Place::Here(store, table)),
                None => Err(async_graphql::Error::new(format!(
                    "table {} is not on this peer: name the peer to write to with `peer` ({})",
                    self.name,
                    others()
                ))),
            },
            Some(peer) => self
                .remote
                .as_ref()
                .and_then(|(sources, write)| {
                    sources
                        .iter()
                        .find(|(p, _)| p == peer)
                        .map(|(peer, group)| Place::There { peer, group, write })
                })
                .ok_or_else(|| {
                    async_graphql::Error::new(format!(
                        "peer {peer} does not serve table {} ({})",
                        self.name,
                        others()
                    ))
                }),
        }
    }

    /// Carries `write` out where `peer` (or none) says. A row written on another peer has
    /// `_peer` set to it.
    async fn write(&self, peer: Option<&str>, write: Write) -> async_graphql::Result<Written> {
        match self.place(peer)? {
            Place::Here(store, table) => match write {
                Write::Insert(values) => store
                    .insert(table, &self.owner, &values)
                    .map(Written::Row)
                    .map_err(gql_error),
                Write::Update(id, set) => match store.update(table, id, &set).map_err(gql_error)? {
                    Some(row) => Ok(Written::Row(row)),
                    None => Err(async_graphql::Error::new(format!("row {id} not found"))),
                },
                Write::Delete(id) => store
                    .delete(table, id)
                    .map(Written::Deleted)
                    .map_err(gql_error),
            },
            Place::There {
                peer,
                group,
                write: remote,
            } => {
                let written = remote(peer.to_owned(), group.to_owned(), self.name.clone(), write)
                    .await
                    .map_err(|error| async_graphql::Error::new(format!("peer {peer}: {error}")))?;
                Ok(match written {
                    Written::Row(mut row) => {
                        row.insert(PEER_FIELD.to_owned(), Value::String(peer.to_owned()));
                        Written::Row(row)
                    }
                    deleted @ Written::Deleted(_) => deleted,
                })
            }
        }
    }
}

/// The `peer` argument of a table other peers serve: optional when this peer has the table,
/// required when it does not. A table only this peer serves has none (Goop²'s signatures).
fn with_peer(field: Field, target: &Target) -> Field {
    if target.remote.is_none() {
        return field;
    }
    let ty = if target.local.is_some() {
        TypeRef::named(TypeRef::STRING)
    } else {
        TypeRef::named_nn(TypeRef::STRING)
    };
    field.argument(InputValue::new("peer", ty))
}

fn peer_of(ctx: &ResolverContext<'_>) -> async_graphql::Result<Option<String>> {
    ctx.args
        .get("peer")
        .map(|v| v.string().map(str::to_owned))
        .transpose()
}

/// The input types of `table`'s mutations (`T_insert_input`, `T_set_input`) and the type of a
/// delete's answer (`T_delete_result`).
pub(super) fn types(table: &Table) -> (InputObject, InputObject, Object) {
    let name = type_name(&table.name);
    let mut insert = InputObject::new(format!("{name}_insert_input"));
    let mut set = InputObject::new(format!("{name}_set_input"));
    for column in &table.columns {
        let required = (column.required || column.key) && !column.auto && column.default.is_none();
        let ty = if required {
            TypeRef::named_nn(scalar(column.kind))
        } else {
            TypeRef::named(scalar(column.kind))
        };
        insert = insert.field(InputValue::new(&column.name, ty));
        if !column.key {
            set = set.field(InputValue::new(
                &column.name,
                TypeRef::named(scalar(column.kind)),
            ));
        }
    }
    let deleted = Object::new(format!("{name}_delete_result")).field(Field::new(
        "affected_rows",
        TypeRef::named_nn(TypeRef::INT),
        |ctx| {
            FieldFuture::new(async move {
                let n = ctx.parent_value.try_downcast_ref::<usize>()?;
                Ok(Some(FieldValue::value(
                    i64::try_from(*n).unwrap_or(i64::MAX),
                )))
            })
        },
    ));
    (insert, set, deleted)
}

/// A written row as a field's value; a delete's count where a row was expected is an error.
fn row_of(written: Written) -> async_graphql::Result<Option<FieldValue<'static>>> {
    match written {
        Written::Row(row) => Ok(Some(row_value(row))),
        Written::Deleted(_) => Err(async_graphql::Error::new(
            "the peer answered a write with a delete count",
        )),
    }
}

/// The three mutation fields of `target`'s table.
pub(super) fn fields(target: Target) -> [Field; 3] {
    let name = type_name(&target.name);
    let target = Arc::new(target);
    let insert = {
        let target = target.clone();
        Field::new(
            format!("insert_{}", target.name),
            TypeRef::named(&name),
            move |ctx| {
                let target = target.clone();
                FieldFuture::new(async move {
                    let values = object_of(&ctx, "object")?;
                    let peer = peer_of(&ctx)?;
                    row_of(target.write(peer.as_deref(), Write::Insert(values)).await?)
                })
            },
        )
        .argument(InputValue::new(
            "object",
            TypeRef::named_nn(format!("{name}_insert_input")),
        ))
    };
    let update = {
        let target = target.clone();
        Field::new(
            format!("update_{}_by_pk", target.name),
            TypeRef::named(&name),
            move |ctx| {
                let target = target.clone();
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("_id")?.i64()?;
                    let set = object_of(&ctx, "_set")?;
                    let peer = peer_of(&ctx)?;
                    row_of(
                        target
                            .write(peer.as_deref(), Write::Update(id, set))
                            .await?,
                    )
                })
            },
        )
        .argument(InputValue::new("_id", TypeRef::named_nn(TypeRef::INT)))
        .argument(InputValue::new(
            "_set",
            TypeRef::named_nn(format!("{name}_set_input")),
        ))
    };
    let delete = {
        let target = target.clone();
        Field::new(
            format!("delete_{}_by_pk", target.name),
            TypeRef::named_nn(format!("{name}_delete_result")),
            move |ctx| {
                let target = target.clone();
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("_id")?.i64()?;
                    let peer = peer_of(&ctx)?;
                    match target.write(peer.as_deref(), Write::Delete(id)).await? {
                        Written::Deleted(n) => Ok(Some(FieldValue::owned_any(n))),
                        Written::Row(_) => Err(async_graphql::Error::new(
                            "the peer answered a delete with a row",
                        )),
                    }
                })
            },
        )
        .argument(InputValue::new("_id", TypeRef::named_nn(TypeRef::INT)))
    };
    [
        with_peer(insert, &target),
        with_peer(update, &target),
        with_peer(delete, &target),
    ]
}
