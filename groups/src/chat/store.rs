//! The chat tables: the rooms this peer is in and their last messages, in the peer's database.
//!
//! Chat writes one small row per message, so the actor does them itself, inline.

use std::path::Path;

use proto::{GroupId, PeerId};
use rusqlite::{Connection, OptionalExtension, params};

use super::{ChatMessage, HISTORY, Room};

/// The component name in `_migrations`.
const COMPONENT: &str = "chat";

const MIGRATIONS: &[&str] = &[r"
    CREATE TABLE chat_rooms (
        group_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL
    );
    CREATE TABLE chat_messages (
        group_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        from_peer TEXT NOT NULL,
        from_name TEXT NOT NULL,
        text TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        PRIMARY KEY (group_id, seq)
    ) WITHOUT ROWID"];

/// The chat tables on one connection.
pub(super) struct ChatDb {
    conn: Connection,
    /// The next message's place, counted across rooms.
    next_seq: i64,
}

impl ChatDb {
    /// Opens the database at `path` and brings the chat tables up to date.
    pub(super) fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        crate::migrate::migrate(&conn, COMPONENT, MIGRATIONS)?;
        let last: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM chat_messages", [], |r| {
                r.get(0)
            })?;
        Ok(Self {
            conn,
            next_seq: last + 1,
        })
    }

    /// Every room with its messages, oldest first. Rows this version cannot read (a peer or
    /// group id of the wrong shape) are skipped.
    pub(super) fn load(&self) -> rusqlite::Result<Vec<(Room, Vec<ChatMessage>)>> {
        let mut rooms = Vec::new();
        let mut select = self.conn.prepare(
            "SELECT group_id, name, description, host FROM chat_rooms ORDER BY group_id",
        )?;
        let rows = select.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (group, name, description, host) = row?;
            let (Ok(id), Ok(host)) = (group.parse::<GroupId>(), host.parse::<PeerId>()) else {
                tracing::warn!(%group, "skipping a chat room row that cannot be read");
                continue;
            };
            rooms.push(Room {
                id,
                name,
                description,
                host,
            });
        }
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            let messages = self.messages(&room.id)?;
            out.push((room, messages));
        }
        Ok(out)
    }

    fn messages(&self, group: &GroupId) -> rusqlite::Result<Vec<ChatMessage>> {
        let mut select = self.conn.prepare_cached(
            "SELECT id, from_peer, from_name, text, timestamp FROM chat_messages
             WHERE group_id = ?1 ORDER BY seq",
        )?;
        let rows = select.query_map([group.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut messages = Vec::new();
        for row in rows {
            let (id, from, from_name, text, timestamp) = row?;
            let Ok(from) = from.parse() else {
                continue;
            };
            messages.push(ChatMessage {
                id,
                from,
                from_name,
                text,
                timestamp,
            });
        }
        Ok(messages)
    }

    /// Adds or updates a room.
    pub(super) fn put_room(&self, room: &Room) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO chat_rooms (group_id, name, description, host) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (group_id) DO UPDATE SET
                    name = excluded.name, description = excluded.description, host = excluded.host",
            )?
            .execute(params![
                room.id.as_str(),
                room.name,
                room.description,
                room.host.as_str()
            ])?;
        Ok(())
    }

    /// Removes a room and its messages.
    pub(super) fn delete_room(&mut self, group: &GroupId) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM chat_messages WHERE group_id = ?1",
            [group.as_str()],
        )?;
        tx.execute(
            "DELETE FROM chat_rooms WHERE group_id = ?1",
            [group.as_str()],
        )?;
        tx.commit()
    }

    /// Appends a message to a room and drops what falls out of its last [`HISTORY`].
    pub(super) fn add_message(
        &mut self,
        group: &GroupId,
        message: &ChatMessage,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        insert(&tx, self.next_seq, group, message)?;
        self.next_seq += 1;
        trim(&tx, group)?;
        tx.commit()
    }

    /// Replaces a room's messages (the host's history for a joiner).
    pub(super) fn replace_messages(
        &mut self,
        group: &GroupId,
        messages: &[ChatMessage],
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM chat_messages WHERE group_id = ?1",
            [group.as_str()],
        )?;
        for message in messages {
            insert(&tx, self.next_seq, group, message)?;
            self.next_seq += 1;
        }
        trim(&tx, group)?;
        tx.commit()
    }
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    group: &GroupId,
    message: &ChatMessage,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO chat_messages (group_id, seq, id, from_peer, from_name, text, timestamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        group.as_str(),
        seq,
        message.id,
        message.from.as_str(),
        message.from_name,
        message.text,
        message.timestamp
    ])?;
    Ok(())
}

/// Keeps the room's newest [`HISTORY`] messages.
fn trim(tx: &rusqlite::Transaction<'_>, group: &GroupId) -> rusqlite::Result<()> {
    let oldest_kept: Option<i64> = tx
        .prepare_cached(
            "SELECT seq FROM chat_messages WHERE group_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![group.as_str(), HISTORY as i64 - 1], |r| r.get(0))
        .optional()?;
    if let Some(seq) = oldest_kept {
        tx.prepare_cached("DELETE FROM chat_messages WHERE group_id = ?1 AND seq < ?2")?
            .execute(params![group.as_str(), seq])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: i64) -> ChatMessage {
        ChatMessage {
            id: format!("{n}-p"),
            from: "p".parse().unwrap(),
            from_name: "P".into(),
            text: format!("m{n}"),
            timestamp: n,
        }
    }

    fn texts(db: &ChatDb, group: &GroupId) -> Vec<String> {
        db.messages(group)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    #[test]
    fn rooms_keep_their_newest_messages_across_a_reopen() {
        let dir = std::env::temp_dir().join(format!("goop-chat-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("goop.db");
        let (a, b): (GroupId, GroupId) = ("a".parse().unwrap(), "b".parse().unwrap());
        {
            let mut db = ChatDb::open(&path).unwrap();
            for group in [&a, &b] {
                db.put_room(&Room {
                    id: group.clone(),
                    name: format!("room {group}"),
                    description: "d".into(),
                    host: "h".parse().unwrap(),
                })
                .unwrap();
            }
            for n in 1..=120 {
                db.add_message(&a, &message(n)).unwrap();
            }
            db.add_message(&b, &message(1)).unwrap();
            let kept = texts(&db, &a);
            assert_eq!(kept.len(), HISTORY);
            assert_eq!((kept[0].as_str(), kept[99].as_str()), ("m21", "m120"));
            db.replace_messages(&b, &[message(7), message(8)]).unwrap();
        }
        let mut db = ChatDb::open(&path).unwrap();
        let rooms = db.load().unwrap();
        assert_eq!(rooms.len(), 2);
        assert_eq!(rooms[0].0.name, "room a");
        assert_eq!(rooms[0].1.len(), HISTORY);
        assert_eq!(rooms[0].1[0], message(21));
        assert_eq!(texts(&db, &b), ["m7", "m8"]);
        // New messages go after the old ones, in a room and across a reopen.
        db.add_message(&b, &message(9)).unwrap();
        assert_eq!(texts(&db, &b), ["m7", "m8", "m9"]);
        db.delete_room(&a).unwrap();
        assert_eq!(db.load().unwrap().len(), 1);
        assert!(texts(&db, &a).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
