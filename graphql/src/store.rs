//! Data tables in the peer's SQLite database: `data_<name>`, with the system columns `_id`,
//! `_owner`, `_created_at` and `_updated_at`, and their schemas in `data_schemas`.
//!
//! The physical name carries a prefix, so no user table can be one of goop's own. Every value
//! goes to SQLite as a bound parameter, and every column name used in SQL comes from the
//! table's checked schema, never from the caller.

use std::sync::Mutex;

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::Value;

use crate::DataError;
use crate::model::{Column, ColumnType, Table};

/// A row: column name to value.
pub type Row = serde_json::Map<String, Value>;

/// The system columns, in order, and their types.
pub const SYSTEM_COLUMNS: [(&str, ColumnType); 4] = [
    ("_id", ColumnType::Integer),
    ("_owner", ColumnType::Text),
    ("_created_at", ColumnType::Datetime),
    ("_updated_at", ColumnType::Datetime),
];

/// The stored schema of table `name`.
fn schema_of(conn: &Connection, name: &str) -> Result<Table, DataError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT schema FROM data_schemas WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    let text = text.ok_or_else(|| DataError::UnknownTable(name.to_owned()))?;
    serde_json::from_str(&text).map_err(|e| DataError::InvalidSchema(e.to_string()))
}

/// The names of a table's key columns.
fn key_columns(table: &Table) -> Vec<&str> {
    table
        .columns
        .iter()
        .filter(|c| c.key)
        .map(|c| c.name.as_str())
        .collect()
}

/// A unique-key violation as [`DataError::DuplicateKey`], any other error as it is.
fn duplicate_key(table: &Table, error: rusqlite::Error) -> DataError {
    match &error {
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            DataError::DuplicateKey {
                table: table.name.clone(),
                columns: key_columns(table).join(", "),
            }
        }
        _ => DataError::Sqlite(error),
    }
}

/// Whether `name` is one of [`SYSTEM_COLUMNS`].
pub fn is_system_column(name: &str) -> bool {
    SYSTEM_COLUMNS.iter().any(|(n, _)| *n == name)
}

/// A comparison in a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `=`.
    Eq,
    /// `<>`.
    Neq,
    /// `>`.
    Gt,
    /// `>=`.
    Gte,
    /// `<`.
    Lt,
    /// `<=`.
    Lte,
    /// `LIKE`.
    Like,
    /// `IN (...)`: the value is a list of at most [`MAX_IN`] scalars, each bound as a parameter.
    In,
}

/// The most values an [`Op::In`] filter takes: a longer list is refused, not cut.
pub const MAX_IN: usize = 1_000;

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Neq => "<>",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Like => "LIKE",
            Self::In => "IN",
        }
    }
}

/// What to read: filters (all must hold), an order (in the order given), and a page.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Find {
    /// Column, comparison, value.
    pub filters: Vec<(String, Op, Value)>,
    /// Column and whether descending.
    pub order: Vec<(String, bool)>,
    /// At most this many rows.
    pub limit: Option<u32>,
    /// Rows skipped first.
    #[serde(default)]
    pub offset: u32,
}

/// The data tables of a peer.
pub struct Tables {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

fn physical(name: &str) -> String {
    format!("\"data_{name}\"")
}

fn quoted(column: &str) -> String {
    format!("\"{column}\"")
}

/// The type of a system or user column of `table`.
fn kind_of(table: &Table, column: &str) -> Option<ColumnType> {
    SYSTEM_COLUMNS
        .iter()
        .find(|(name, _)| *name == column)
        .map(|(_, kind)| *kind)
        .or_else(|| table.column(column).map(|c| c.kind))
}

/// Checks that `value` fits `column`.
pub fn check_value(column: &Column, value: &Value) -> Result<(), DataError> {
    let fits = match column.kind {
        ColumnType::Integer => value.is_i64(),
        ColumnType::Real => value.is_number(),
        ColumnType::Enum => value
            .as_str()
            .is_some_and(|v| column.values.iter().any(|e| e.key == v)),
        _ => value.is_string(),
    };
    if value.is_null() || fits {
        Ok(())
    } else {
        Err(DataError::InvalidValue {
            column: column.name.clone(),
            reason: match column.kind {
                ColumnType::Enum => format!(
                    "{value} is not one of {:?}",
                    column.values.iter().map(|e| &e.key).collect::<Vec<_>>()
                ),
                kind => format!(
                    "{value} is not {}",
                    serde_json::to_string(&kind).unwrap_or_default()
                ),
            },
        })
    }
}

fn to_sql(value: &Value) -> Sql {
    match value {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(Sql::Integer)
            .unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

/// The values of an [`Op::In`] filter on `column`: a list of at most [`MAX_IN`] scalars (an
/// empty list matches no row). It may come from another peer, so anything else is refused.
fn in_values<'a>(column: &str, value: &'a Value) -> Result<&'a [Value], DataError> {
    let invalid = |reason: String| DataError::InvalidValue {
        column: column.to_owned(),
        reason,
    };
    let Value::Array(values) = value else {
        return Err(invalid(format!("IN takes a list of values, not {value}")));
    };
    if values.len() > MAX_IN {
        return Err(invalid(format!(
            "IN takes at most {MAX_IN} values, not {}",
            values.len()
        )));
    }
    if values.iter().any(|v| v.is_array() || v.is_object()) {
        return Err(invalid("IN takes a list of scalar values".to_owned()));
    }
    Ok(values)
}

fn from_sql(value: Sql) -> Value {
    match value {
        Sql::Null => Value::Null,
        Sql::Integer(i) => Value::from(i),
        Sql::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Sql::Text(s) => Value::String(s),
        Sql::Blob(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    proto::Timestamp::from_unix_ms(ms).to_string()
}

fn uuid_v4() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl Tables {
    /// Opens the tables in the database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, DataError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS data_schemas (
                name TEXT PRIMARY KEY, schema TEXT NOT NULL)",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every table's schema, by name.
    pub fn list(&self) -> Result<Vec<Table>, DataError> {
        let conn = self.conn();
        let mut select = conn.prepare("SELECT schema FROM data_schemas ORDER BY name")?;
        let rows = select.query_map([], |r| r.get::<_, String>(0))?;
        let mut tables = Vec::new();
        for row in rows {
            let text = row?;
            match serde_json::from_str::<Table>(&text) {
                Ok(table) => tables.push(table),
                Err(error) => tracing::warn!(%error, "skipping a data schema that cannot be read"),
            }
        }
        Ok(tables)
    }

    /// The schema of one table.
    pub fn table(&self, name: &str) -> Result<Table, DataError> {
        schema_of(&self.conn(), name)
    }

    /// Creates a table, unless a name it would generate in the GraphQL schema is reserved or
    /// generated by another table (see [`crate::engine::generated_names`]).
    pub fn create(&self, table: &Table) -> Result<(), DataError> {
        table.validate()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM data_schemas WHERE name = ?1)",
            [&table.name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(DataError::TableExists(table.name.clone()));
        }
        // Checked against every table, in context or not: one may be put in context later.
        let others: Vec<String> = tx
            .prepare("SELECT name FROM data_schemas")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if let Some(clash) = crate::engine::clash(&table.name, others.iter().map(String::as_str)) {
            return Err(DataError::InvalidSchema(clash));
        }
        let mut columns = vec![
            "\"_id\" INTEGER PRIMARY KEY AUTOINCREMENT".to_owned(),
            "\"_owner\" TEXT NOT NULL".to_owned(),
            "\"_created_at\" TEXT NOT NULL".to_owned(),
            "\"_updated_at\" TEXT NOT NULL".to_owned(),
        ];
        for c in &table.columns {
            columns.push(format!("{} {}", quoted(&c.name), c.kind.sql()));
        }
        // The key is unique: two rows with the same key would be one row twice to every
        // reader (and to a federation's merge).
        let keys = key_columns(table);
        if !keys.is_empty() {
            columns.push(format!(
                "UNIQUE ({})",
                keys.iter()
                    .map(|k| quoted(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        tx.execute_batch(&format!(
            "CREATE TABLE {} ({})",
            physical(&table.name),
            columns.join(", ")
        ))?;
        let schema =
            serde_json::to_string(table).map_err(|e| DataError::InvalidSchema(e.to_string()))?;
        tx.execute(
            "INSERT INTO data_schemas (name, schema) VALUES (?1, ?2)",
            [&table.name, &schema],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Changes what a table's schema says beyond its columns (whether it is served, its
    /// policies and roles), as `change` does it; the columns and the rows stay. The new schema.
    pub fn update_schema(
        &self,
        name: &str,
        change: impl FnOnce(&mut Table),
    ) -> Result<Table, DataError> {
        // One connection lock around the read and the write: two changes cannot cross.
        let conn = self.conn();
        let mut table = schema_of(&conn, name)?;
        let shape = |t: &Table| (t.name.clone(), t.columns.clone(), t.system_key);
        let before = shape(&table);
        change(&mut table);
        if shape(&table) != before {
            return Err(DataError::InvalidSchema(
                "a table's name, columns and key cannot change".into(),
            ));
        }
        table.validate()?;
        let schema =
            serde_json::to_string(&table).map_err(|e| DataError::InvalidSchema(e.to_string()))?;
        conn.execute(
            "UPDATE data_schemas SET schema = ?2 WHERE name = ?1",
            [name, &schema],
        )?;
        Ok(table)
    }

    /// Deletes a table with its rows.
    pub fn drop_table(&self, name: &str) -> Result<(), DataError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM data_schemas WHERE name = ?1", [name])? == 0 {
            return Err(DataError::UnknownTable(name.to_owned()));
        }
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", physical(name)))?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts a row owned by `owner`: missing `auto` columns are filled in, missing ones
    /// with a default take it, and required ones must be there.
    pub fn insert(&self, table: &Table, owner: &str, values: &Row) -> Result<Row, DataError> {
        for name in values.keys() {
            if table.column(name).is_none() {
                return Err(DataError::UnknownColumn(name.clone()));
            }
        }
        let conn = self.conn();
        let stamp = now();
        let mut names = vec![
            "\"_owner\"".to_owned(),
            "\"_created_at\"".to_owned(),
            "\"_updated_at\"".to_owned(),
        ];
        let mut args = vec![
            Sql::Text(owner.to_owned()),
            Sql::Text(stamp.clone()),
            Sql::Text(stamp.clone()),
        ];
        for column in &table.columns {
            let given = values.get(&column.name).filter(|v| !v.is_null());
            let value = match given {
                Some(value) => value.clone(),
                None if column.auto => match column.kind {
                    ColumnType::Guid => Value::String(uuid_v4()),
                    ColumnType::Datetime => Value::String(stamp.clone()),
                    ColumnType::Date => Value::String(stamp[..10].to_owned()),
                    ColumnType::Time => Value::String(stamp[11..19].to_owned()),
                    ColumnType::Integer => {
                        let next: i64 = conn.query_row(
                            &format!(
                                "SELECT COALESCE(MAX({}), 0) + 1 FROM {}",
                                quoted(&column.name),
                                physical(&table.name)
                            ),
                            [],
                            |r| r.get(0),
                        )?;
                        Value::from(next)
                    }
                    _ => Value::Null,
                },
                None => match &column.default {
                    Some(default) => default.clone(),
                    None if column.required || column.key => {
                        return Err(DataError::Missing(column.name.clone()));
                    }
                    None => Value::Null,
                },
            };
            check_value(column, &value)?;
            names.push(quoted(&column.name));
            args.push(to_sql(&value));
        }
        let marks = vec!["?"; args.len()].join(", ");
        conn.execute(
            &format!(
                "INSERT INTO {} ({}) VALUES ({marks})",
                physical(&table.name),
                names.join(", ")
            ),
            params_from_iter(args),
        )
        .map_err(|e| duplicate_key(table, e))?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.get(table, id)?
            .ok_or_else(|| DataError::UnknownTable(table.name.clone()))
    }

    /// Sets the given non-key columns of row `id`; `None` when there is no such row.
    pub fn update(&self, table: &Table, id: i64, set: &Row) -> Result<Option<Row>, DataError> {
        let mut names = vec!["\"_updated_at\" = ?".to_owned()];
        let mut args = vec![Sql::Text(now())];
        for (name, value) in set {
            let column = table
                .column(name)
                .filter(|c| !c.key)
                .ok_or_else(|| DataError::UnknownColumn(name.clone()))?;
            check_value(column, value)?;
            names.push(format!("{} = ?", quoted(name)));
            args.push(to_sql(value));
        }
        args.push(Sql::Integer(id));
        let changed = self.conn().execute(
            &format!(
                "UPDATE {} SET {} WHERE \"_id\" = ?",
                physical(&table.name),
                names.join(", ")
            ),
            params_from_iter(args),
        )?;
        if changed == 0 {
            return Ok(None);
        }
        self.get(table, id)
    }

    /// Deletes row `id`; how many rows went (0 or 1).
    pub fn delete(&self, table: &Table, id: i64) -> Result<usize, DataError> {
        Ok(self.conn().execute(
            &format!("DELETE FROM {} WHERE \"_id\" = ?1", physical(&table.name)),
            [id],
        )?)
    }

    /// Row `id`.
    pub fn get(&self, table: &Table, id: i64) -> Result<Option<Row>, DataError> {
        let find = Find {
            filters: vec![("_id".to_owned(), Op::Eq, Value::from(id))],
            limit: Some(1),
            ..Find::default()
        };
        Ok(self.find(table, &find)?.into_iter().next())
    }

    /// The rows that pass every filter, in the order asked (then by `_id`).
    pub fn find(&self, table: &Table, find: &Find) -> Result<Vec<Row>, DataError> {
        let mut columns: Vec<(String, ColumnType)> = SYSTEM_COLUMNS
            .iter()
            .map(|(n, k)| ((*n).to_owned(), *k))
            .collect();
        columns.extend(table.columns.iter().map(|c| (c.name.clone(), c.kind)));
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        for (column, op, value) in &find.filters {
            let kind =
                kind_of(table, column).ok_or_else(|| DataError::UnknownColumn(column.clone()))?;
            if (matches!(op, Op::Gt | Op::Gte | Op::Lt | Op::Lte) && !kind.ordered())
                || (*op == Op::Like && !kind.textual())
            {
                return Err(DataError::InvalidValue {
                    column: column.clone(),
                    reason: format!("cannot be compared with {}", op.sql()),
                });
            }
            if *op == Op::In {
                let values = in_values(column, value)?;
                conditions.push(format!(
                    "{} IN ({})",
                    quoted(column),
                    vec!["?"; values.len()].join(", ")
                ));
                args.extend(values.iter().map(to_sql));
                continue;
            }
            conditions.push(format!("{} {} ?", quoted(column), op.sql()));
            args.push(to_sql(value));
        }
        let mut order = Vec::new();
        for (column, desc) in &find.order {
            kind_of(table, column).ok_or_else(|| DataError::UnknownColumn(column.clone()))?;
            order.push(format!(
                "{} {}",
                quoted(column),
                if *desc { "DESC" } else { "ASC" }
            ));
        }
        order.push("\"_id\" ASC".to_owned());
        let mut sql = format!(
            "SELECT {} FROM {}",
            columns
                .iter()
                .map(|(n, _)| quoted(n))
                .collect::<Vec<_>>()
                .join(", "),
            physical(&table.name)
        );
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        // An offset without a limit still applies (-1: no limit).
        sql.push_str(&format!(
            " LIMIT {} OFFSET {}",
            find.limit.map_or(-1, i64::from),
            find.offset
        ));
        let conn = self.conn();
        let mut select = conn.prepare(&sql)?;
        let rows = select.query_map(params_from_iter(args), |r| {
            let mut row = Row::new();
            for (i, (name, _)) in columns.iter().enumerate() {
                row.insert(name.clone(), from_sql(r.get::<_, Sql>(i)?));
            }
            Ok(row)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
