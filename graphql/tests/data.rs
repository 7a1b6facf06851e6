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
