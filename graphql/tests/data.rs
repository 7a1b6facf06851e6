//! Data tables in a real SQLite file, read and written through the GraphQL engine.

use graphql::{Data, DataError, Table};
use serde_json::{Value, json};

struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("goop-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("goop.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn table(value: Value) -> Table {
    serde_json::from_value(value).unwrap()
}

fn books() -> Table {
    table(json!({
        "name": "books",
        "context": true,
        "columns": [
            {"name": "isbn", "type": "guid", "key": true, "auto": true},
            {"name": "title", "type": "TEXT", "required": true},
            {"name": "pages", "type": "integer"},
            {"name": "rating", "type": "real"},
            {"name": "shelf", "type": "enum", "values": [{"key": "new"}, {"key": "old"}], "default": "new"}
        ]
    }))
}

async fn run(data: &Data, query: &str) -> Value {
    let response = data.execute(async_graphql::Request::new(query)).await;
    serde_json::to_value(&response).unwrap()
}

/// A row as another peer answers it: the system columns, then `columns` (an object).
fn their_row(id: i64, owner: &str, columns: Value) -> graphql::Row {
    let mut row = json!({"_id": id, "_owner": owner, "_created_at": "", "_updated_at": ""});
    row.as_object_mut()
        .unwrap()
        .extend(columns.as_object().unwrap().clone());
    row.as_object().unwrap().clone()
}

/// Other peers, each answering a query as `answer(peer, table, find)` says, at once. The remote
/// is not under test here; the engine's use of it is.
fn remote_answering(
    answer: impl Fn(String, String, graphql::store::Find) -> Result<Vec<graphql::Row>, String>
    + Send
    + Sync
    + 'static,
) -> graphql::engine::RemoteQuery {
    std::sync::Arc::new(move |peer, _group, table, find| {
        let answered = answer(peer, table, find);
        Box::pin(async move { answered }) as graphql::engine::RemoteRows
    })
}

#[tokio::test]
async fn tables_are_queried_and_changed_through_graphql() {
    let db = TempDb::new("graphql");
    let data = Data::open(&db.path(), "12D3KooWme".into()).unwrap();
    let unbuilt = run(&data, "{ books { _id } }").await;
    assert_eq!(
        unbuilt["errors"][0]["message"],
        graphql::UNBUILT,
        "{unbuilt}"
    );

    data.create(&books()).unwrap();
    for (title, pages, rating) in [("Dune", 412, 4.5), ("Emma", 474, 3.9), ("Ubik", 202, 4.1)] {
        let insert = format!(
            r#"mutation {{ insert_books(object: {{title: "{title}", pages: {pages}, rating: {rating}}}) {{ _id _owner title shelf isbn }} }}"#
        );
        let out = run(&data, &insert).await;
        let row = &out["data"]["insert_books"];
        assert_eq!(row["title"], title, "{out}");
        assert_eq!(row["_owner"], "12D3KooWme");
        assert_eq!(row["shelf"], "new", "the default applies");
        assert_eq!(row["isbn"].as_str().unwrap().len(), 36, "a generated uuid");
    }

    // Filters combine, the order is the one written, and an offset works without a limit.
    let out = run(
        &data,
        r#"{ books(where: {pages_gt: 300, title_like: "%m%"}) { title } }"#,
    )
    .await;
    assert_eq!(out["data"]["books"], json!([{"title": "Emma"}]), "{out}");
    let out = run(
        &data,
        r#"{ books(order_by: {rating: desc}, offset: 1) { title } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["books"],
        json!([{"title": "Ubik"}, {"title": "Emma"}]),
        "{out}"
    );
    let out = run(
        &data,
        r#"{ books(order_by: {title: asc}, limit: 1) { title pages } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["books"],
        json!([{"title": "Dune", "pages": 412}])
    );
    // Arguments of the wrong shape are refused with what is wrong, not ignored.
    for (query, says) in [
        ("{ books(where: []) { title } }", "where must be an object"),
        (
            "{ books(order_by: []) { title } }",
            "order_by must be an object",
        ),
        ("{ books(offset: -5) { title } }", "offset must be 0 to"),
        ("{ books(limit: -1) { title } }", "limit must be 0 to"),
    ] {
        let out = run(&data, query).await;
        let message = out["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {out}");
    }

    // Update and delete by key, with honest answers for a missing row.
    let out = run(
        &data,
        r#"mutation { update_books_by_pk(_id: 2, _set: {rating: 5.0, shelf: "old"}) { title rating shelf } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["update_books_by_pk"],
        json!({"title": "Emma", "rating": 5.0, "shelf": "old"}),
        "{out}"
    );
    let out = run(
        &data,
        r#"mutation { delete_books_by_pk(_id: 3) { affected_rows } }"#,
    )
    .await;
    assert_eq!(out["data"]["delete_books_by_pk"]["affected_rows"], 1);
    let out = run(
        &data,
        r#"mutation { delete_books_by_pk(_id: 3) { affected_rows } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["delete_books_by_pk"]["affected_rows"], 0,
        "nothing left to delete"
    );
    let out = run(&data, "{ books_by_pk(_id: 3) { title } }").await;
    assert_eq!(out["data"]["books_by_pk"], Value::Null);

    // Bad values are errors, not stored.
    let out = run(
        &data,
        r#"mutation { insert_books(object: {title: "X", shelf: "lost"}) { _id } }"#,
    )
    .await;
    assert!(
        out["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("shelf"),
        "{out}"
    );
    let out = run(
        &data,
        r#"mutation { update_books_by_pk(_id: 99, _set: {pages: 1}) { _id } }"#,
    )
    .await;
    assert!(
        out["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{out}"
    );
    // The key is unique: a second row with an existing key is refused.
    let out = run(&data, r#"{ books(where: {title_eq: "Dune"}) { isbn } }"#).await;
    let isbn = out["data"]["books"][0]["isbn"].as_str().unwrap().to_owned();
    let out = run(
        &data,
        &format!(
            r#"mutation {{ insert_books(object: {{isbn: "{isbn}", title: "Dune 2"}}) {{ _id }} }}"#
        ),
    )
    .await;
    assert_eq!(
        out["errors"][0]["message"], r#"table "books" already has a row with that key (isbn)"#,
        "{out}"
    );
    let out = run(&data, "{ books { title } }").await;
    assert_eq!(out["data"]["books"].as_array().unwrap().len(), 2);

    // A reopened store serves the same; a dropped table is gone from the schema.
    drop(data);
    let data = Data::open(&db.path(), "12D3KooWme".into()).unwrap();
    assert_eq!(data.served().unwrap(), ["books"]);
    data.drop_table("books").unwrap();
    let out = run(&data, "{ books { title } }").await;
    assert_eq!(out["errors"][0]["message"], graphql::UNBUILT);
}

#[test]
fn schemas_that_break_the_rules_are_refused() {
    let db = TempDb::new("schemas");
    let data = Data::open(&db.path(), "me".into()).unwrap();
    for bad in [
        json!({"name": "1abc", "columns": [{"name": "a", "type": "text", "key": true}]}),
        json!({"name": "cluster_jobs\"; DROP", "columns": [{"name": "a", "type": "text", "key": true}]}),
        json!({"name": "t", "columns": []}),
        json!({"name": "t", "columns": [{"name": "a", "type": "text"}]}),
        json!({"name": "t", "columns": [{"name": "a", "type": "text", "key": true}, {"name": "a", "type": "integer"}]}),
        json!({"name": "t", "columns": [{"name": "_id", "type": "integer", "key": true}]}),
        json!({"name": "t", "columns": [{"name": "e", "type": "enum", "key": true}]}),
        json!({"name": "t", "columns": [{"name": "n", "type": "integer", "key": true, "default": "x"}]}),
    ] {
        let result = data.create(&table(bad.clone()));
        assert!(
            matches!(result, Err(DataError::InvalidSchema(_))),
            "{bad}: {result:?}"
        );
    }
    assert!(
        serde_json::from_value::<Table>(
            json!({"name": "t", "columns": [{"name": "a", "type": "money"}]})
        )
        .is_err()
    );
    let ok =
        table(json!({"name": "t", "system_key": true, "columns": [{"name": "a", "type": "text"}]}));
    data.create(&ok).unwrap();
    assert!(matches!(data.create(&ok), Err(DataError::TableExists(_))));
    assert!(matches!(
        data.drop_table("nope"),
        Err(DataError::UnknownTable(_))
    ));
    // A table out of context is kept but not served.
    assert!(data.served().unwrap().is_empty());
    assert_eq!(data.list().unwrap().len(), 1);
}

#[test]
fn access_policies_parse_take_defaults_and_grant_by_role() {
    use graphql::model::{Operation, Policy};

    let plain = books();
    assert_eq!(plain.policy(Operation::Read), Policy::Open);
    for op in [Operation::Insert, Operation::Update, Operation::Delete] {
        assert_eq!(plain.policy(op), Policy::Owner);
    }
    let guarded = table(json!({
        "name": "t", "columns": [{"name": "a", "type": "text", "key": true}],
        "access": {"read": "group", "insert": "", "update": null, "delete": "local"},
        "roles": {"editor": {"read": true, "update": true}, "viewer": {}}
    }));
    guarded.validate().unwrap();
    assert_eq!(guarded.policy(Operation::Read), Policy::Group);
    assert_eq!(
        guarded.policy(Operation::Insert),
        Policy::Owner,
        "\"\" is the default"
    );
    assert_eq!(guarded.policy(Operation::Update), Policy::Owner);
    assert_eq!(guarded.policy(Operation::Delete), Policy::Local);
    assert!(
        guarded.role_can("owner", Operation::Delete),
        "owner may do everything"
    );
    assert!(guarded.role_can("editor", Operation::Read));
    assert!(guarded.role_can("editor", Operation::Update));
    assert!(!guarded.role_can("editor", Operation::Insert));
    assert!(!guarded.role_can("viewer", Operation::Read));
    assert!(!guarded.role_can("stranger", Operation::Read));
    // Written back as it was given, without the unset operations.
    let written = serde_json::to_value(&guarded).unwrap();
    assert_eq!(
        written["access"],
        json!({"read": "group", "delete": "local"})
    );
    assert_eq!(table(written), guarded);

    let unknown = serde_json::from_value::<graphql::Table>(json!({
        "name": "t", "columns": [{"name": "a", "type": "text", "key": true}],
        "access": {"read": "everyone"}
    }))
    .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("unknown access policy \"everyone\""),
        "{unknown}"
    );
    // What another peer may do, as Goop² decides it.
    use graphql::model::Scope;
    let plain_read = plain.scope(Operation::Read, "viewer");
    assert_eq!(plain_read, Ok(Scope::All), "open to read by default");
    for op in [Operation::Insert, Operation::Update, Operation::Delete] {
        let refused = plain.scope(op, "owner").unwrap_err();
        assert!(
            refused.starts_with("access denied: another peer"),
            "{refused}"
        );
    }
    assert_eq!(guarded.scope(Operation::Read, "editor"), Ok(Scope::All));
    assert_eq!(
        guarded.scope(Operation::Read, "viewer"),
        Err(r#"access denied: role "viewer" may not read table "t""#.into())
    );
    assert_eq!(
        guarded.scope(Operation::Update, "editor"),
        Err(r#"access denied: another peer may not update table "t""#.into()),
        "update is owner here"
    );
    assert!(
        guarded.scope(Operation::Delete, "owner").is_err(),
        "delete is local"
    );
    let shared = table(json!({
        "name": "s", "columns": [{"name": "a", "type": "text", "key": true}],
        "access": {"read": "owner", "insert": "group", "update": "group", "delete": "open"},
        "roles": {"writer": {"insert": true, "update": true}}
    }));
    assert_eq!(shared.scope(Operation::Read, "anyone"), Ok(Scope::Own));
    assert_eq!(shared.scope(Operation::Insert, "writer"), Ok(Scope::All));
    assert!(shared.scope(Operation::Insert, "reader").is_err());
    assert_eq!(
        shared.scope(Operation::Update, "writer"),
        Ok(Scope::Own),
        "own rows only"
    );
    assert_eq!(shared.scope(Operation::Update, "owner"), Ok(Scope::Own));
    assert_eq!(shared.scope(Operation::Delete, "anyone"), Ok(Scope::All));

    let nameless = table(json!({
        "name": "t", "columns": [{"name": "a", "type": "text", "key": true}],
        "roles": {"": {"read": true}}
    }));
    assert!(matches!(
        nameless.validate(),
        Err(DataError::InvalidSchema(_))
    ));
}

/// The data of peer `peer-me` in `db`, with an empty table `notes` (key `slug`, `stars`).
fn with_notes(db: &TempDb) -> (Data, Table) {
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    let notes = table(json!({
        "name": "notes", "context": true,
        "columns": [{"name": "slug", "type": "text", "key": true}, {"name": "stars", "type": "integer"}]
    }));
    data.create(&notes).unwrap();
    (data, notes)
}

#[tokio::test]
async fn a_federated_table_merges_every_source_and_names_the_one_that_failed() {
    use std::sync::Arc;

    use graphql::engine::{Federated, RemoteQuery};
    use graphql::store::{Find, Op};

    let db = TempDb::new("federated");
    let (data, notes) = with_notes(&db);
    for (slug, stars) in [("m1", 4), ("m2", 1)] {
        run(&data, &format!(r#"mutation {{ insert_notes(object: {{slug: "{slug}", stars: {stars}}}) {{ _id }} }}"#)).await;
    }
    // Another peer's rows, as its answer to the query it was given (its own filter applied).
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let remote: RemoteQuery = remote_answering(move |peer, table, find: Find| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if peer == "peer-down" {
            return Err("no answer in time".to_owned());
        }
        assert_eq!(table, "notes");
        Ok([("t1", 5), ("t2", 2), ("t3", 3)]
            .into_iter()
            .filter(|(_, stars)| {
                find.filters
                    .iter()
                    .all(|(c, op, v)| match (c.as_str(), op) {
                        ("stars", Op::Gte) => v.as_i64() <= Some(*stars),
                        ("stars", Op::Eq) => v.as_i64() == Some(*stars),
                        ("stars", Op::In) => v.as_array().unwrap().contains(&json!(stars)),
                        _ => true,
                    })
            })
            .zip(1..)
            .map(|((slug, stars), id)| {
                // t1 was written there by this peer; the rows claim to come from elsewhere.
                let owner = if slug == "t1" { "peer-me" } else { "peer-them" };
                their_row(
                    id,
                    owner,
                    json!({"_peer": "peer-spoof", "slug": slug, "stars": stars}),
                )
            })
            .collect())
    });
    let federated = Federated {
        table: notes.clone(),
        local: true,
        sources: vec![
            ("peer-them".into(), "fed".into()),
            ("peer-down".into(), "fed".into()),
        ],
    };
    data.federate(vec![federated], Vec::new(), remote.clone())
        .unwrap();

    // Ordered and paged across both peers, not per peer.
    let out = run(
        &data,
        r#"{ notes(where: {stars_gte: 2}, order_by: {stars: desc}, limit: 3) { slug _owner _peer } }"#,
    )
    .await;
    // `_peer` is the peer that served the row, whoever wrote it and whatever the row says.
    assert_eq!(
        out["data"]["notes"],
        json!([
            {"slug": "t1", "_owner": "peer-me", "_peer": "peer-them"},
            {"slug": "m1", "_owner": "peer-me", "_peer": "peer-me"},
            {"slug": "t3", "_owner": "peer-them", "_peer": "peer-them"}
        ]),
        "{out}"
    );
    // The peer that did not answer is named, not silently left out.
    assert!(
        out["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("peer-down"),
        "{out}"
    );
    let out = run(
        &data,
        r#"{ notes(order_by: {stars: asc}, offset: 1, limit: 2) { slug } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["notes"],
        json!([{"slug": "t2"}, {"slug": "t3"}]),
        "{out}"
    );
    // This peer's own table keeps its mutations and `_by_pk`: a row written here joins the
    // federated list.
    let out = run(
        &data,
        r#"mutation { insert_notes(object: {slug: "m9", stars: 9}) { _id slug } }"#,
    )
    .await;
    assert_eq!(out["data"]["insert_notes"]["slug"], "m9", "{out}");
    let out = run(&data, "{ notes_by_pk(_id: 1) { slug } }").await;
    assert_eq!(out["data"]["notes_by_pk"], json!({"slug": "m1"}), "{out}");
    let out = run(
        &data,
        "{ notes(order_by: {stars: desc}, limit: 2) { slug } }",
    )
    .await;
    assert_eq!(
        out["data"]["notes"],
        json!([{"slug": "m9"}, {"slug": "t1"}]),
        "{out}"
    );

    // Relationships, both ways between a federated table and a local one: each note lists
    // its level, and each level lists the notes of every peer that have it.
    let levels = table(json!({
        "name": "levels", "context": true,
        "columns": [{"name": "stars", "type": "integer", "key": true}, {"name": "label", "type": "text"}]
    }));
    data.create(&levels).unwrap();
    for (stars, label) in [(5, "great"), (4, "good"), (2, "poor")] {
        run(&data, &format!(r#"mutation {{ insert_levels(object: {{stars: {stars}, label: "{label}"}}) {{ _id }} }}"#)).await;
    }
    let link = |from: &str, to: &str| graphql::Relationship {
        from_table: from.into(),
        from_column: "stars".into(),
        to_table: to.into(),
        to_column: "stars".into(),
    };
    // One that names a missing column is left out, not an error.
    let broken = graphql::Relationship {
        from_column: "nothing".into(),
        ..link("notes", "nothing_here")
    };
    data.federate(
        vec![Federated {
            table: notes.clone(),
            local: true,
            sources: vec![("peer-them".into(), "fed".into())],
        }],
        vec![link("notes", "levels"), link("levels", "notes"), broken],
        remote,
    )
    .unwrap();
    let out = run(
        &data,
        r#"{ notes(order_by: {stars: desc}, limit: 3) { slug levels { label } } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["notes"],
        json!([
            {"slug": "m9", "levels": []},
            {"slug": "t1", "levels": [{"label": "great"}]},
            {"slug": "m1", "levels": [{"label": "good"}]}
        ]),
        "{out}"
    );
    let out = run(
        &data,
        r#"{ levels(where: {stars_lte: 4}, order_by: {stars: desc}) { label notes(order_by: {slug: asc}) { slug _owner } } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["levels"],
        json!([
            {"label": "good", "notes": [{"slug": "m1", "_owner": "peer-me"}]},
            {"label": "poor", "notes": [{"slug": "t2", "_owner": "peer-them"}]}
        ]),
        "{out}"
    );
    // The lookups of a level are one ask to the other peer, whatever the values (the rows link
    // to different ones) and however many fields ask for them.
    let before = asked.load(std::sync::atomic::Ordering::Relaxed);
    let out = run(
        &data,
        r#"{ levels(where: {stars_lte: 4}) { a: notes { slug } b: notes { slug } } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["levels"][1]["a"], out["data"]["levels"][1]["b"],
        "{out}"
    );
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::Relaxed) - before,
        1,
        "one lookup per level"
    );
    // Nested without end, a query is refused before it asks anyone.
    let before = asked.load(std::sync::atomic::Ordering::Relaxed);
    let mut deep = "slug".to_owned();
    for i in 0..graphql::engine::MAX_DEPTH {
        deep = if i % 2 == 0 {
            format!("levels {{ label notes {{ {deep} }} }}")
        } else {
            format!("slug {deep}")
        };
    }
    let out = run(&data, &format!("{{ notes {{ {deep} }} }}")).await;
    assert!(
        out["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{out}"
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), before);
    // Introspection, as GraphQL clients send it, still passes.
    let out = run(
        &data,
        "{ __schema { types { name fields { name type { name kind ofType { name kind ofType { name kind ofType { name kind ofType { name } } } } } } } } }",
    )
    .await;
    assert!(out.get("errors").is_none(), "{out}");
}

/// A mutation naming another peer that serves the table writes that peer's row (through the
/// remote, which is not under test: it records what it was asked and answers as the peer
/// would); without `peer`, or naming this peer, it writes this peer's table; a table only other
/// peers serve needs `peer`; a peer that does not serve the table, or refuses, is an error.
#[tokio::test]
async fn mutations_write_another_peers_row_when_peer_names_it() {
    use std::sync::{Arc, Mutex};

    use graphql::engine::{Federated, Remote, RemoteWritten, Write, Written};

    let db = TempDb::new("remote-writes");
    let (data, notes) = with_notes(&db);
    // (peer, group, table, write) of every write asked for.
    type Asked = Vec<(String, String, String, Write)>;
    let asked: Arc<Mutex<Asked>> = Arc::default();
    let log = asked.clone();
    let write = Arc::new(
        move |peer: String, group: String, table: String, write: Write| {
            log.lock()
                .unwrap()
                .push((peer.clone(), group, table, write.clone()));
            let answer = match write {
                Write::Delete(99) => Err("access_denied: not your row".to_owned()),
                Write::Delete(_) => Ok(Written::Deleted(1)),
                Write::Insert(values) => {
                    // The row as the peer stored it, claiming to come from elsewhere.
                    let mut row = their_row(7, "peer-me", Value::Object(values));
                    row.insert("_peer".into(), json!("peer-spoof"));
                    Ok(Written::Row(row))
                }
                Write::Update(id, set) => {
                    Ok(Written::Row(their_row(id, "peer-me", Value::Object(set))))
                }
            };
            Box::pin(async move { answer }) as RemoteWritten
        },
    );
    let remote = Remote {
        query: remote_of_one_row(),
        write: Some(write),
    };
    let shared = Federated {
        table: notes.clone(),
        local: true,
        sources: vec![("peer-them".into(), "fed".into())],
    };
    data.federate(vec![shared, theirs("levels")], Vec::new(), remote)
        .unwrap();
    let taken = || std::mem::take(&mut *asked.lock().unwrap());

    // No peer, or this peer: this peer's table.
    for (slug, peer) in [("m0", ""), ("m1", r#", peer: "peer-me""#)] {
        let out = run(
            &data,
            &format!(r#"mutation {{ insert_notes(object: {{slug: "{slug}", stars: 1}}{peer}) {{ slug _peer }} }}"#),
        )
        .await;
        assert_eq!(out["data"]["insert_notes"]["_peer"], "peer-me", "{out}");
    }
    assert!(taken().is_empty());
    let mine = run(&data, "{ notes_by_pk(_id: 2) { slug } }").await;
    assert_eq!(mine["data"]["notes_by_pk"]["slug"], "m1", "{mine}");

    // Another peer: its row, served by it whatever the row says.
    let out = run(
        &data,
        r#"mutation { insert_notes(object: {slug: "t1", stars: 5}, peer: "peer-them") { _id slug stars _peer } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["insert_notes"],
        json!({"_id": 7, "slug": "t1", "stars": 5, "_peer": "peer-them"}),
        "{out}"
    );
    let mut object = graphql::Row::new();
    object.insert("slug".into(), json!("t1"));
    object.insert("stars".into(), json!(5));
    assert_eq!(
        taken(),
        vec![(
            "peer-them".into(),
            "fed".into(),
            "notes".into(),
            Write::Insert(object)
        )]
    );
    let out = run(
        &data,
        r#"mutation { update_levels_by_pk(_id: 3, _set: {}, peer: "peer-them") { _id _peer } delete_levels_by_pk(_id: 4, peer: "peer-them") { affected_rows } }"#,
    )
    .await;
    assert_eq!(
        out["data"],
        json!({
            "update_levels_by_pk": {"_id": 3, "_peer": "peer-them"},
            "delete_levels_by_pk": {"affected_rows": 1}
        }),
        "{out}"
    );
    assert_eq!(
        taken(),
        vec![
            (
                "peer-them".into(),
                "fed".into(),
                "levels".into(),
                Write::Update(3, graphql::Row::new())
            ),
            (
                "peer-them".into(),
                "fed".into(),
                "levels".into(),
                Write::Delete(4)
            ),
        ]
    );

    // What cannot be written, with why.
    let refused = run(
        &data,
        r#"mutation { delete_levels_by_pk(_id: 99, peer: "peer-them") { affected_rows } }"#,
    )
    .await;
    assert_eq!(
        message(&refused),
        "peer peer-them: access_denied: not your row",
        "{refused}"
    );
    let stranger = run(
        &data,
        r#"mutation { delete_notes_by_pk(_id: 1, peer: "peer-x") { affected_rows } }"#,
    )
    .await;
    assert_eq!(
        message(&stranger),
        "peer peer-x does not serve table notes (the peers serving it: peer-them)",
        "{stranger}"
    );
    let nameless = run(
        &data,
        r#"mutation { insert_levels(object: {k: "x"}) { _id } }"#,
    )
    .await;
    assert!(message(&nameless).contains("peer"), "{nameless}");
    assert_eq!(
        taken(),
        vec![(
            "peer-them".into(),
            "fed".into(),
            "levels".into(),
            Write::Delete(99)
        )],
        "only the refused delete reached the remote"
    );
}

/// A table in context with one text key column `k`.
fn keyed(name: &str) -> Table {
    table(json!({
        "name": name, "context": true,
        "columns": [{"name": "k", "type": "text", "key": true}]
    }))
}

/// Another peer that answers every table with one row, `k` naming the table.
fn remote_of_one_row() -> graphql::engine::RemoteQuery {
    remote_answering(|_peer, table, _find| {
        Ok(vec![their_row(
            1,
            "peer-them",
            json!({"k": format!("{table} there")}),
        )])
    })
}

/// `name` served from another peer only.
fn theirs(name: &str) -> graphql::engine::Federated {
    graphql::engine::Federated {
        table: keyed(name),
        local: false,
        sources: vec![("peer-them".into(), "fed".into())],
    }
}

fn message(out: &Value) -> &str {
    out["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn generated_names_are_the_names_the_engine_serves() {
    use graphql::engine::{SchemaName, generated_names};

    let db = TempDb::new("names");
    let data = Data::open(&db.path(), "me".into()).unwrap();
    data.create(&books()).unwrap();
    let out = run(
        &data,
        "{ __schema { types { name } queryType { fields { name } } mutationType { fields { name } } } }",
    )
    .await;
    let schema = &out["data"]["__schema"];
    let names = |list: &Value, kind: fn(String) -> SchemaName| -> Vec<SchemaName> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|t| kind(t["name"].as_str().unwrap().to_owned()))
            .collect()
    };
    let mut served: Vec<SchemaName> = names(&schema["types"], SchemaName::Type)
        .into_iter()
        .filter(|name| !name.reserved())
        .chain(names(&schema["queryType"]["fields"], SchemaName::Query))
        .chain(names(
            &schema["mutationType"]["fields"],
            SchemaName::Mutation,
        ))
        .collect();
    served.sort();
    let mut generated = generated_names("books");
    generated.sort();
    assert_eq!(served, generated, "{out}");
    // Every shared type the schema has is reserved.
    for name in names(&schema["types"], SchemaName::Type) {
        assert!(
            name.reserved() || generated.contains(&name),
            "{name} is neither reserved nor the table's"
        );
    }
}

#[tokio::test]
async fn a_table_whose_generated_names_clash_is_refused_and_the_others_still_served() {
    let db = TempDb::new("clash");
    let data = Data::open(&db.path(), "me".into()).unwrap();
    data.create(&keyed("x")).unwrap();
    run(
        &data,
        r#"mutation { insert_x(object: {k: "here"}) { _id } }"#,
    )
    .await;
    let refused = |name: &str, context: bool| {
        let result = data.create(&Table {
            context,
            ..keyed(name)
        });
        match result {
            Err(DataError::InvalidSchema(why)) => why,
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(
        refused("x_where", true),
        r#"table "x_where" would generate type x_where, which table "x" generates"#
    );
    // The other way round: a table whose names an existing table's name is.
    data.create(&keyed("y_order_by")).unwrap();
    assert_eq!(
        refused("y", true),
        r#"table "y" would generate type y_order_by, which table "y_order_by" generates"#
    );
    data.create(&keyed("a_by_pk")).unwrap();
    assert_eq!(
        refused("a", true),
        r#"table "a" would generate query field a_by_pk, which table "a_by_pk" generates"#
    );
    // Tables out of context count too: they may be put in context later.
    data.create(&Table {
        context: false,
        ..keyed("hidden")
    })
    .unwrap();
    let why = refused("hidden_set_input", true);
    assert!(why.contains(r#"table "hidden" generates"#), "{why}");
    for name in [
        "Query",
        "Mutation",
        "OrderDirection",
        "Int",
        "Float",
        "String",
        "Boolean",
        "ID",
    ] {
        let why = refused(name, false);
        assert_eq!(
            why,
            format!("table {name:?} would generate type {name}, which is reserved")
        );
    }
    assert!(matches!(
        data.sdl(&keyed("Query")),
        Err(DataError::InvalidSchema(why)) if why.contains("reserved")
    ));
    assert_eq!(
        data.list()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect::<Vec<_>>(),
        ["a_by_pk", "hidden", "x", "y_order_by"]
    );
    // Nothing refused broke what is served.
    let out = run(&data, "{ x { k } y_order_by { k } a_by_pk { k } }").await;
    assert_eq!(out["data"]["x"], json!([{"k": "here"}]), "{out}");
    assert_eq!(out["data"]["y_order_by"], json!([]), "{out}");
    assert_eq!(out["data"]["a_by_pk"], json!([]), "{out}");
    let out = run(&data, "{ x_by_pk(_id: 1) { k } }").await;
    assert_eq!(out["data"]["x_by_pk"], json!({"k": "here"}), "{out}");
}

#[tokio::test]
async fn a_federated_table_whose_names_clash_is_left_out_and_the_others_still_served() {
    let db = TempDb::new("fedclash");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    data.create(&keyed("x")).unwrap();
    run(
        &data,
        r#"mutation { insert_x(object: {k: "here"}) { _id } }"#,
    )
    .await;
    // `x` itself is the local table's federation, not a clash; `x_where` and `Query` clash.
    let x = graphql::engine::Federated {
        local: true,
        ..theirs("x")
    };
    data.federate(
        vec![
            theirs("Query"),
            theirs("String"),
            theirs("ok"),
            x,
            theirs("x_where"),
        ],
        Vec::new(),
        remote_of_one_row(),
    )
    .unwrap();
    let out = run(&data, "{ x(order_by: {k: desc}) { k } ok { k } }").await;
    assert_eq!(
        out["data"],
        json!({"x": [{"k": "x there"}, {"k": "here"}], "ok": [{"k": "ok there"}]}),
        "{out}"
    );
    let out = run(&data, "{ x_where { k } }").await;
    assert!(
        message(&out).contains("Unknown field \"x_where\""),
        "left out: {out}"
    );
    // The local tables keep their mutations.
    let out = run(&data, r#"mutation { insert_x(object: {k: "more"}) { k } }"#).await;
    assert_eq!(out["data"]["insert_x"], json!({"k": "more"}), "{out}");
    // Clashing among themselves, the first by name is served.
    data.federate(
        vec![theirs("b"), theirs("b_order_by")],
        Vec::new(),
        remote_of_one_row(),
    )
    .unwrap();
    let out = run(&data, "{ b { k } }").await;
    assert_eq!(out["data"]["b"], json!([{"k": "b there"}]), "{out}");
    assert!(message(&run(&data, "{ b_order_by { k } }").await).contains("Unknown field"));
}

#[tokio::test]
async fn a_federation_that_cannot_be_served_leaves_the_one_before_in_place() {
    let db = TempDb::new("fedbad");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    data.federate(vec![theirs("ok")], Vec::new(), remote_of_one_row())
        .unwrap();
    // A column GraphQL refuses (other peers' offers are checked before they get here).
    let mut bad = theirs("bad");
    bad.table.columns[0].name = "__k".into();
    let refused = data.federate(vec![bad], Vec::new(), remote_of_one_row());
    assert!(
        matches!(&refused, Err(DataError::InvalidSchema(why)) if why.contains("__k")),
        "{refused:?}"
    );
    let out = run(&data, "{ ok { k } }").await;
    assert_eq!(out["data"]["ok"], json!([{"k": "ok there"}]), "{out}");
    // Later builds use the federation before it, so they still succeed.
    data.create(&keyed("mine")).unwrap();
    data.rebuild().unwrap();
    let out = run(&data, "{ ok { k } mine { k } }").await;
    assert_eq!(
        out["data"],
        json!({"ok": [{"k": "ok there"}], "mine": []}),
        "{out}"
    );
}

#[tokio::test]
async fn order_by_keys_apply_in_the_order_written() {
    let db = TempDb::new("orderby");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    data.create(&table(json!({
        "name": "pairs", "context": true, "system_key": true,
        "columns": [{"name": "a", "type": "integer"}, {"name": "b", "type": "text"}]
    })))
    .unwrap();
    for (a, b) in [(1, "x"), (2, "y"), (1, "z"), (2, "w")] {
        run(
            &data,
            &format!(r#"mutation {{ insert_pairs(object: {{a: {a}, b: "{b}"}}) {{ _id }} }}"#),
        )
        .await;
    }
    let order = |query: &'static str| {
        let data = data.clone();
        async move {
            let out = run(&data, query).await;
            out["data"]["pairs"]
                .as_array()
                .unwrap_or_else(|| panic!("{out}"))
                .iter()
                .map(|r| format!("{}{}", r["a"], r["b"].as_str().unwrap()))
                .collect::<Vec<_>>()
        }
    };
    let a_then_b = "{ pairs(order_by: {a: asc, b: desc}) { a b } }";
    let b_then_a = "{ pairs(order_by: {b: desc, a: asc}) { a b } }";
    assert_eq!(order(a_then_b).await, ["1z", "1x", "2y", "2w"]);
    assert_eq!(order(b_then_a).await, ["1z", "2y", "1x", "2w"]);
    // Merged with another peer's rows, the same order.
    let remote = remote_answering(|_peer, _table, _find| {
        Ok([(1, "y"), (2, "x")]
            .into_iter()
            .map(|(a, b)| their_row(a, "peer-them", json!({"a": a, "b": b})))
            .collect())
    });
    let pairs = data.tables().table("pairs").unwrap();
    data.federate(
        vec![graphql::engine::Federated {
            table: pairs,
            local: true,
            sources: vec![("peer-them".into(), "fed".into())],
        }],
        Vec::new(),
        remote,
    )
    .unwrap();
    assert_eq!(order(a_then_b).await, ["1z", "1y", "1x", "2y", "2x", "2w"]);
    assert_eq!(order(b_then_a).await, ["1z", "1y", "2y", "1x", "2x", "2w"]);
}

#[tokio::test]
async fn concurrent_creates_rebuilds_and_federations_end_serving_the_newest_state() {
    // Each round, a table is created, the schema rebuilt and a new federation given at the same
    // time: whichever build ends last, the schema serves every table and the new federation.
    const ROUNDS: usize = 40;
    const REBUILDERS: usize = 3;
    let db = TempDb::new("race");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    for round in 0..ROUNDS {
        let start = std::sync::Barrier::new(2 + REBUILDERS);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                start.wait();
                data.create(&keyed(&format!("t{round}"))).unwrap();
            });
            for _ in 0..REBUILDERS {
                scope.spawn(|| {
                    start.wait();
                    data.rebuild().unwrap();
                });
            }
            scope.spawn(|| {
                start.wait();
                let federation = vec![theirs(&format!("f{round}"))];
                data.federate(federation, Vec::new(), remote_of_one_row())
                    .unwrap();
            });
        });
        let (table, federated) = (format!("t{round}"), format!("f{round}"));
        let out = run(&data, &format!("{{ {table} {{ k }} {federated} {{ k }} }}")).await;
        assert_eq!(
            out["data"],
            json!({table: [], federated.clone(): [{"k": format!("{federated} there")}]}),
            "round {round}: {out}"
        );
        if round > 0 {
            let out = run(&data, &format!("{{ f{} {{ k }} }}", round - 1)).await;
            assert!(
                message(&out).contains("Unknown field"),
                "round {round}: {out}"
            );
        }
    }
    for round in 0..ROUNDS {
        let out = run(&data, &format!("{{ t{round} {{ k }} }}")).await;
        assert_eq!(out["data"][format!("t{round}")], json!([]), "{out}");
    }
}

#[tokio::test]
async fn in_filters_take_a_bounded_list_of_values_each_bound_as_a_parameter() {
    use graphql::store::{Find, MAX_IN, Op};

    let db = TempDb::new("in");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    data.create(&books()).unwrap();
    for (title, pages) in [("Dune", 412), ("Emma", 474), ("Ubik", 202)] {
        run(
            &data,
            &format!(r#"mutation {{ insert_books(object: {{title: "{title}", pages: {pages}}}) {{ _id }} }}"#),
        )
        .await;
    }
    let out = run(
        &data,
        r#"{ books(where: {pages_in: [202, 474, 1]}, order_by: {pages: asc}) { title } }"#,
    )
    .await;
    assert_eq!(
        out["data"]["books"],
        json!([{"title": "Ubik"}, {"title": "Emma"}]),
        "{out}"
    );
    let out = run(
        &data,
        r#"{ books(where: {title_in: ["Dune') OR 1=1 --", "Emma"]}) { title } }"#,
    )
    .await;
    assert_eq!(out["data"]["books"], json!([{"title": "Emma"}]), "{out}");
    let out = run(&data, r#"{ books(where: {title_in: []}) { title } }"#).await;
    assert_eq!(out["data"]["books"], json!([]), "{out}");
    let many: Vec<usize> = (0..=MAX_IN).collect();
    let out = run(
        &data,
        &format!("{{ books(where: {{pages_in: {many:?}}}) {{ title }} }}"),
    )
    .await;
    assert!(
        message(&out).contains(&format!("at most {MAX_IN} values")),
        "{out}"
    );
    // What another peer may send: anything but a list of scalars is refused.
    let table = data.tables().table("books").unwrap();
    for value in [json!(412), json!([[412]]), json!([{"pages": 412}])] {
        let find = Find {
            filters: vec![("pages".into(), Op::In, value.clone())],
            ..Find::default()
        };
        let refused = data.tables().find(&table, &find).unwrap_err();
        assert!(
            matches!(refused, DataError::InvalidValue { ref column, .. } if column == "pages"),
            "{value}: {refused}"
        );
    }
    let find = Find {
        filters: vec![("nope".into(), Op::In, json!([1]))],
        ..Find::default()
    };
    assert!(matches!(
        data.tables().find(&table, &find),
        Err(DataError::UnknownColumn(_))
    ));
}

/// Peers answering from their own SQLite tables, as a node answers (`Tables::find`), counting
/// the asks; `peer-down` never answers.
struct Peers {
    stores: std::collections::HashMap<String, std::sync::Arc<graphql::Tables>>,
    asks: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
    _dbs: Vec<TempDb>,
}

impl Peers {
    fn new(test: &str, names: &[&str], tables: &[Table]) -> Self {
        let (mut stores, mut dbs) = (std::collections::HashMap::new(), Vec::new());
        for name in names {
            let db = TempDb::new(&format!("{test}-{name}"));
            let store = graphql::Tables::open(&db.path()).unwrap();
            for table in tables {
                store.create(table).unwrap();
            }
            stores.insert((*name).to_owned(), std::sync::Arc::new(store));
            dbs.push(db);
        }
        Self {
            stores,
            asks: std::sync::Arc::default(),
            _dbs: dbs,
        }
    }

    fn insert(&self, peer: &str, table: &str, row: Value) {
        let store = &self.stores[peer];
        let schema = store.table(table).unwrap();
        store
            .insert(&schema, peer, row.as_object().unwrap())
            .unwrap();
    }

    fn remote(&self) -> graphql::engine::RemoteQuery {
        let (stores, asks) = (self.stores.clone(), self.asks.clone());
        remote_answering(move |peer, table, find| {
            *asks.lock().unwrap().entry(peer.clone()).or_default() += 1;
            let store = stores
                .get(&peer)
                .ok_or_else(|| "no answer in time".to_owned())?;
            let schema = store.table(&table).map_err(|e| e.to_string())?;
            store.find(&schema, &find).map_err(|e| e.to_string())
        })
    }

    fn asks(&self) -> std::collections::BTreeMap<String, usize> {
        self.asks.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_relationship_looks_up_a_level_in_one_ask_per_peer_with_each_rows_own_page() {
    use graphql::engine::Federated;

    let db = TempDb::new("batched");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    let authors = table(json!({
        "name": "authors", "context": true,
        "columns": [{"name": "name", "type": "text", "key": true}, {"name": "ref", "type": "integer"}]
    }));
    let comments = table(json!({
        "name": "comments", "context": true,
        "columns": [{"name": "slug", "type": "text", "key": true}, {"name": "author", "type": "integer"}, {"name": "stars", "type": "integer"}]
    }));
    let likes = table(json!({
        "name": "likes", "context": true, "system_key": true,
        "columns": [{"name": "comment", "type": "text"}, {"name": "who", "type": "text"}]
    }));
    let labels = table(json!({
        "name": "labels", "context": true,
        "columns": [{"name": "code", "type": "text", "key": true}]
    }));
    for t in [&authors, &comments, &labels] {
        data.create(t).unwrap();
    }
    let peers = Peers::new(
        "batched",
        &["peer-a", "peer-b"],
        &[comments.clone(), likes.clone()],
    );
    let insert = |table: &str, row: Value| {
        let data = data.clone();
        let schema = data.tables().table(table).unwrap();
        data.tables()
            .insert(&schema, "peer-me", row.as_object().unwrap())
            .unwrap();
    };
    // Twelve authors with 1 to 5 comments each, spread over this peer and two others, some
    // liked on the others.
    let sources = ["peer-me", "peer-a", "peer-b"];
    for i in 1..=12_i64 {
        insert("authors", json!({"name": format!("a{i:02}"), "ref": i}));
        for j in 0..=(i % 5) {
            let slug = format!("c{i}-{j}");
            let row = json!({"slug": slug, "author": i, "stars": (i * 7 + j * 3) % 6});
            match sources[usize::try_from(i + j).unwrap() % 3] {
                "peer-me" => insert("comments", row),
                peer => peers.insert(peer, "comments", row),
            }
            for k in 0..(i + j) % 4 {
                let who = ["ann", "bob", "cy"][usize::try_from(k).unwrap() % 3];
                let peer = if (i + k) % 2 == 0 { "peer-a" } else { "peer-b" };
                peers.insert(peer, "likes", json!({"comment": slug, "who": who}));
            }
        }
    }
    // No comments; no value; the same value as another author.
    insert("authors", json!({"name": "lonely", "ref": 99}));
    insert("authors", json!({"name": "nobody"}));
    insert("authors", json!({"name": "twin", "ref": 3}));
    for code in ["3", "7", "x"] {
        insert("labels", json!({"code": code}));
    }
    let link = |from: &str, from_column: &str, to: &str, to_column: &str| graphql::Relationship {
        from_table: from.into(),
        from_column: from_column.into(),
        to_table: to.into(),
        to_column: to_column.into(),
    };
    let contributors = || {
        vec![
            ("peer-a".to_owned(), "fed".to_owned()),
            ("peer-b".to_owned(), "fed".to_owned()),
            ("peer-down".to_owned(), "fed".to_owned()),
        ]
    };
    data.federate(
        vec![
            Federated {
                table: comments.clone(),
                local: true,
                sources: contributors(),
            },
            Federated {
                table: likes.clone(),
                local: false,
                sources: contributors(),
            },
        ],
        vec![
            link("authors", "ref", "comments", "author"),
            link("comments", "slug", "likes", "comment"),
            // Back to a local table.
            link("comments", "author", "authors", "ref"),
            // An integer linked to a text column: SQLite's `=` converts it.
            link("authors", "ref", "labels", "code"),
        ],
        peers.remote(),
    )
    .unwrap();

    let page = r#"(where: {stars_gte: 1}, order_by: {stars: desc}, offset: 1, limit: 2)"#;
    let likes_page = r#"(order_by: {who: desc}, limit: 2)"#;
    let before = peers.asks();
    let out = run(
        &data,
        &format!(
            "{{ authors(order_by: {{name: asc}}) {{ name ref comments{page} {{ slug stars _peer likes{likes_page} {{ who _peer }} authors {{ name }} }} labels {{ code }} }} }}"
        ),
    )
    .await;
    let asks = peers.asks();
    // One ask per peer for each level (comments, then likes), whatever the number of values.
    for peer in ["peer-a", "peer-b", "peer-down"] {
        assert_eq!(
            asks.get(peer).copied().unwrap_or(0) - before.get(peer).copied().unwrap_or(0),
            2,
            "{peer}: {asks:?}"
        );
    }
    // The peer that does not answer is named once per ask, not once per value.
    let errors = out["errors"].as_array().unwrap_or_else(|| panic!("{out}"));
    assert_eq!(errors.len(), 2, "{out}");
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().unwrap().contains("peer-down")),
        "{out}"
    );

    // Each row's list is what a lookup of its value alone answers, page included.
    let authors = out["data"]["authors"].as_array().unwrap();
    assert_eq!(authors.len(), 15, "{out}");
    let mut paged = 0;
    for author in authors {
        let comments = author["comments"].as_array().unwrap();
        let want = match author["ref"].as_i64() {
            None => json!([]),
            Some(r) => {
                let alone = run(
                    &data,
                    &format!(
                        "{{ comments(where: {{author_eq: {r}, stars_gte: 1}}, order_by: {{stars: desc}}, offset: 1, limit: 2) {{ slug stars _peer }} }}"
                    ),
                )
                .await;
                alone["data"]["comments"].clone()
            }
        };
        let mut got = Vec::new();
        for comment in comments {
            let slug = comment["slug"].as_str().unwrap();
            let alone = run(
                &data,
                &format!(
                    r#"{{ likes(where: {{comment_eq: "{slug}"}}, {}) {{ who _peer }} }}"#,
                    &likes_page[1..likes_page.len() - 1]
                ),
            )
            .await;
            assert_eq!(comment["likes"], alone["data"]["likes"], "likes of {slug}");
            let r = author["ref"].as_i64().unwrap();
            let alone = run(
                &data,
                &format!("{{ authors(where: {{ref_eq: {r}}}) {{ name }} }}"),
            )
            .await;
            assert_eq!(
                comment["authors"], alone["data"]["authors"],
                "authors of {slug}"
            );
            got.push(json!({"slug": slug, "stars": comment["stars"], "_peer": comment["_peer"]}));
        }
        assert_eq!(Value::Array(got), want, "comments of {author}");
        paged += usize::from(comments.len() == 2);
    }
    assert!(paged >= 3, "the page cuts some lists: {out}");
    let by_name = |name: &str| {
        authors
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(by_name("lonely")["comments"], json!([]), "{out}");
    assert_eq!(by_name("nobody")["comments"], json!([]), "{out}");
    assert_eq!(
        by_name("twin")["comments"],
        by_name("a03")["comments"],
        "{out}"
    );
    assert_ne!(by_name("a03")["comments"], json!([]), "{out}");
    // A value of another type than the column is looked up alone, with SQLite's `=`.
    assert_eq!(by_name("a03")["labels"], json!([{"code": "3"}]), "{out}");
    assert_eq!(by_name("twin")["labels"], json!([{"code": "3"}]), "{out}");
    assert_eq!(by_name("a07")["labels"], json!([{"code": "7"}]), "{out}");
    assert_eq!(by_name("a01")["labels"], json!([]), "{out}");
    // Different pages of one level share the level's ask.
    let before = peers.asks();
    let out = run(
        &data,
        "{ authors { first: comments(order_by: {slug: asc}, limit: 1) { slug } rest: comments(order_by: {slug: asc}, offset: 1) { slug } } }",
    )
    .await;
    assert_eq!(peers.asks()["peer-a"] - before["peer-a"], 1, "{out}");
    let a05 = &out["data"]["authors"][4];
    assert_eq!(a05["first"], json!([{"slug": "c5-0"}]), "{out}");
    assert_eq!(a05["rest"], json!([]), "{out}");
    let a04 = &out["data"]["authors"][3];
    assert_eq!(
        a04["rest"],
        json!([{"slug": "c4-1"}, {"slug": "c4-2"}, {"slug": "c4-3"}, {"slug": "c4-4"}]),
        "{out}"
    );

    // Only null values: nobody is asked.
    let before = peers.asks();
    let out = run(
        &data,
        r#"{ authors(where: {name_eq: "nobody"}) { comments { slug } } }"#,
    )
    .await;
    assert_eq!(out["data"]["authors"], json!([{"comments": []}]), "{out}");
    assert_eq!(peers.asks(), before);

    // A local target alone (no federation): one query, the same answers.
    let local = TempDb::new("batched-local");
    let alone = Data::open(&local.path(), "peer-me".into()).unwrap();
    for t in [&authors_table(), &comments] {
        alone.create(t).unwrap();
    }
    for (name, r) in [
        ("a", Some(1)),
        ("b", Some(2)),
        ("c", None),
        ("d", Some(1)),
        ("e", Some(3)),
    ] {
        let schema = alone.tables().table("authors").unwrap();
        alone
            .tables()
            .insert(
                &schema,
                "peer-me",
                json!({"name": name, "ref": r}).as_object().unwrap(),
            )
            .unwrap();
    }
    for (slug, author, stars) in [
        ("x1", 1, 5),
        ("x2", 1, 3),
        ("x3", 1, 4),
        ("y1", 2, 1),
        ("y2", 2, 2),
        ("z", 4, 5),
    ] {
        let schema = alone.tables().table("comments").unwrap();
        alone
            .tables()
            .insert(
                &schema,
                "peer-me",
                json!({"slug": slug, "author": author, "stars": stars})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
    }
    alone
        .federate(
            Vec::new(),
            vec![link("authors", "ref", "comments", "author")],
            peers.remote(),
        )
        .unwrap();
    let before = peers.asks();
    let out = run(
        &alone,
        "{ authors(order_by: {name: asc}) { name comments(where: {stars_gte: 2}, order_by: {stars: desc}, offset: 1) { slug } } }",
    )
    .await;
    assert_eq!(
        out["data"]["authors"],
        json!([
            {"name": "a", "comments": [{"slug": "x3"}, {"slug": "x2"}]},
            {"name": "b", "comments": []},
            {"name": "c", "comments": []},
            {"name": "d", "comments": [{"slug": "x3"}, {"slug": "x2"}]},
            {"name": "e", "comments": []}
        ]),
        "{out}"
    );
    assert_eq!(peers.asks(), before, "a local table asks no peer");
}

fn authors_table() -> Table {
    table(json!({
        "name": "authors", "context": true,
        "columns": [{"name": "name", "type": "text", "key": true}, {"name": "ref", "type": "integer"}]
    }))
}

#[tokio::test]
async fn a_batch_that_would_bring_too_many_rows_is_looked_up_value_by_value() {
    use graphql::engine::{BATCH_ROWS, Federated, RemoteQuery};
    use graphql::store::{Find, Op};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let db = TempDb::new("toomany");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    let owners = table(json!({
        "name": "owners", "context": true,
        "columns": [{"name": "k", "type": "text", "key": true}, {"name": "v", "type": "integer"}]
    }));
    data.create(&owners).unwrap();
    for (k, v) in [("one", 1), ("three", 3), ("two", 2)] {
        run(
            &data,
            &format!(r#"mutation {{ insert_owners(object: {{k: "{k}", v: {v}}}) {{ _id }} }}"#),
        )
        .await;
    }
    let items = table(json!({
        "name": "items", "context": true, "system_key": true,
        "columns": [{"name": "v", "type": "integer"}, {"name": "n", "type": "integer"}]
    }));
    // The other peer has more rows of value 1 than a batch takes, ranked before the few rows
    // of values 2 and 3: a batch cut at its bound would leave those out.
    let rows: Vec<(i64, i64)> = (0..i64::from(BATCH_ROWS))
        .map(|i| (1, 10_000 + i))
        .chain((0..5).map(|i| (2, 100 + i)))
        .chain((0..5).map(|i| (3, i)))
        .collect();
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let remote: RemoteQuery = remote_answering(move |_peer, _table, find: Find| {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut found: Vec<(i64, i64)> = rows
            .iter()
            .copied()
            .filter(|(v, _)| {
                find.filters
                    .iter()
                    .all(|(column, op, value)| match (column.as_str(), op) {
                        ("v", Op::Eq) => value == &json!(v),
                        ("v", Op::In) => value.as_array().unwrap().contains(&json!(v)),
                        other => panic!("unexpected filter {other:?}"),
                    })
            })
            .collect();
        assert_eq!(find.order, [("n".to_owned(), true)]);
        found.sort_by_key(|(_, n)| -n);
        found.truncate(usize::try_from(find.limit.unwrap()).unwrap());
        Ok(found
            .into_iter()
            .map(|(v, n)| their_row(n, "peer-them", json!({"v": v, "n": n})))
            .collect())
    });
    data.federate(
        vec![Federated {
            table: items,
            local: false,
            sources: vec![("peer-them".into(), "fed".into())],
        }],
        vec![graphql::Relationship {
            from_table: "owners".into(),
            from_column: "v".into(),
            to_table: "items".into(),
            to_column: "v".into(),
        }],
        remote,
    )
    .unwrap();
    let out = run(
        &data,
        "{ owners(order_by: {k: asc}) { k items(order_by: {n: desc}, limit: 2) { n } } }",
    )
    .await;
    assert!(out.get("errors").is_none(), "{out}");
    let top = |a: i64, b: i64| json!([{"n": a}, {"n": b}]);
    let last = 10_000 + i64::from(BATCH_ROWS) - 1;
    assert_eq!(
        out["data"]["owners"],
        json!([
            {"k": "one", "items": top(last, last - 1)},
            {"k": "three", "items": top(4, 3)},
            {"k": "two", "items": top(104, 103)}
        ]),
        "{out}"
    );
    // The batch, then one lookup per value.
    assert_eq!(asked.load(Ordering::Relaxed), 1 + 3);
}

#[tokio::test]
async fn a_level_of_many_rows_is_one_ask_per_peer() {
    // More rows than async-graphql joins one by one (30): their items go through a queue.
    let db = TempDb::new("many");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    let comments = table(json!({
        "name": "comments", "context": true,
        "columns": [{"name": "slug", "type": "text", "key": true}, {"name": "author", "type": "integer"}]
    }));
    data.create(&authors_table()).unwrap();
    let peers = Peers::new("many", &["peer-a"], std::slice::from_ref(&comments));
    let schema = data.tables().table("authors").unwrap();
    for i in 0..200_i64 {
        let author = json!({"name": format!("a{i:03}"), "ref": i});
        data.tables()
            .insert(&schema, "peer-me", author.as_object().unwrap())
            .unwrap();
        if i % 2 == 0 {
            peers.insert(
                "peer-a",
                "comments",
                json!({"slug": format!("c{i}"), "author": i}),
            );
        }
    }
    data.federate(
        vec![graphql::engine::Federated {
            table: comments,
            local: false,
            sources: vec![("peer-a".into(), "fed".into())],
        }],
        vec![graphql::Relationship {
            from_table: "authors".into(),
            from_column: "ref".into(),
            to_table: "comments".into(),
            to_column: "author".into(),
        }],
        peers.remote(),
    )
    .unwrap();
    let out = run(
        &data,
        "{ authors(order_by: {name: asc}) { comments { slug } } }",
    )
    .await;
    let authors = out["data"]["authors"].as_array().unwrap();
    assert_eq!(authors.len(), 200, "{out}");
    for (i, author) in authors.iter().enumerate() {
        let want = if i % 2 == 0 {
            json!([{"slug": format!("c{i}")}])
        } else {
            json!([])
        };
        assert_eq!(author["comments"], want, "{i}");
    }
    assert_eq!(peers.asks()["peer-a"], 1);
}
