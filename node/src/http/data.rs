//! The data tables and their GraphQL engine: `/api/data/tables` (list, create, delete) and
//! `/api/graphql` (Goop²'s transport: always 200, with the GraphQL `data` and `errors`),
//! `/api/graphql/status` and `/api/graphql/rebuild`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use graphql::{DataError, Table};
use serde::{Deserialize, Serialize};

use super::api::JsonBody;
use super::groups::{Status, ok};
use super::{ApiError, AppState};

impl From<DataError> for ApiError {
    fn from(error: DataError) -> Self {
        let (status, code) = match &error {
            DataError::InvalidSchema(_)
            | DataError::UnknownColumn(_)
            | DataError::Missing(_)
            | DataError::InvalidValue { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            DataError::TableExists(_) | DataError::DuplicateKey { .. } => {
                (StatusCode::CONFLICT, "exists")
            }
            DataError::UnknownTable(_) => (StatusCode::NOT_FOUND, "not_found"),
            DataError::Sqlite(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        };
        Self::new(status, code, error.to_string())
    }
}

/// Runs SQLite work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?
        .map_err(ApiError::from)
}

/// `GET /api/data/tables`: every table's schema.
pub(crate) async fn tables(State(state): State<AppState>) -> Result<Json<Vec<Table>>, ApiError> {
    let data = state.data.clone();
    Ok(Json(blocking(move || data.list()).await?))
}

/// `POST /api/data/tables` with a table schema: creates it (served by GraphQL when its
/// `context` is true).
pub(crate) async fn create_table(
    State(state): State<AppState>,
    JsonBody(table): JsonBody<Table>,
) -> Result<Json<Status>, ApiError> {
    let data = state.data.clone();
    blocking(move || data.create(&table)).await?;
    Ok(ok("created"))
}

#[derive(Deserialize)]
pub(crate) struct NameBody {
    name: String,
}

/// `POST /api/data/tables/delete {name}`: deletes a table and its rows.
pub(crate) async fn delete_table(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Json<Status>, ApiError> {
    let data = state.data.clone();
    blocking(move || data.drop_table(&body.name)).await?;
    Ok(ok("deleted"))
}

/// `POST /api/graphql {query, variables?, operationName?}`.
pub(crate) async fn graphql(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<async_graphql::Request>,
) -> Json<async_graphql::Response> {
    Json(state.data.execute(request).await)
}

#[derive(Serialize)]
pub(crate) struct GraphqlStatus {
    enabled: bool,
    tables: Vec<String>,
}

/// `GET /api/graphql/status`: the tables served.
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<GraphqlStatus>, ApiError> {
    let data = state.data.clone();
    let tables = blocking(move || data.served()).await?;
    Ok(Json(GraphqlStatus {
        enabled: true,
        tables,
    }))
}

/// `POST /api/graphql/rebuild`.
pub(crate) async fn rebuild(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let data = state.data.clone();
    blocking(move || data.rebuild()).await?;
    Ok(ok("rebuilt"))
}
