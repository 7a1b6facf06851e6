//! The data tables and their GraphQL engine: `/api/data/tables` (list, create, delete) and
//! `/api/graphql` (Goop²'s transport: always 200, with the GraphQL `data` and `errors`),
//! `/api/graphql/status`, `/api/graphql/rebuild` and `/api/graphql/schema` (the SDL a table
//! would be served with).

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

/// What `/api/data/tables/update` may change; what is left out stays.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    name: String,
    context: Option<bool>,
    /// `null` takes the defaults again.
    #[serde(default, with = "serde_with_null")]
    access: Option<Option<graphql::model::Access>>,
    roles: Option<std::collections::BTreeMap<String, graphql::model::RoleRights>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// `POST /api/data/tables/update {name, context?, access?, roles?}`: changes whether a table
/// is served and what other peers may do with it; its columns and rows stay.
pub(crate) async fn update_table(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<Table>, ApiError> {
    let data = state.data.clone();
    let table = blocking(move || {
        data.update_table(&body.name, |table| {
            if let Some(context) = body.context {
                table.context = context;
            }
            if let Some(access) = body.access {
                table.access = access;
            }
            if let Some(roles) = body.roles {
                table.roles = roles;
            }
        })
    })
    .await?;
    Ok(Json(table))
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

#[derive(Serialize)]
pub(crate) struct Sdl {
    sdl: String,
    html: String,
}

/// `POST /api/graphql/schema` with a table schema: the GraphQL SDL it would be served with,
/// as text and as HTML (escaped, in a `<pre>`). Nothing is created.
pub(crate) async fn schema(
    State(state): State<AppState>,
    JsonBody(table): JsonBody<serde_json::Value>,
) -> Result<Json<Sdl>, ApiError> {
    let named = table
        .get("name")
        .is_some_and(|n| n.as_str().is_some_and(|n| !n.is_empty()));
    if !named || table.get("columns").is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name and columns required",
        ));
    }
    let table: Table = serde_json::from_value(table).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid schema: {e}"),
        )
    })?;
    let data = state.data.clone();
    let sdl = blocking(move || data.sdl(&table)).await?;
    let html = format!("<pre class=\"graphql-sdl\">{}</pre>", escape_html(&sdl));
    Ok(Json(Sdl { sdl, html }))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_escaping_leaves_no_markup() {
        assert_eq!(
            super::escape_html(r#"a<b> & "c""#),
            "a&lt;b&gt; &amp; &quot;c&quot;"
        );
    }
}
