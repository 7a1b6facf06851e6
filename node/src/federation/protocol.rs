//! The query stream of `/goop/data/1.0.0`: one request line each way. A peer answers reads
//! of the tables it offered and applies writes to them, under each table's policies
//! (`graphql::Table::scope`), for members of the group only.

use std::time::Duration;

use futures::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use graphql::model::{Operation, Scope};
use graphql::store::{Find, Op};
use graphql::{Row, Table};
use proto::{GroupId, PeerId};
use serde::{Deserialize, Serialize};

use super::{
    ANSWER_MAX, Federation, FederationError, MAX_ROWS, PROTOCOL, QUERY_TIMEOUT, REQUEST_MAX,
};

/// Why a peer refused a request on the query stream; the kind travels as the answer's `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Not a member, not offered, or not what the table's policy allows.
    #[error("{0}")]
    Denied(String),
    /// No such row (of the asker's, where it may touch its own rows only).
    #[error("{0}")]
    NotFound(String),
    /// The request breaks a rule (a missing value, an unknown column, a bad request).
    #[error("{0}")]
    Invalid(String),
}

impl Refusal {
    fn code(&self) -> &'static str {
        match self {
            Self::Denied(_) => "access_denied",
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid_request",
        }
    }

    fn from_code(code: Option<&str>, message: String) -> Self {
        match code {
            Some("access_denied") => Self::Denied(message),
            Some("not_found") => Self::NotFound(message),
            _ => Self::Invalid(message),
        }
    }

    fn invalid(error: impl std::fmt::Display) -> Self {
        Self::Invalid(error.to_string())
    }

    fn no_row(id: i64) -> Self {
        Self::NotFound(format!(
            "row {id} not found or not owned by the asking peer"
        ))
    }
}

/// How asking another peer failed.
#[derive(Debug)]
enum Asked {
    /// It answered no.
    Refused(Refusal),
    /// No answer: it could not be reached, or broke the protocol.
    Failed(String),
}

impl From<String> for Asked {
    fn from(error: String) -> Self {
        Self::Failed(error)
    }
}

/// One request on the query stream: a read (`find`), or a write to a row.
#[derive(Serialize, Deserialize)]
struct Query {
    group_id: GroupId,
    table: String,
    #[serde(default, skip_serializing_if = "DataOp::is_query")]
    op: DataOp,
    #[serde(default)]
    find: Find,
    /// The values of an insert, or those an update sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<Row>,
    /// The row an update or a delete is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
}

/// What a request on the query stream does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DataOp {
    /// Reads rows.
    #[default]
    Query,
    /// Adds a row, owned by the asking peer.
    Insert,
    /// Sets columns of a row.
    Update,
    /// Deletes a row.
    Delete,
}

impl DataOp {
    fn is_query(&self) -> bool {
        *self == Self::Query
    }
}

/// A write to one row of another peer's table (or this peer's own): the GraphQL engine's, so
/// its mutations and the `/api/datafed` write routes carry the same thing.
pub(crate) use graphql::engine::Write;

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    /// The rows read, or the row written (none for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows: Option<Vec<Row>>,
    /// The rows a delete deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    affected: Option<usize>,
    /// Why it was refused: `access_denied`, `not_found` or `invalid_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Federation {
    /// Asks `peer` for rows.
    pub(super) async fn ask(
        &self,
        peer: &PeerId,
        group_id: GroupId,
        table: String,
        find: Find,
    ) -> Result<Vec<Row>, String> {
        let query = Query {
            group_id,
            table,
            op: DataOp::Query,
            find,
            object: None,
            id: None,
        };
        match self.request(peer, &query).await {
            Ok((rows, _)) => Ok(rows),
            Err(Asked::Refused(refusal)) => Err(refusal.to_string()),
            Err(Asked::Failed(error)) => Err(error),
        }
    }

    /// Sends one request to `peer` and reads its answer: the rows, and what a delete deleted.
    async fn request(
        &self,
        peer: &PeerId,
        query: &Query,
    ) -> Result<(Vec<Row>, Option<usize>), Asked> {
        self.exchange(peer, query).await?.map_err(Asked::Refused)
    }

    /// The answer of `peer` to one request; the outer error is a failure to get one.
    async fn exchange(
        &self,
        peer: &PeerId,
        query: &Query,
    ) -> Result<Result<(Vec<Row>, Option<usize>), Refusal>, Asked> {
        let to = groups::net::proto_to_peer(peer).map_err(|e| e.to_string())?;
        self.inner
            .node
            .connect(to)
            .await
            .map_err(|e| e.to_string())?;
        let mut control = self.inner.node.stream_control();
        let mut stream = control
            .open_stream(to, libp2p::StreamProtocol::new(PROTOCOL))
            .await
            .map_err(|e| e.to_string())?;
        let mut line = serde_json::to_vec(query).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        (&mut reader)
            .take(ANSWER_MAX)
            .read_line(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let answer: Answer =
            serde_json::from_str(&answer).map_err(|e| format!("bad answer: {e}"))?;
        Ok(match answer {
            Answer {
                ok: true,
                rows: Some(rows),
                affected,
                ..
            } => Ok((rows, affected)),
            Answer { error, code, .. } => Err(Refusal::from_code(
                code.as_deref(),
                error.unwrap_or_else(|| "refused".into()),
            )),
        })
    }

    /// Answers one query from `peer`.
    pub(super) async fn serve(
        &self,
        peer: &PeerId,
        stream: libp2p::Stream,
    ) -> Result<(), std::io::Error> {
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            (&mut stream).take(REQUEST_MAX).read_line(&mut line),
        )
        .await
        .map_err(|_| std::io::Error::other("no request in time"))??;
        let answer = match self.answer(peer, &line).await {
            Ok((rows, affected)) => Answer {
                ok: true,
                rows: Some(rows),
                affected,
                code: None,
                error: None,
            },
            Err(refusal) => Answer {
                ok: false,
                rows: None,
                affected: None,
                code: Some(refusal.code().to_owned()),
                error: Some(refusal.to_string()),
            },
        };
        let mut out = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
        out.push(b'\n');
        let stream = stream.get_mut();
        stream.write_all(&out).await?;
        stream.flush().await?;
        stream.close().await
    }

    /// Answers a request from `peer`: only members of the group, only for tables this peer
    /// offered there, and only what the table's policy for the operation lets the asker's role
    /// do (`graphql::Table::scope`). The rows read or written, and what a delete deleted.
    async fn answer(
        &self,
        peer: &PeerId,
        line: &str,
    ) -> Result<(Vec<Row>, Option<usize>), Refusal> {
        let query: Query =
            serde_json::from_str(line).map_err(|_| Refusal::invalid("bad request"))?;
        let offered = self.offers(&query.group_id, &query.table);
        let role = self.role_of(&query.group_id, peer).await;
        let (true, Some(role)) = (offered, role) else {
            tracing::warn!(group = %query.group_id, %peer, table = %query.table, "refusing a data request");
            return Err(Refusal::Denied("access denied".into()));
        };
        let op = match (query.op, query.object, query.id) {
            (DataOp::Query, _, _) => None,
            (DataOp::Insert, Some(object), _) => Some(Write::Insert(object)),
            (DataOp::Update, Some(set), Some(id)) => Some(Write::Update(id, set)),
            (DataOp::Delete, _, Some(id)) => Some(Write::Delete(id)),
            _ => {
                return Err(Refusal::invalid(
                    "bad request: a write needs its object and row id",
                ));
            }
        };
        let (data, asker) = (self.inner.data.clone(), peer.to_string());
        let mut find = query.find;
        find.limit = Some(find.limit.unwrap_or(MAX_ROWS).min(MAX_ROWS));
        let table = query.table;
        tokio::task::spawn_blocking(move || {
            let tables = data.tables();
            let table = tables.table(&table).map_err(Refusal::invalid)?;
            let Some(write) = op else {
                if table
                    .scope(Operation::Read, &role)
                    .map_err(Refusal::Denied)?
                    == Scope::Own
                {
                    let owner = serde_json::Value::String(asker);
                    find.filters.push(("_owner".into(), Op::Eq, owner));
                }
                let rows = tables.find(&table, &find).map_err(Refusal::invalid)?;
                return Ok((rows, None));
            };
            let operation = match write {
                Write::Insert(_) => Operation::Insert,
                Write::Update(..) => Operation::Update,
                Write::Delete(_) => Operation::Delete,
            };
            let scope = table.scope(operation, &role).map_err(Refusal::Denied)?;
            write_row(tables, &table, &asker, scope, write)
        })
        .await
        .map_err(Refusal::invalid)?
    }

    /// Writes one row of a table `peer` offers to federation group `group`: another peer's
    /// under its policies, or this peer's own (which it may always write).
    pub(crate) async fn write(
        &self,
        group: GroupId,
        peer: &PeerId,
        table: String,
        write: Write,
    ) -> Result<(Vec<Row>, Option<usize>), FederationError> {
        self.check_group(&group).await?;
        if peer == &self.inner.me {
            let (data, me) = (self.inner.data.clone(), self.inner.me.to_string());
            return tokio::task::spawn_blocking(move || {
                let tables = data.tables();
                let table = tables.table(&table)?;
                write_row(tables, &table, &me, Scope::All, write).map_err(FederationError::Refused)
            })
            .await
            .map_err(|e| FederationError::Unreachable(e.to_string()))?;
        }
        let (op, object, id) = match write {
            Write::Insert(object) => (DataOp::Insert, Some(object), None),
            Write::Update(id, set) => (DataOp::Update, Some(set), Some(id)),
            Write::Delete(id) => (DataOp::Delete, None, Some(id)),
        };
        let query = Query {
            group_id: group,
            table,
            op,
            find: Find::default(),
            object,
            id,
        };
        let answer = tokio::time::timeout(QUERY_TIMEOUT, self.request(peer, &query))
            .await
            .map_err(|_| FederationError::Unreachable(format!("peer {peer}: no answer in time")))?;
        answer.map_err(|asked| match asked {
            Asked::Refused(refusal) => FederationError::Refused(refusal),
            Asked::Failed(error) => FederationError::Unreachable(format!("peer {peer}: {error}")),
        })
    }

    /// `peer`'s role in federation group `group` as this peer knows it (`owner` for the
    /// host); `None` when it is not in the group.
    async fn role_of(&self, group: &GroupId, peer: &PeerId) -> Option<String> {
        let host = self.check_group(group).await.ok()?;
        if &host == peer {
            return Some(proto::OWNER_ROLE.to_owned());
        }
        let members = self.inner.groups.members(group.clone()).await.ok()?;
        members
            .into_iter()
            .find(|m| &m.peer_id == peer)
            .map(|m| m.role)
    }
}

/// Writes one row of `table` for `asker`, within `scope`: an insert is owned by the asker; an
/// update or a delete in [`Scope::Own`] touches only a row the asker owns. The row written (none
/// for a delete), and what a delete deleted.
fn write_row(
    tables: &graphql::Tables,
    table: &Table,
    asker: &str,
    scope: Scope,
    write: Write,
) -> Result<(Vec<Row>, Option<usize>), Refusal> {
    let owns = |id: i64| -> Result<(), Refusal> {
        let row = tables.get(table, id).map_err(Refusal::invalid)?;
        let mine = row.is_some_and(|r| r.get("_owner").and_then(|o| o.as_str()) == Some(asker));
        if scope == Scope::All || mine {
            Ok(())
        } else {
            Err(Refusal::no_row(id))
        }
    };
    match write {
        Write::Insert(values) => {
            let row = tables
                .insert(table, asker, &values)
                .map_err(Refusal::invalid)?;
            Ok((vec![row], None))
        }
        Write::Update(id, set) => {
            owns(id)?;
            match tables.update(table, id, &set).map_err(Refusal::invalid)? {
                Some(row) => Ok((vec![row], None)),
                None => Err(Refusal::no_row(id)),
            }
        }
        Write::Delete(id) => {
            owns(id)?;
            let deleted = tables.delete(table, id).map_err(Refusal::invalid)?;
            Ok((Vec::new(), Some(deleted)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_filter_travels_as_a_list_of_values() {
        let query = Query {
            group_id: "0123456789abcdef".parse().unwrap(),
            table: "notes".into(),
            op: DataOp::Query,
            find: Find {
                filters: vec![("stars".into(), Op::In, serde_json::json!([4, 2]))],
                ..Find::default()
            },
            object: None,
            id: None,
        };
        let line = serde_json::to_string(&query).unwrap();
        assert!(line.contains(r#"["stars","in",[4,2]]"#), "{line}");
        let back: Query = serde_json::from_str(&line).unwrap();
        assert_eq!(back.find.filters, query.find.filters);
        // An operator this peer does not know is a bad request, answered, not a panic.
        let unknown = line.replace(r#""in""#, r#""in; drop table""#);
        assert!(serde_json::from_str::<Query>(&unknown).is_err());
    }
}
