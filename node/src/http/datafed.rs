//! The `/api/datafed/*` routes: Goop²'s paths and bodies (reference `goop2-handlers.md` §4.4),
//! with JSON errors whose code says why; an unknown group is an error, not a silent no-op.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use graphql::{Relationship, Table};
use proto::PeerId;
use serde::{Deserialize, Serialize};

use super::api::JsonBody;
use super::groups::group_id;
use super::{ApiError, AppState};
use crate::federation::FederationError;

impl From<FederationError> for ApiError {
    fn from(error: FederationError) -> Self {
        let (status, code) = match &error {
            FederationError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
            FederationError::NoTables(_) => (StatusCode::BAD_REQUEST, "no_tables"),
            FederationError::LocalTables(_) => (StatusCode::BAD_REQUEST, "local_table"),
            FederationError::BadRelationship(_) => (StatusCode::BAD_REQUEST, "bad_relationship"),
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
