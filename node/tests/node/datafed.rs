//! Data federation between real `goop node` processes: two peers offer the same table to a
//! `data-federation` group, and a GraphQL query on either returns both peers' rows, ordered
//! as one list; a withdrawal takes a peer's rows out; bad input.

use serde_json::{Value, json};

use super::support::{Peer, assert_error, dial, get, ok, post, start, until};

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
        let out = ok(&post(
            &peer.ready.api,
            "/api/graphql",
            &json!({"query": query}).to_string(),
        )
        .await);
        assert!(out.get("errors").is_none(), "{out}");
    }
}

/// `(slug, owner)` of the federated `notes`, best first, as `peer` answers.
async fn federated(peer: &Peer) -> Value {
    let query = "{ notes(order_by: {stars: desc}) { slug _owner } }";
    ok(&post(
        &peer.ready.api,
        "/api/graphql",
        &json!({"query": query}).to_string(),
    )
    .await)
}

#[tokio::test]
async fn a_query_on_either_peer_returns_both_peers_rows_in_one_order() {
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
    notes(&host, &[("h1", 4), ("h2", 1)]).await;
    notes(&member, &[("m1", 5), ("m2", 3)]).await;

    let offer = json!({"group_id": group, "tables": ["notes"]}).to_string();
    for peer in [&host, &member] {
        let offered = ok(&post(&peer.ready.api, "/api/datafed/offer", &offer).await);
        assert_eq!(offered["tables"], 1, "{offered}");
    }
    let (h, m) = (host.ready.peer_id.as_str(), member.ready.peer_id.as_str());
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
    let contributions = ok(&post(
        &host.ready.api,
        "/api/datafed/contributions",
        &json!({"group_id": group}).to_string(),
    )
    .await);
    assert_eq!(
        contributions.as_array().unwrap().len(),
        2,
        "{contributions}"
    );
    let groups = ok(&get(&member.ready.api, "/api/datafed/groups").await);
    assert_eq!(groups[0]["group_id"], group.as_str(), "{groups}");

    // The member withdraws: the host serves its own rows only.
    let body = json!({"group_id": group}).to_string();
    ok(&post(&member.ready.api, "/api/datafed/withdraw", &body).await);
    until(15, "the host stops asking the member", async || {
        federated(&host).await["data"]["notes"]
            == json!([{"slug": "h1", "_owner": h}, {"slug": "h2", "_owner": h}])
    })
    .await;

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
