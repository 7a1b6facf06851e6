//! Data federation between real `goop node` processes: two peers offer the same table to a
//! `data-federation` group, and a GraphQL query on either returns both peers' rows, ordered
//! as one list; a withdrawal takes a peer's rows out; each peer applies its read policies to
//! what it answers; bad input.

use serde_json::{Value, json};

use super::support::{Peer, assert_error, dial, get, ok, post, restart_killed, start, until};

const FAST_PINGS: [&str; 2] = ["--group-ping-ms", "300"];

async fn notes(peer: &Peer, rows: &[(&str, i64)]) {
    let table = json!({
        "name": "notes", "context": true,
        "columns": [{"name": "slug", "type": "text", "key": true}, {"name": "stars", "type": "integer"}]
    });
    ok(&post(&peer.ready.api, "/api/data/tables", &table.to_string()).await);
    for (slug, stars) in rows {
        let query = format!(
            r#"mutation {{ insert_notes(object: {{slug: "{slug}", stars: {stars}}}) {{ _id }} }}"#
        );
        let out = graphql(peer, &query).await;
        assert!(out.get("errors").is_none(), "{out}");
    }
}

/// `(slug, owner)` of the federated `notes`, best first, as `peer` answers.
async fn federated(peer: &Peer) -> Value {
    graphql(peer, "{ notes(order_by: {stars: desc}) { slug _owner } }").await
}

/// Two peers, the first hosting a `data-federation` group the second has joined.
async fn federation_of_two() -> (Peer, Peer, String) {
    let (host, member) = (start(&FAST_PINGS).await, start(&FAST_PINGS).await);
    dial(&member, &host).await;
    let created = ok(&post(
        &host.ready.api,
        "/api/groups",
        &json!({"name": "fed", "group_type": "data-federation"}).to_string(),
    )
    .await);
    let group = created["id"].as_str().unwrap().to_owned();
    let join = json!({"host_peer_id": host.ready.peer_id, "group_id": group}).to_string();
    ok(&post(&member.ready.api, "/api/groups/join", &join).await);
    (host, member, group)
}

#[tokio::test]
async fn a_query_on_either_peer_returns_both_peers_rows_in_one_order() {
    let (host, member, group) = federation_of_two().await;
    let (h, m) = (host.ready.peer_id.as_str(), member.ready.peer_id.as_str());
    let host_rows = json!([{"slug": "h1", "_owner": h}, {"slug": "h2", "_owner": h}]);
    notes(&host, &[("h1", 4), ("h2", 1)]).await;
    let offer = json!({"group_id": group, "tables": ["notes"]}).to_string();
    let offered = ok(&post(&host.ready.api, "/api/datafed/offer", &offer).await);
    assert_eq!(offered["tables"], 1, "{offered}");
    until(15, "the member serves the host's rows", async || {
        federated(&member).await["data"]["notes"] == host_rows
    })
    .await;

    // The member makes its own `notes` after: its rows join the federated list at once, and
    // its own table keeps its mutations (`notes` inserts through GraphQL).
    notes(&member, &[("m1", 5), ("m2", 3)]).await;
    let offered = ok(&post(&member.ready.api, "/api/datafed/offer", &offer).await);
    assert_eq!(offered["tables"], 1, "{offered}");
    let out = graphql(&member, "{ notes_by_pk(_id: 2) { slug } }").await;
    assert_eq!(out["data"]["notes_by_pk"], json!({"slug": "m2"}), "{out}");
    let want = json!([
        {"slug": "m1", "_owner": m}, {"slug": "h1", "_owner": h},
        {"slug": "m2", "_owner": m}, {"slug": "h2", "_owner": h}
    ]);
    for (who, peer) in [("host", &host), ("member", &member)] {
        until(
            15,
            &format!("the {who} serves both peers' rows"),
            async || federated(peer).await["data"]["notes"] == want,
        )
        .await;
    }

    // The host adds a table of levels and links notes to it: the member's notes, and the
    // host's, list their level from the host's table.
    let levels = json!({
        "name": "levels", "context": true,
        "columns": [{"name": "stars", "type": "integer", "key": true}, {"name": "label", "type": "text"}]
    });
    ok(&post(&host.ready.api, "/api/data/tables", &levels.to_string()).await);
    for (stars, label) in [(5, "great"), (4, "good"), (3, "fair")] {
        let insert = format!(
            r#"mutation {{ insert_levels(object: {{stars: {stars}, label: "{label}"}}) {{ _id }} }}"#
        );
        assert!(graphql(&host, &insert).await.get("errors").is_none());
    }
    let link = json!({"from_table": "notes", "from_column": "stars", "to_table": "levels", "to_column": "stars"});
    let offer_linked =
        json!({"group_id": group, "tables": ["notes", "levels"], "relationships": [link]});
    let offered = ok(&post(
        &host.ready.api,
        "/api/datafed/offer",
        &offer_linked.to_string(),
    )
    .await);
    assert_eq!(offered["tables"], 2, "{offered}");
    let query = "{ notes(order_by: {stars: desc}, limit: 3) { slug levels { label } } }";
    until(
        15,
        "the member's notes list the host's levels",
        async || {
            graphql(&member, query).await["data"]["notes"]
                == json!([
                    {"slug": "m1", "levels": [{"label": "great"}]},
                    {"slug": "h1", "levels": [{"label": "good"}]},
                    {"slug": "m2", "levels": [{"label": "fair"}]}
                ])
        },
    )
    .await;
    let unlinked = json!({"group_id": group, "tables": ["notes"], "relationships": [
        {"from_table": "levels", "from_column": "stars", "to_table": "notes", "to_column": "stars"}
    ]});
    let refused = post(&host.ready.api, "/api/datafed/offer", &unlinked.to_string()).await;
    assert_error(&refused, 400, "bad_relationship");
    let contributions = ok(&post(
        &member.ready.api,
        "/api/datafed/contributions",
        &json!({"group_id": group}).to_string(),
    )
    .await);
    assert_eq!(
        contributions.as_array().unwrap().len(),
        2,
        "{contributions}"
    );
    let from_host = contributions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer_id"] == h)
        .unwrap();
    assert_eq!(from_host["relationships"], json!([link]), "{contributions}");
    ok(&post(&host.ready.api, "/api/datafed/offer", &offer).await);
    let groups = ok(&get(&member.ready.api, "/api/datafed/groups").await);
    assert_eq!(groups[0]["group_id"], group.as_str(), "{groups}");

    // The member withdraws: the host serves its own rows only.
    let body = json!({"group_id": group}).to_string();
    ok(&post(&member.ready.api, "/api/datafed/withdraw", &body).await);
    until(15, "the host stops asking the member", async || {
        federated(&host).await["data"]["notes"] == host_rows
    })
    .await;

    // Offered again, then deleted: a deleted table is withdrawn by itself.
    ok(&post(&member.ready.api, "/api/datafed/offer", &offer).await);
    until(15, "the host asks the member again", async || {
        federated(&host).await["data"]["notes"] == want
    })
    .await;
    let drop = json!({"name": "notes"}).to_string();
    ok(&post(&member.ready.api, "/api/data/tables/delete", &drop).await);
    until(
        15,
        "the host stops asking for a deleted table",
        async || {
            let contributions =
                ok(&post(&host.ready.api, "/api/datafed/contributions", &body).await);
            federated(&host).await["data"]["notes"] == host_rows
                && contributions.as_array().is_some_and(|c| c.len() == 1)
        },
    )
    .await;
    assert!(federated(&host).await.get("errors").is_none());

    // Bad input.
    let unknown = json!({"group_id": "0123456789abcdef", "tables": ["notes"]}).to_string();
    assert_error(
        &post(&host.ready.api, "/api/datafed/offer", &unknown).await,
        404,
        "unknown_group",
    );
    let none = json!({"group_id": group, "tables": []}).to_string();
    assert_error(
        &post(&host.ready.api, "/api/datafed/offer", &none).await,
        400,
        "bad_request",
    );
    let missing = json!({"group_id": group, "tables": ["nope"]}).to_string();
    assert_error(
        &post(&host.ready.api, "/api/datafed/offer", &missing).await,
        400,
        "no_tables",
    );
}

/// Creates `table` on `peer` with a text key `slug`, and inserts `slugs`.
async fn table_with_rows(peer: &Peer, table: Value, slugs: &[&str]) {
    let name = table["name"].as_str().unwrap().to_owned();
    ok(&post(&peer.ready.api, "/api/data/tables", &table.to_string()).await);
    for slug in slugs {
        let query =
            format!(r#"mutation {{ insert_{name}(object: {{slug: "{slug}"}}) {{ _id }} }}"#);
        let out = graphql(peer, &query).await;
        assert!(out.get("errors").is_none(), "{out}");
    }
}

async fn graphql(peer: &Peer, query: &str) -> Value {
    ok(&post(
        &peer.ready.api,
        "/api/graphql",
        &json!({"query": query}).to_string(),
    )
    .await)
}

#[tokio::test]
async fn each_peer_answers_only_what_its_read_policies_allow() {
    let (host, member, group) = federation_of_two().await;
    let slug = json!([{"name": "slug", "type": "text", "key": true}]);
    // Readable by editors only, by each reader's own rows only, and never offered.
    table_with_rows(
        &host,
        json!({"name": "board", "context": true, "columns": slug,
               "access": {"read": "group", "insert": ""},
               "roles": {"editor": {"read": true}}}),
        &["b1", "b2"],
    )
    .await;
    table_with_rows(
        &host,
        json!({"name": "diary", "context": true, "columns": slug, "access": {"read": "owner"}}),
        &["d1"],
    )
    .await;
    table_with_rows(
        &host,
        json!({"name": "secret", "context": true, "columns": slug, "access": {"read": "local"}}),
        &["s1"],
    )
    .await;

    // A local table is never offered; the host reads all of its own tables.
    let secret = json!({"group_id": group, "tables": ["board", "secret"]}).to_string();
    let refused = post(&host.ready.api, "/api/datafed/offer", &secret).await;
    assert_error(&refused, 400, "local_table");
    assert!(refused.body.contains("secret"), "{}", refused.body);
    let out = graphql(&host, "{ secret { slug } }").await;
    assert_eq!(out["data"]["secret"], json!([{"slug": "s1"}]), "{out}");
    let offer = json!({"group_id": group, "tables": ["board", "diary"]}).to_string();
    assert_eq!(
        ok(&post(&host.ready.api, "/api/datafed/offer", &offer).await)["tables"],
        2
    );

    // The member joined as a viewer: the host refuses it `board`, and names itself in the
    // member's errors; `diary` answers only rows the member owns (none).
    let h = host.ready.peer_id.as_str();
    until(15, "the member is refused board by its role", async || {
        let out = graphql(&member, "{ board { slug } }").await;
        out["errors"][0]["message"].as_str().is_some_and(|m| {
            m.contains(h)
                && m.contains(r#"access denied: role "viewer" may not read table "board""#)
        })
    })
    .await;
    let out = graphql(&member, "{ diary { slug } }").await;
    assert_eq!(out["data"]["diary"], json!([]), "{out}");
    assert!(out.get("errors").is_none(), "{out}");

    // Made an editor by the host, it reads the host's rows.
    let role = json!({"group_id": group, "peer_id": member.ready.peer_id, "role": "editor"});
    ok(&post(&host.ready.api, "/api/groups/set-role", &role.to_string()).await);
    until(15, "the editor reads board", async || {
        graphql(&member, "{ board(order_by: {slug: asc}) { slug _owner } }").await["data"]["board"]
            == json!([{"slug": "b1", "_owner": h}, {"slug": "b2", "_owner": h}])
    })
    .await;

    // Made local afterwards, `board` leaves the federation by itself; `diary` stays.
    let local = json!({"name": "board", "access": {"read": "local"}});
    ok(&post(
        &host.ready.api,
        "/api/data/tables/update",
        &local.to_string(),
    )
    .await);
    let body = json!({"group_id": group}).to_string();
    until(15, "the member no longer sees board offered", async || {
        let contributions = ok(&post(&member.ready.api, "/api/datafed/contributions", &body).await);
        let names: Vec<&str> = contributions[0]["tables"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        names == ["diary"]
    })
    .await;

    // Bad policies are refused when the table is created.
    let bad = json!({"name": "t", "columns": slug, "access": {"read": "everyone"}});
    let answer = post(&host.ready.api, "/api/data/tables", &bad.to_string()).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("unknown access policy"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn offers_come_back_after_the_host_or_a_member_is_killed_and_restarted() {
    let (host, member, group) = federation_of_two().await;
    notes(&host, &[("h1", 4)]).await;
    notes(&member, &[("m1", 5)]).await;
    let offer = json!({"group_id": group, "tables": ["notes"]}).to_string();
    for peer in [&host, &member] {
        ok(&post(&peer.ready.api, "/api/datafed/offer", &offer).await);
    }
    let (h, m) = (
        host.ready.peer_id.to_string(),
        member.ready.peer_id.to_string(),
    );
    let want = json!([{"slug": "m1", "_owner": m}, {"slug": "h1", "_owner": h}]);
    let both = async |peer: &Peer| federated(peer).await["data"]["notes"] == want;
    until(15, "the member serves both rows", async || {
        both(&member).await
    })
    .await;

    // kill -9 the host: once the member is back, each serves both peers' rows again, with
    // nobody offering anything anew.
    let host = restart_killed(host, &FAST_PINGS).await;
    until(20, "the restarted host serves both rows", async || {
        both(&host).await
    })
    .await;
    until(20, "the member serves both rows again", async || {
        both(&member).await
    })
    .await;

    // The same for the member (which, unlike a host, finds its peers only as it is told to:
    // `--peer` or a dial).
    let member = restart_killed(member, &FAST_PINGS).await;
    dial(&member, &host).await;
    until(20, "the restarted member serves both rows", async || {
        both(&member).await
    })
    .await;
    until(20, "the host serves both rows again", async || {
        both(&host).await
    })
    .await;

    // A withdrawal is kept too.
    let body = json!({"group_id": group}).to_string();
    ok(&post(&member.ready.api, "/api/datafed/withdraw", &body).await);
    let member = restart_killed(member, &FAST_PINGS).await;
    dial(&member, &host).await;
    let contributions = ok(&post(&member.ready.api, "/api/datafed/contributions", &body).await);
    assert!(
        contributions
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["peer_id"] != m.as_str()),
        "{contributions}"
    );
    until(20, "the host serves its own rows only", async || {
        federated(&host).await["data"]["notes"] == json!([{"slug": "h1", "_owner": h}])
    })
    .await;

    // A member that leaves forgets the federation, and serves its own rows only.
    ok(&post(&member.ready.api, "/api/groups/leave", &body).await);
    until(10, "the member forgets the federation", async || {
        get(&member.ready.api, "/api/datafed/groups").await.json() == json!([])
    })
    .await;
    assert_eq!(
        federated(&member).await["data"]["notes"],
        json!([{"slug": "m1", "_owner": m}])
    );
}

/// An empty `guestbook` (`slug`, required `text`) on `peer`, read as `read` says: anyone in
/// the group may sign it; a viewer may edit its own entries but not delete them.
async fn guestbook(peer: &Peer, read: &str) {
    let columns = json!([{"name": "slug", "type": "text", "key": true}, {"name": "text", "type": "text", "required": true}]);
    table_with_rows(
        peer,
        json!({"name": "guestbook", "context": true, "columns": columns,
               "access": {"read": read, "insert": "open", "update": "group", "delete": "group"},
               "roles": {"viewer": {"update": true}}}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn writes_to_another_peers_table_follow_its_policies() {
    let (host, member, group) = federation_of_two().await;
    let (h, m) = (host.ready.peer_id.as_str(), member.ready.peer_id.as_str());
    // Anyone in the group may sign the guestbook and read back only their own entries;
    // a viewer may edit its own entries but not delete them. Notices are the host's alone.
    guestbook(&host, "owner").await;
    table_with_rows(
        &host,
        json!({"name": "notices", "context": true, "columns": [{"name": "slug", "type": "text", "key": true}]}),
        &["n1"],
    )
    .await;
    let insert = "mutation { insert_guestbook(object: {slug: \"by-host\", text: \"hi\"}) { _id } }";
    assert!(graphql(&host, insert).await.get("errors").is_none());
    let offer = json!({"group_id": group, "tables": ["guestbook", "notices"]}).to_string();
    ok(&post(&host.ready.api, "/api/datafed/offer", &offer).await);
    let write = |route: &'static str, body: Value| {
        let api = member.ready.api.clone();
        async move { post(&api, route, &body.to_string()).await }
    };
    let target = |extra: Value| {
        let mut body = json!({"group_id": group, "peer_id": h, "table": "guestbook"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    // Inserted on the host, owned by the member, and read back by it alone.
    let row = ok(&write(
        "/api/datafed/insert",
        target(json!({"object": {"slug": "by-member", "text": "hello"}})),
    )
    .await);
    assert_eq!(
        (row["slug"].as_str(), row["_owner"].as_str()),
        (Some("by-member"), Some(m))
    );
    let mine = row["_id"].as_i64().unwrap();
    until(15, "the member reads its own entry only", async || {
        graphql(&member, "{ guestbook { slug _owner } }").await["data"]["guestbook"]
            == json!([{"slug": "by-member", "_owner": m}])
    })
    .await;
    let all = graphql(&host, "{ guestbook(order_by: {slug: asc}) { slug } }").await;
    assert_eq!(
        all["data"]["guestbook"],
        json!([{"slug": "by-host"}, {"slug": "by-member"}]),
        "{all}"
    );

    // Its own entry it may edit, not the host's; deleting is not a viewer's.
    let edited = ok(&write(
        "/api/datafed/update",
        target(json!({"_id": mine, "object": {"text": "hello again"}})),
    )
    .await);
    assert_eq!(edited["text"], "hello again");
    assert_error(
        &write(
            "/api/datafed/update",
            target(json!({"_id": 1, "object": {"text": "mine now"}})),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &write("/api/datafed/delete", target(json!({"_id": mine}))).await,
        403,
        "access_denied",
    );
    // Notices take no insert from others (the default policy).
    let notice =
        json!({"group_id": group, "peer_id": h, "table": "notices", "object": {"slug": "n2"}});
    assert_error(
        &write("/api/datafed/insert", notice).await,
        403,
        "access_denied",
    );
    // The table's own rules hold: a required column.
    assert_error(
        &write(
            "/api/datafed/insert",
            target(json!({"object": {"slug": "no-text"}})),
        )
        .await,
        400,
        "invalid_request",
    );
    // The host may do anything with its own table, through the same route.
    let deleted = ok(&post(
        &host.ready.api,
        "/api/datafed/delete",
        &json!({"group_id": group, "peer_id": h, "table": "guestbook", "_id": mine}).to_string(),
    )
    .await);
    assert_eq!(deleted["affected_rows"], 1);

    // Bad requests change nothing.
    for (body, code) in [
        (target(json!({})), "bad_request"),
        (
            target(json!({"object": {"slug": "x", "text": "y"}, "extra": 1})),
            "invalid_json",
        ),
        (
            json!({"group_id": group, "peer_id": "nobody", "table": "guestbook", "object": {}}),
            "invalid_peer_id",
        ),
    ] {
        assert_error(&write("/api/datafed/insert", body).await, 400, code);
    }
    let all = graphql(&host, "{ guestbook { slug } }").await;
    assert_eq!(
        all["data"]["guestbook"],
        json!([{"slug": "by-host"}]),
        "{all}"
    );
}

#[tokio::test]
async fn graphql_mutations_write_another_peers_table_when_they_name_it() {
    let (host, member, group) = federation_of_two().await;
    let (h, m) = (host.ready.peer_id.as_str(), member.ready.peer_id.as_str());
    // Anyone may sign and read; a viewer may edit its own entries but not delete them.
    guestbook(&host, "open").await;
    let offer = json!({"group_id": group, "tables": ["guestbook"]}).to_string();
    ok(&post(&host.ready.api, "/api/datafed/offer", &offer).await);

    // The member has no such table: its mutations need `peer`, and write the host's.
    let insert = format!(
        r#"mutation {{ insert_guestbook(object: {{slug: "gq", text: "hi"}}, peer: "{h}") {{ _id slug _owner _peer }} }}"#
    );
    let mut inserted = Value::Null;
    until(15, "the member writes the host's table", async || {
        inserted = graphql(&member, &insert).await;
        inserted.get("errors").is_none()
    })
    .await;
    let row = &inserted["data"]["insert_guestbook"];
    assert_eq!(
        (&row["slug"], &row["_owner"], &row["_peer"]),
        (&json!("gq"), &json!(m), &json!(h)),
        "{inserted}"
    );
    let id = row["_id"].as_i64().unwrap();
    let on_host = graphql(
        &host,
        &format!("{{ guestbook_by_pk(_id: {id}) {{ text _owner }} }}"),
    )
    .await;
    assert_eq!(
        on_host["data"]["guestbook_by_pk"],
        json!({"text": "hi", "_owner": m}),
        "{on_host}"
    );
    let update = format!(
        r#"mutation {{ update_guestbook_by_pk(_id: {id}, _set: {{text: "hi again"}}, peer: "{h}") {{ text }} }}"#
    );
    let updated = graphql(&member, &update).await;
    assert_eq!(
        updated["data"]["update_guestbook_by_pk"]["text"], "hi again",
        "{updated}"
    );

    // The host's rules hold: the peer refuses, and says why.
    let delete = format!(
        r#"mutation {{ delete_guestbook_by_pk(_id: {id}, peer: "{h}") {{ affected_rows }} }}"#
    );
    let refused = graphql(&member, &delete).await;
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("peer {h}: ")), "{refused}");
    assert!(message.contains("access denied"), "{refused}");
    let nameless = graphql(
        &member,
        r#"mutation { insert_guestbook(object: {slug: "x", text: "y"}) { _id } }"#,
    )
    .await;
    assert!(nameless.get("errors").is_some(), "{nameless}");
    let all = graphql(&host, "{ guestbook { slug text } }").await;
    assert_eq!(
        all["data"]["guestbook"],
        json!([{"slug": "gq", "text": "hi again"}]),
        "{all}"
    );
}
