//! A peer's data tables, served as GraphQL.
//!
//! - [`model`]: a table's schema (Goop²'s JSON shape) and its checks.
//! - [`store`]: the tables in the peer's SQLite database (`data_<name>`, with `_id`, `_owner`,
//!   `_created_at`, `_updated_at`), every value bound as a parameter.
//! - [`engine`]: the GraphQL schema of the tables marked `context: true`, rebuilt whenever a
//!   table is created, changed or deleted.
//!
//! The federation of tables across peers (the `data-federation` group type) lives in the node,
//! which knows the network: it hands [`Data::federate`] the shared tables and a way to ask a
//! peer for rows, and the engine merges the answers.

pub mod engine;
pub mod model;
pub mod store;

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub use model::{Column, ColumnType, EnumValue, Relationship, Table};
pub use store::{Row, Tables};

/// Why a data operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The schema breaks a rule.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// A table of that name exists.
    #[error("table {0:?} already exists")]
    TableExists(String),
    /// No table of that name.
    #[error("table {0:?} not found")]
    UnknownTable(String),
    /// No column of that name (or a key column to update).
    #[error("unknown column {0:?}")]
    UnknownColumn(String),
    /// A required column was not given.
    #[error("column {0:?} is required")]
    Missing(String),
    /// A row with the same key exists.
    #[error("table {table:?} already has a row with that key ({columns})")]
    DuplicateKey {
        /// The table.
        table: String,
        /// Its key columns.
        columns: String,
    },
    /// A value does not fit its column.
    #[error("column {column:?}: {reason}")]
    InvalidValue {
        /// The column.
        column: String,
        /// Why.
        reason: String,
    },
    /// SQLite failed.
    #[error("data store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What `execute` answers when no table is served.
pub const UNBUILT: &str = "no tables in context: mark at least one table with context: true";

/// A peer's data tables and their GraphQL engine.
#[derive(Clone)]
pub struct Data {
    tables: Arc<Tables>,
    owner: String,
    engine: Arc<RwLock<Option<async_graphql::dynamic::Schema>>>,
    /// The tables other peers contribute, the relationships offered, and how to ask them.
    federation: Arc<RwLock<Federation>>,
    /// Told after a table is created, changed or deleted.
    on_change: Arc<RwLock<Option<ChangeHook>>>,
    /// Held through each build, from reading the tables and the federation to serving the
    /// schema: two builds at once could otherwise serve the older state last.
    build_lock: Arc<Mutex<()>>,
}

/// What [`Data::federate`] was last given.
type Federation = (
    Vec<engine::Federated>,
    Vec<Relationship>,
    Option<engine::Remote>,
);

/// What [`Data::on_tables_changed`] calls.
type ChangeHook = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Data {
    /// Opens the tables in the database at `path`; rows this peer writes are owned by `owner`.
    pub fn open(path: &std::path::Path, owner: String) -> Result<Self, DataError> {
        let data = Self {
            tables: Arc::new(Tables::open(path)?),
            owner,
            engine: Arc::new(RwLock::new(None)),
            federation: Arc::new(RwLock::new((Vec::new(), Vec::new(), None))),
            on_change: Arc::new(RwLock::new(None)),
            build_lock: Arc::new(Mutex::new(())),
        };
        data.rebuild()?;
        Ok(data)
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Every table's schema.
    pub fn list(&self) -> Result<Vec<Table>, DataError> {
        self.tables.list()
    }

    /// Creates a table and serves it when it is in context; a table whose GraphQL names clash
    /// with a reserved name or another table's is refused (see [`Tables::create`]).
    pub fn create(&self, table: &Table) -> Result<(), DataError> {
        self.tables.create(table)?;
        self.changed()
    }

    /// Changes a table's settings (see [`Tables::update_schema`]) and serves it accordingly.
    pub fn update_table(
        &self,
        name: &str,
        change: impl FnOnce(&mut Table),
    ) -> Result<Table, DataError> {
        let table = self.tables.update_schema(name, change)?;
        self.changed()?;
        Ok(table)
    }

    /// Deletes a table and its rows.
    pub fn drop_table(&self, name: &str) -> Result<(), DataError> {
        self.tables.drop_table(name)?;
        self.changed()
    }

    /// Has `hook` called after each table created, changed or deleted (the federation, whose merge
    /// depends on this peer's tables), in place of any earlier hook.
    pub fn on_tables_changed(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self
            .on_change
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(hook));
    }

    fn changed(&self) -> Result<(), DataError> {
        let rebuilt = self.rebuild();
        let hook = self
            .on_change
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook();
        }
        rebuilt
    }

    /// Serves `federated` tables (asking other peers through `remote`, and writing to them
    /// when it can: see [`engine::Remote`]) beside the local ones,
    /// with the `relationships` offered between tables served here, from now on: the schema is
    /// rebuilt. When it cannot be, the federation given before is kept (and served as it was).
    pub fn federate(
        &self,
        federated: Vec<engine::Federated>,
        relationships: Vec<Relationship>,
        remote: impl Into<engine::Remote>,
    ) -> Result<(), DataError> {
        let build = self.lock_build();
        let previous = std::mem::replace(
            &mut *self
                .federation
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            (federated, relationships, Some(remote.into())),
        );
        let built = self.build(&build);
        if built.is_err() {
            // Kept, it would fail every later build as well.
            *self
                .federation
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = previous;
        }
        built
    }

    /// Builds the GraphQL schema again from the tables.
    pub fn rebuild(&self) -> Result<(), DataError> {
        self.build(&self.lock_build())
    }

    fn lock_build(&self) -> MutexGuard<'_, ()> {
        self.build_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Builds the schema from the tables and the federation as they are now, and serves it;
    /// `_build` is the build lock, held by the caller.
    fn build(&self, _build: &MutexGuard<'_, ()>) -> Result<(), DataError> {
        let (federated, relationships, remote) = self
            .federation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let schema = engine::build(
            &self.tables.list()?,
            self.tables.clone(),
            self.owner.clone(),
            &federated,
            &relationships,
            remote,
        )?;
        *self
            .engine
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = schema;
        Ok(())
    }

    /// The GraphQL schema (SDL) `table` would be served with, alone: its object, filter, order
    /// and input types with its queries and mutations. It is printed from the schema the engine
    /// builds, so it is what a query meets. Nothing is created.
    pub fn sdl(&self, table: &Table) -> Result<String, DataError> {
        table.validate()?;
        if let Some(clash) = engine::clash(&table.name, []) {
            return Err(DataError::InvalidSchema(clash));
        }
        let table = Table {
            context: true,
            ..table.clone()
        };
        let schema = engine::build(
            std::slice::from_ref(&table),
            self.tables.clone(),
            self.owner.clone(),
            &[],
            &[],
            None,
        )?
        .ok_or_else(|| DataError::InvalidSchema("no schema to print".into()))?;
        Ok(schema.sdl())
    }

    /// The names of the tables served.
    pub fn served(&self) -> Result<Vec<String>, DataError> {
        Ok(self
            .tables
            .list()?
            .into_iter()
            .filter(|t| t.context)
            .map(|t| t.name)
            .collect())
    }

    /// Runs a GraphQL request; the answer is always a GraphQL response (errors in `errors`).
    pub async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        let schema = self
            .engine
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match schema {
            Some(schema) => {
                schema
                    .execute(request.data(engine::Lookups::default()))
                    .await
            }
            None => async_graphql::Response::from_errors(vec![async_graphql::ServerError::new(
                UNBUILT, None,
            )]),
        }
    }
}
