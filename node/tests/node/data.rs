//! Data tables and GraphQL on a real `goop node` over HTTP.

use serde_json::{Value, json};

use super::support::{assert_error, cli_any, get, ok, post, start, temp_dir};

#[tokio::test]
async fn a_table_is_created_filled_and_queried_over_http() {
    let peer = start(&[]).await;
    let api = &peer.ready.api;
    let graphql = |query: &str| {
        let body = json!({ "query": query }).to_string();
        let api = api.clone();
        async move { ok(&post(&api, "/api/graphql", &body).await) }
    };
    let unbuilt = graphql("{ notes { _id } }").await;
    assert!(
        unbuilt["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no tables in context")
    );

    let notes = json!({
        "name": "notes", "context": true,
        "columns": [
            {"name": "slug", "type": "text", "key": true},
            {"name": "body", "type": "text"},
            {"name": "stars", "type": "integer", "default": 0}
        ]
    });
    ok(&post(api, "/api/data/tables", &notes.to_string()).await);
    assert_error(
        &post(api, "/api/data/tables", &notes.to_string()).await,
        409,
        "exists",
    );
    let listed = ok(&get(api, "/api/data/tables").await);
    assert_eq!(listed[0]["name"], "notes");
    let status = ok(&get(api, "/api/graphql/status").await);
    assert_eq!(status["tables"], json!(["notes"]));

    for (slug, stars) in [("a", 3), ("b", 5), ("c", 1)] {
        let out = graphql(&format!(
            r#"mutation {{ insert_notes(object: {{slug: "{slug}", body: "note {slug}", stars: {stars}}}) {{ _id _owner }} }}"#
        ))
        .await;
        assert_eq!(
            out["data"]["insert_notes"]["_owner"],
            peer.ready.peer_id.as_str(),
            "{out}"
        );
    }
    let out =
        graphql(r#"{ notes(where: {stars_gte: 2}, order_by: {stars: desc}) { slug stars } }"#)
            .await;
    assert_eq!(
        out["data"]["notes"],
        json!([{"slug": "b", "stars": 5}, {"slug": "a", "stars": 3}]),
        "{out}"
    );
    let out = graphql(r#"mutation { insert_notes(object: {body: "no key"}) { _id } }"#).await;
    assert!(out["errors"].is_array(), "a missing key is refused: {out}");

    // Bad schemas and unknown tables.
    let bad = json!({"name": "x y", "columns": [{"name": "a", "type": "text", "key": true}]});
    assert_error(
        &post(api, "/api/data/tables", &bad.to_string()).await,
        400,
        "invalid_request",
    );
    assert_error(
        &post(api, "/api/data/tables/delete", r#"{"name":"nope"}"#).await,
        404,
        "not_found",
    );
    // A table whose GraphQL names clash with another table's, or a reserved one, is refused
    // with the clash named; what is served stays.
    for (name, clash) in [
        ("notes_where", r#"which table "notes" generates"#),
        ("Query", "which is reserved"),
    ] {
        let clashing =
            json!({"name": name, "columns": [{"name": "a", "type": "text", "key": true}]});
        let answer = post(api, "/api/data/tables", &clashing.to_string()).await;
        assert_error(&answer, 400, "invalid_request");
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(clash),
            "{answer:?}"
        );
    }
    let out = graphql("{ notes(order_by: {slug: asc}, limit: 1) { slug } }").await;
    assert_eq!(out["data"]["notes"], json!([{"slug": "a"}]), "{out}");

    // Settings change, columns and rows stay: out of context it is not served, back in it is.
    let update = |body: Value| {
        let api = api.clone();
        async move { post(&api, "/api/data/tables/update", &body.to_string()).await }
    };
    let updated = ok(&update(json!({"name": "notes", "context": false})).await);
    assert_eq!(updated["context"], false, "{updated}");
    assert_eq!(updated["columns"].as_array().unwrap().len(), 3);
    let out = graphql("{ notes { slug } }").await;
    assert!(out["errors"].is_array(), "{out}");
    let updated = ok(&update(
        json!({"name": "notes", "context": true, "access": {"read": "owner"}, "roles": {"editor": {"read": true}}}),
    )
    .await);
    assert_eq!(updated["access"], json!({"read": "owner"}), "{updated}");
    let out = graphql("{ notes(order_by: {slug: asc}) { slug } }").await;
    assert_eq!(
        out["data"]["notes"],
        json!([{"slug": "a"}, {"slug": "b"}, {"slug": "c"}]),
        "{out}"
    );
    // `null` takes the defaults back; what is left out stays.
    let updated = ok(&update(json!({"name": "notes", "access": null})).await);
    assert_eq!(updated.get("access"), None, "{updated}");
    assert_eq!(
        updated["roles"],
        json!({"editor": {"read": true, "insert": false, "update": false, "delete": false}})
    );
    assert_eq!(ok(&get(api, "/api/data/tables").await)[0], updated);
    // Bad changes change nothing.
    for (bad, status, code) in [
        (
            json!({"name": "notes", "access": {"read": "everyone"}}),
            400,
            "invalid_json",
        ),
        (json!({"name": "notes", "columns": []}), 400, "invalid_json"),
        (
            json!({"name": "notes", "roles": {"": {"read": true}}}),
            400,
            "invalid_request",
        ),
        (json!({"name": "nope", "context": true}), 404, "not_found"),
    ] {
        assert_error(&update(bad.clone()).await, status, code);
    }
    assert_eq!(ok(&get(api, "/api/data/tables").await)[0], updated);
    ok(&post(api, "/api/data/tables/delete", r#"{"name":"notes"}"#).await);
    let gone = graphql("{ notes { slug } }").await;
    assert_eq!(gone["data"], Value::Null, "{gone}");
}

#[tokio::test]
async fn the_schema_preview_prints_what_the_engine_serves_and_creates_nothing() {
    let peer = start(&[]).await;
    let api = &peer.ready.api;
    let table = json!({
        "name": "tasks",
        "columns": [
            {"name": "code", "type": "text", "key": true},
            {"name": "done", "type": "integer"}
        ]
    });
    let preview = ok(&post(api, "/api/graphql/schema", &table.to_string()).await);
    let sdl = preview["sdl"].as_str().unwrap();
    for part in [
        "type tasks {",
        "code: String",
        "done: Int",
        "input tasks_where {",
        "done_gte: Int",
        "tasks(where: tasks_where, limit: Int, offset: Int, order_by: tasks_order_by): [tasks]",
        "tasks_by_pk(_id: Int!): tasks",
        "insert_tasks(object: tasks_insert_input!): tasks",
        "delete_tasks_by_pk(_id: Int!): tasks_delete_result",
    ] {
        assert!(sdl.contains(part), "{part:?} missing from:\n{sdl}");
    }
    // The directives' descriptions are quoted: escaped in the HTML.
    assert!(sdl.contains("\"\"\""), "{sdl}");
    assert_eq!(
        preview["html"].as_str().unwrap(),
        format!(
            "<pre class=\"graphql-sdl\">{}</pre>",
            sdl.replace('"', "&quot;")
        )
    );
    // Nothing was created.
    assert_eq!(ok(&get(api, "/api/data/tables").await), json!([]));

    assert_error(
        &post(api, "/api/graphql/schema", r#"{"columns": []}"#).await,
        400,
        "bad_request",
    );
    let keyless = json!({"name": "t", "columns": [{"name": "a", "type": "text"}]});
    assert_error(
        &post(api, "/api/graphql/schema", &keyless.to_string()).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn goop_graphql_prints_the_answer_and_says_whether_it_has_errors() {
    let peer = start(&[]).await;
    let api = peer.ready.api.as_str();
    let table = json!({"name": "notes", "context": true,
        "columns": [{"name": "slug", "type": "text", "key": true}, {"name": "stars", "type": "integer"}]});
    ok(&post(api, "/api/data/tables", &table.to_string()).await);
    let insert = r#"mutation Add($slug: String!) { insert_notes(object: {slug: $slug, stars: 4}) { slug } }"#;
    let (code, out, err) =
        cli_any(api, &["graphql", insert, "--variables", r#"{"slug": "a"}"#]).await;
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer, json!({"data": {"insert_notes": {"slug": "a"}}}));

    // From a file; a field that does not exist is an error in the answer: exit 1.
    let dir = temp_dir("graphql-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("query.graphql");
    std::fs::write(&file, "{ notes { slug stars } }").unwrap();
    let (code, out, _) = cli_any(api, &["graphql", "-f", &file.to_string_lossy()]).await;
    assert_eq!(code, 0);
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["data"]["notes"], json!([{"slug": "a", "stars": 4}]));
    let (code, out, _) = cli_any(api, &["graphql", "{ notes { nothing } }"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing"), "{out}");

    // What cannot be sent: exit 2, with the reason.
    for (args, reason) in [
        (vec!["graphql"], "give a query"),
        (
            vec!["graphql", "{ notes { slug } }", "--variables", "[1]"],
            "must be a JSON object",
        ),
        (
            vec!["graphql", "-f", "/nonexistent/query"],
            "cannot read the query",
        ),
    ] {
        let (code, _, err) = cli_any(api, &args).await;
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(reason), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
