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

#[tokio::test]
async fn a_federated_table_merges_every_source_and_names_the_one_that_failed() {
    use std::sync::Arc;

    use graphql::engine::{Federated, RemoteQuery};
    use graphql::store::{Find, Op};

    let db = TempDb::new("federated");
    let data = Data::open(&db.path(), "peer-me".into()).unwrap();
    let notes = table(json!({
        "name": "notes", "context": true,
        "columns": [{"name": "slug", "type": "text", "key": true}, {"name": "stars", "type": "integer"}]
    }));
    data.create(&notes).unwrap();
    for (slug, stars) in [("m1", 4), ("m2", 1)] {
        run(&data, &format!(r#"mutation {{ insert_notes(object: {{slug: "{slug}", stars: {stars}}}) {{ _id }} }}"#)).await;
    }
    // Another peer's rows, as its answer to the query it was given (its own filter applied).
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let remote: RemoteQuery = Arc::new(
        move |peer: String, _group: String, table: String, find: Find| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                if peer == "peer-down" {
                    return Err("no answer in time".to_owned());
                }
                assert_eq!(table, "notes");
                let rows: Vec<graphql::Row> = [("t1", 5), ("t2", 2), ("t3", 3)]
                .into_iter()
                .filter(|(_, stars)| {
                    find.filters.iter().all(|(c, op, v)| match (c.as_str(), op) {
                        ("stars", Op::Gte) => v.as_i64() <= Some(*stars),
                        ("stars", Op::Eq) => v.as_i64() == Some(*stars),
                        _ => true,
                    })
                })
                .enumerate()
                .map(|(i, (slug, stars))| {
                    // t1 was written there by this peer; the rows claim to come from elsewhere.
                    let owner = if slug == "t1" { "peer-me" } else { "peer-them" };
                    json!({"_id": i + 1, "_owner": owner, "_peer": "peer-spoof", "_created_at": "", "_updated_at": "", "slug": slug, "stars": stars})
                        .as_object()
                        .unwrap()
                        .clone()
                })
                .collect();
                Ok(rows)
            }) as graphql::engine::RemoteRows
        },
    );
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
    // The same lookup twice in a request (two fields, or two rows linking to the same rows)
    // asks the other peer once.
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
        2,
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

/// A table in context with one text key column `k`.
fn keyed(name: &str) -> Table {
    table(json!({
        "name": name, "context": true,
        "columns": [{"name": "k", "type": "text", "key": true}]
    }))
}

/// Another peer that answers every table with one row, `k` naming the table.
fn remote_of_one_row() -> graphql::engine::RemoteQuery {
    std::sync::Arc::new(
        |_peer: String, _group: String, table: String, _find: graphql::store::Find| {
            Box::pin(async move {
                let row = json!({"_id": 1, "_owner": "peer-them", "_created_at": "", "_updated_at": "", "k": format!("{table} there")});
                Ok(vec![row.as_object().unwrap().clone()])
            }) as graphql::engine::RemoteRows
        },
    )
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
    let remote: graphql::engine::RemoteQuery = std::sync::Arc::new(
        |_peer: String, _group: String, _table: String, _find: graphql::store::Find| {
            Box::pin(async move {
                Ok([(1, "y"), (2, "x")]
                    .into_iter()
                    .map(|(a, b)| {
                        json!({"_id": a, "_owner": "peer-them", "_created_at": "", "_updated_at": "", "a": a, "b": b})
                            .as_object()
                            .unwrap()
                            .clone()
                    })
                    .collect())
            }) as graphql::engine::RemoteRows
        },
    );
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
