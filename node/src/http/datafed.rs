//! The `/api/datafed/*` routes: Goop²'s paths and bodies (reference `goop2-handlers.md` §4.4),
//! with JSON errors whose code says why; an unknown group is an error, not a silent no-op.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use graphql::{Relationship, Row, Table};
use proto::PeerId;
use serde::{Deserialize, Serialize};

use super::api::JsonBody;
use super::groups::{group_id, missing, peer_id};
use super::{ApiError, AppState};
use crate::federation::{FederationError, Refusal, Write};

impl From<FederationError> for ApiError {
    fn from(error: FederationError) -> Self {
        let (status, code) = match &error {
            FederationError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
            FederationError::NoTables(_) => (StatusCode::BAD_REQUEST, "no_tables"),
            FederationError::LocalTables(_) => (StatusCode::BAD_REQUEST, "local_table"),
            FederationError::BadRelationship(_) => (StatusCode::BAD_REQUEST, "bad_relationship"),
            FederationError::Refused(refusal) => match refusal {
                Refusal::Denied(_) => (StatusCode::FORBIDDEN, "access_denied"),
                Refusal::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            },
            FederationError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "unreachable"),
            FederationError::Group(e) => {
                return super::groups::failed(StatusCode::INTERNAL_SERVER_ERROR, "datafed", e);
            }
            FederationError::Data(e) => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string());
            }
        };
        Self::new(status, code, error.to_string())
    }
}

#[derive(Serialize)]
pub(crate) struct GroupContributions {
    group_id: proto::GroupId,
    contributions: std::collections::BTreeMap<PeerId, Vec<String>>,
}

/// `GET /api/datafed/groups`: the federation groups this peer knows contributions to, with
/// the table names each peer offers.
pub(crate) async fn groups(State(state): State<AppState>) -> Json<Vec<GroupContributions>> {
    Json(
        state
            .federation
            .all()
            .into_iter()
            .map(|(group_id, by_peer)| GroupContributions {
                group_id,
                contributions: by_peer
                    .into_iter()
                    .map(|(peer, offer)| {
                        let names = offer.tables.into_iter().map(|t| t.name).collect();
                        (peer, names)
                    })
                    .collect(),
            })
            .collect(),
    )
}

#[derive(Deserialize)]
pub(crate) struct OfferBody {
    group_id: Option<String>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
pub(crate) struct Offered {
    status: &'static str,
    tables: usize,
}

/// `POST /api/datafed/offer {group_id, tables: [names]}`: offers this peer's context tables
/// of those names to a federation group it is in.
pub(crate) async fn offer(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<OfferBody>,
) -> Result<Json<Offered>, ApiError> {
    let group = group_id(body.group_id, "group_id required")?;
    if body.tables.is_empty() {
        return Err(ApiError::bad_request(
            "bad_request",
            "at least one table required",
        ));
    }
    let tables = state
        .federation
        .offer(group, &body.tables, body.relationships)
        .await?;
    Ok(Json(Offered {
        status: "offered",
        tables,
    }))
}

#[derive(Deserialize)]
pub(crate) struct GroupBody {
    group_id: Option<String>,
}

/// `POST /api/datafed/withdraw {group_id}`.
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<super::groups::Status>, ApiError> {
    let group = group_id(body.group_id, "group_id required")?;
    state.federation.withdraw(group).await?;
    Ok(super::groups::ok("withdrawn"))
}

#[derive(Serialize)]
pub(crate) struct Contribution {
    peer_id: PeerId,
    tables: Vec<Table>,
    relationships: Vec<Relationship>,
}

/// `POST /api/datafed/contributions {group_id}`: every peer's offered tables (`[]` for a group
/// nobody offered to).
pub(crate) async fn contributions(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Json<Vec<Contribution>>, ApiError> {
    let group = group_id(body.group_id, "group_id required")?;
    Ok(Json(
        state
            .federation
            .contributions(&group)
            .into_iter()
            .map(|(peer_id, offer)| Contribution {
                peer_id,
                tables: offer.tables,
                relationships: offer.relationships,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteBody {
    group_id: Option<String>,
    peer_id: Option<String>,
    table: Option<String>,
    /// The values to insert, or to set on an update.
    object: Option<graphql::Row>,
    /// The row to update or delete.
    #[serde(rename = "_id")]
    id: Option<i64>,
}

/// The parts every write names: the group, the peer whose table it is, the table.
fn write_target(body: &WriteBody) -> Result<(proto::GroupId, PeerId, String), ApiError> {
    let group = group_id(body.group_id.clone(), "group_id required")?;
    let peer = peer_id(body.peer_id.clone(), "peer_id required")?;
    let table = body.table.clone().filter(|t| !t.is_empty());
    Ok((group, peer, required(table, "table required")?))
}

fn required<T>(value: Option<T>, message: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| missing(message))
}

/// Runs a write and answers the row written.
async fn write_one(state: &AppState, body: WriteBody, write: Write) -> Result<Json<Row>, ApiError> {
    let (group, peer, table) = write_target(&body)?;
    let (rows, _) = state.federation.write(group, &peer, table, write).await?;
    rows.into_iter().next().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "unreachable",
            format!("peer {peer} answered no row"),
        )
    })
}

/// `POST /api/datafed/insert {group_id, peer_id, table, object}`: adds a row to a table a
/// peer offers to the group, as that table's insert policy allows; the row is the asking
/// peer's (`_owner`). The stored row.
pub(crate) async fn insert(
    State(state): State<AppState>,
    JsonBody(mut body): JsonBody<WriteBody>,
) -> Result<Json<Row>, ApiError> {
    let object = required(body.object.take(), "object required")?;
    write_one(&state, body, Write::Insert(object)).await
}

/// `POST /api/datafed/update {group_id, peer_id, table, _id, object}`: sets columns of a row,
/// as the table's update policy allows (outside `open`, only a row the asking peer owns).
pub(crate) async fn update(
    State(state): State<AppState>,
    JsonBody(mut body): JsonBody<WriteBody>,
) -> Result<Json<Row>, ApiError> {
    let set = required(body.object.take(), "object required")?;
    let id = required(body.id, "_id required")?;
    write_one(&state, body, Write::Update(id, set)).await
}

#[derive(Serialize)]
pub(crate) struct Deleted {
    affected_rows: usize,
}

/// `POST /api/datafed/delete {group_id, peer_id, table, _id}`: deletes a row, as the table's
/// delete policy allows (outside `open`, only a row the asking peer owns).
pub(crate) async fn delete(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<WriteBody>,
) -> Result<Json<Deleted>, ApiError> {
    let id = required(body.id, "_id required")?;
    let (group, peer, table) = write_target(&body)?;
    let (_, affected) = state
        .federation
        .write(group, &peer, table, Write::Delete(id))
        .await?;
    Ok(Json(Deleted {
        affected_rows: affected.unwrap_or(0),
    }))
}
