//! Versioned migrations of the tables of one component (groups, chat...) in the peer's
//! database, recorded in `_migrations`.

use rusqlite::{Connection, OptionalExtension, params};

/// Applies the migrations of `component` that this database has not seen, each in its own
/// transaction; `migrations[i]` takes the component to version `i + 1`.
pub(crate) fn migrate(
    conn: &Connection,
    component: &str,
    migrations: &[&str],
) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _migrations (
            component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )?;
    let current: i64 = conn
        .query_row(
            "SELECT version FROM _migrations WHERE component = ?1",
            [component],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
    for (index, sql) in migrations.iter().enumerate() {
        let version = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if version <= current {
            continue;
        }
        conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))?;
        conn.execute(
            "INSERT INTO _migrations (component, version) VALUES (?1, ?2)
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            params![component, version],
        )?;
        tracing::info!(component, version, "migrated tables");
    }
    Ok(())
}
