//! The schema of a data table: its columns and their types, as JSON (Goop²'s shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::DataError;

/// The longest table or column name.
pub const MAX_NAME_CHARS: usize = 64;

/// A table's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Its name: a letter, then letters, digits and `_` (so never GraphQL's reserved `__`).
    pub name: String,
    /// Its columns, besides the system ones (`_id`, `_owner`, `_created_at`, `_updated_at`).
    pub columns: Vec<Column>,
    /// Served through GraphQL.
    #[serde(default)]
    pub context: bool,
    /// The row id is the key: no column needs to be one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub system_key: bool,
    /// What other peers may do with the rows; unset operations take [`Access`]'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// For operations whose policy is `group`: what each role (in the group the request comes
    /// through) may do. `owner` may do everything; a role not named here, nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleRights>,
}

/// Who among other peers may do an operation on a table's rows. The peer that has the table
/// may always do everything with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Nobody else: the table is never offered to a federation.
    Local,
    /// Only on the rows the asking peer owns (`_owner`).
    Owner,
    /// Whoever's role, in the group the request comes through, allows it (see
    /// [`Table::roles`]).
    Group,
    /// Every member of the group the request comes through, on every row.
    Open,
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match name.as_str() {
            "local" => Self::Local,
            "owner" => Self::Owner,
            "group" => Self::Group,
            "open" => Self::Open,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown access policy {name:?}: expected local, owner, group or open"
                )));
            }
        })
    }
}

/// A table's policy per operation (Goop²'s `access`); an operation left out, or given as
/// `""`, takes its default: `open` to read, `owner` to insert, update and delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Reading rows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "policy"
    )]
    pub read: Option<Policy>,
    /// Adding rows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "policy"
    )]
    pub insert: Option<Policy>,
    /// Changing rows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "policy"
    )]
    pub update: Option<Policy>,
    /// Deleting rows.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "policy"
    )]
    pub delete: Option<Policy>,
}

/// `""` or `null` is no policy given.
fn policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Policy>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some(name) => Policy::deserialize(serde::de::value::StrDeserializer::new(name)).map(Some),
    }
}

/// A link from one table's rows to another's (Goop²'s offer field): a row of `from_table`
/// gets a field named `to_table` listing the rows of `to_table` whose `to_column` equals its
/// `from_column`. The tables may be any peers'.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Relationship {
    /// The table whose rows get the field.
    pub from_table: String,
    /// Its column holding the value to match.
    pub from_column: String,
    /// The table listed (and the field's name).
    pub to_table: String,
    /// Its column that must equal the value.
    pub to_column: String,
}

impl Relationship {
    /// Checks that every part is a table or column name (or a system column on either end).
    pub fn validate(&self) -> Result<(), DataError> {
        let column = |c: &str| valid_name(c) || crate::store::is_system_column(c);
        if valid_name(&self.from_table)
            && valid_name(&self.to_table)
            && column(&self.from_column)
            && column(&self.to_column)
        {
            Ok(())
        } else {
            Err(DataError::InvalidSchema(format!(
                "invalid relationship {}.{} -> {}.{}: table and column names are a letter, then letters, digits or _",
                self.from_table, self.from_column, self.to_table, self.to_column
            )))
        }
    }
}

/// An operation on rows, as policies and roles name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reading.
    Read,
    /// Adding.
    Insert,
    /// Changing.
    Update,
    /// Deleting.
    Delete,
}

/// Which rows another peer may do an operation on, once its policy lets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any row.
    All,
    /// Only the rows it owns (`_owner` is its peer id).
    Own,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Insert => "insert into",
            Self::Update => "update",
            Self::Delete => "delete from",
        }
    }
}

/// What one role may do with a table's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRights {
    /// Read rows.
    #[serde(default)]
    pub read: bool,
    /// Add rows.
    #[serde(default)]
    pub insert: bool,
    /// Change rows.
    #[serde(default)]
    pub update: bool,
    /// Delete rows.
    #[serde(default)]
    pub delete: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Its name (the same rule as a table's).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Part of the table's key: required.
    #[serde(default, skip_serializing_if = "is_false")]
    pub key: bool,
    /// Must be given on insert (unless it has a default or is `auto`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Filled in on insert when missing: a UUID (`guid`), the time (`datetime`, `date`,
    /// `time`) or the next number (`integer`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto: bool,
    /// The value when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// The allowed values of an `enum` column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<EnumValue>,
}

/// One allowed value of an `enum` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnumValue {
    /// What is stored.
    pub key: String,
    /// What people read.
    #[serde(default)]
    pub label: String,
}

/// A column type (case-insensitive in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Text.
    Text,
    /// A 64-bit integer.
    Integer,
    /// A float.
    Real,
    /// Opaque text.
    Blob,
    /// A UUID.
    Guid,
    /// An RFC 3339 time.
    Datetime,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM:SS`.
    Time,
    /// One of the column's `values`.
    Enum,
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match name.to_ascii_lowercase().as_str() {
            "text" => Self::Text,
            "integer" => Self::Integer,
            "real" => Self::Real,
            "blob" => Self::Blob,
            "guid" => Self::Guid,
            "datetime" => Self::Datetime,
            "date" => Self::Date,
            "time" => Self::Time,
            "enum" => Self::Enum,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown column type {name:?}: expected text, integer, real, blob, guid, datetime, date, time or enum"
                )));
            }
        })
    }
}

impl ColumnType {
    /// The SQLite column type.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Integer => "INTEGER",
            Self::Real => "REAL",
            _ => "TEXT",
        }
    }

    /// Compared with `<`, `>`: numbers and times.
    pub fn ordered(self) -> bool {
        matches!(
            self,
            Self::Integer | Self::Real | Self::Datetime | Self::Date | Self::Time
        )
    }

    /// Matched with `LIKE`: text-like.
    pub fn textual(self) -> bool {
        matches!(self, Self::Text | Self::Guid | Self::Enum)
    }
}

/// Whether `name` is a valid user table or column name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= MAX_NAME_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Table {
    /// Checks the schema: a valid name, at least one column, unique valid column names,
    /// enum values for enum columns, defaults of the column's type, a key column unless
    /// `system_key`, and role names that are names.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |reason: String| DataError::InvalidSchema(reason);
        if !valid_name(&self.name) {
            return Err(bad(format!(
                "invalid table name {:?}: a letter, then letters, digits or _, at most {MAX_NAME_CHARS}",
                self.name
            )));
        }
        if self.columns.is_empty() {
            return Err(bad("a table needs at least one column".into()));
        }
        for (i, column) in self.columns.iter().enumerate() {
            if !valid_name(&column.name) {
                return Err(bad(format!(
                    "invalid column name {:?}: a letter, then letters, digits or _, at most {MAX_NAME_CHARS}",
                    column.name
                )));
            }
            if self.columns[..i].iter().any(|c| c.name == column.name) {
                return Err(bad(format!("column {:?} appears twice", column.name)));
            }
            if column.kind == ColumnType::Enum && column.values.is_empty() {
                return Err(bad(format!("enum column {:?} has no values", column.name)));
            }
            if let Some(default) = &column.default {
                crate::store::check_value(column, default).map_err(|e| bad(e.to_string()))?;
            }
        }
        if !self.system_key && !self.columns.iter().any(|c| c.key) {
            return Err(bad("a table needs a key column, or system_key: true".into()));
        }
        if let Some(role) = self
            .roles
            .keys()
            .find(|r| r.is_empty() || r.len() > MAX_NAME_CHARS || r.chars().any(char::is_control))
        {
            return Err(bad(format!(
                "invalid role name {role:?}: 1 to {MAX_NAME_CHARS} bytes, no control characters"
            )));
        }
        Ok(())
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The policy of `op`, its default when the table sets none.
    pub fn policy(&self, op: Operation) -> Policy {
        let access = self.access.as_ref();
        let set = access.and_then(|a| match op {
            Operation::Read => a.read,
            Operation::Insert => a.insert,
            Operation::Update => a.update,
            Operation::Delete => a.delete,
        });
        set.unwrap_or(match op {
            Operation::Read => Policy::Open,
            Operation::Insert | Operation::Update | Operation::Delete => Policy::Owner,
        })
    }

    /// What another peer, of role `role` in the group it asks through, may do with `op`:
    /// Goop²'s rules (reference `goop2-handlers.md` §4.1). Reading: `open` every row, `owner`
    /// its own rows, `group` every row if the role may. Inserting: `open` or a role that may
    /// (rows it inserts are its own). Updating and deleting: `open` any row, `group` its own
    /// rows if the role may. `local`, and `owner` for writes, refuse; so does a role that may
    /// not. The error says why.
    pub fn scope(&self, op: Operation, role: &str) -> Result<Scope, String> {
        let denied = |why: String| {
            Err(format!(
                "access denied: {why} may not {} table {:?}",
                op.verb(),
                self.name
            ))
        };
        match (self.policy(op), op) {
            (Policy::Local, _) => denied("another peer".into()),
            (Policy::Open, _) => Ok(Scope::All),
            (Policy::Owner, Operation::Read) => Ok(Scope::Own),
            (Policy::Owner, _) => denied("another peer".into()),
            (Policy::Group, _) if !self.role_can(role, op) => denied(format!("role {role:?}")),
            (Policy::Group, Operation::Read | Operation::Insert) => Ok(Scope::All),
            (Policy::Group, Operation::Update | Operation::Delete) => Ok(Scope::Own),
        }
    }

    /// Whether a peer of role `role` may do `op` under a `group` policy: `owner` always, a
    /// role the table names as it says, any other role never.
    pub fn role_can(&self, role: &str, op: Operation) -> bool {
        if role == proto::OWNER_ROLE {
            return true;
        }
        self.roles.get(role).is_some_and(|rights| match op {
            Operation::Read => rights.read,
            Operation::Insert => rights.insert,
            Operation::Update => rights.update,
            Operation::Delete => rights.delete,
        })
    }
}
