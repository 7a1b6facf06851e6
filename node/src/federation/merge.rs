//! How the tables several peers offer under one name become one federated table, and which
//! relationships are served.

use std::collections::BTreeMap;

use graphql::engine::Federated;
use graphql::{Relationship, Table};
use proto::PeerId;

use super::Contributions;

/// Every relationship offered to any group, this peer's own included, once each.
pub(super) fn relationships(contributions: &Contributions) -> Vec<Relationship> {
    let mut all: Vec<Relationship> = contributions
        .values()
        .flat_map(|peers| peers.values())
        .flat_map(|offer| offer.relationships.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The federated tables: for each table name other peers offer, the columns every
/// contributor (this peer included, when it has the table in context) shares with the same
/// type; a name whose shared columns hold no key is left out.
pub(super) fn merge(contributions: &Contributions, local: &[Table], me: &PeerId) -> Vec<Federated> {
    // By table name: the schemas offered, and who offered them in which group.
    type Offers = (Vec<Table>, Vec<(String, String)>);
    let mut by_name: BTreeMap<String, Offers> = BTreeMap::new();
    for (group, peers) in contributions {
        for (peer, offer) in peers {
            if peer == me {
                continue;
            }
            for table in &offer.tables {
                let entry = by_name.entry(table.name.clone()).or_default();
                if !entry.1.iter().any(|(p, _)| p == peer.as_str()) {
                    entry.0.push(table.clone());
                    entry.1.push((peer.to_string(), group.to_string()));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (name, (mut schemas, sources)) in by_name {
        let mine = local.iter().find(|t| t.name == name);
        if let Some(mine) = mine {
            schemas.insert(0, mine.clone());
        }
        let first = &schemas[0];
        let columns: Vec<_> = first
            .columns
            .iter()
            .filter(|c| {
                schemas.iter().all(|t| {
                    t.columns
                        .iter()
                        .any(|o| o.name == c.name && o.kind == c.kind)
                })
            })
            .cloned()
            .collect();
        let system_key = schemas.iter().all(|t| t.system_key);
        if columns.is_empty() || (!system_key && !columns.iter().any(|c| c.key)) {
            tracing::warn!(table = %name, "the offered schemas share no key column; not served");
            continue;
        }
        out.push(Federated {
            table: Table {
                name,
                columns,
                context: true,
                system_key,
                // Each contributor applies its own policies to what it answers.
                access: None,
                roles: BTreeMap::new(),
            },
            local: mine.is_some(),
            sources,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Offer;
    use super::*;

    fn table(name: &str, columns: serde_json::Value) -> Table {
        serde_json::from_value(json!({"name": name, "context": true, "columns": columns})).unwrap()
    }

    fn peer(name: &str) -> PeerId {
        name.parse().unwrap()
    }

    fn offering(offers: &[(&str, Vec<Table>, Vec<Relationship>)]) -> Contributions {
        let peers = offers
            .iter()
            .map(|(p, tables, relationships)| {
                let offer = Offer {
                    tables: tables.clone(),
                    relationships: relationships.clone(),
                };
                (peer(p), offer)
            })
            .collect();
        [("g".parse().unwrap(), peers)].into_iter().collect()
    }

    #[test]
    fn a_name_is_served_with_the_columns_every_contributor_shares() {
        let key = json!({"name": "k", "type": "text", "key": true});
        let mine = table(
            "t",
            json!([key, {"name": "a", "type": "integer"}, {"name": "b", "type": "text"}]),
        );
        let theirs = table(
            "t",
            json!([key, {"name": "a", "type": "integer"}, {"name": "b", "type": "real"}]),
        );
        let keyless = table("u", json!([{"name": "x", "type": "text", "key": true}]));
        let other_keyless = table("u", json!([{"name": "x", "type": "integer", "key": true}]));
        let contributions = offering(&[
            ("me", vec![mine.clone()], vec![]),
            ("them", vec![theirs, keyless], vec![]),
            ("else", vec![other_keyless], vec![]),
        ]);
        let merged = merge(&contributions, &[mine], &peer("me"));
        // `u`: no column with one type shared by both: not served.
        assert_eq!(merged.len(), 1);
        let t = &merged[0];
        let names: Vec<&str> = t.table.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["k", "a"], "b differs in type");
        assert!(t.local);
        assert_eq!(
            t.sources,
            [("them".to_owned(), "g".to_owned())],
            "never this peer"
        );
    }

    #[test]
    fn relationships_are_served_once_whoever_offered_them() {
        let link = Relationship {
            from_table: "a".into(),
            from_column: "x".into(),
            to_table: "b".into(),
            to_column: "y".into(),
        };
        let contributions = offering(&[
            ("me", vec![], vec![link.clone()]),
            ("them", vec![], vec![link.clone()]),
        ]);
        assert_eq!(relationships(&contributions), [link]);
    }
}
