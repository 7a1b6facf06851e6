//! `GET /api/openapi.json`: the OpenAPI 3.1 document of this API, kept in `openapi.json` next
//! to the router.
//!
//! The document is static text, served as it is stored. Its tests keep it honest: it must be
//! valid OpenAPI 3.1 whose every `$ref` resolves, its (method, path) pairs must equal the
//! router's in `mod.rs`, and the shared schemas must list the fields the wire types write.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`. Guarded like every other route: with a token configured, it needs
/// the token.
pub(crate) async fn get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;

    /// The HTTP methods an OpenAPI path item may hold, which are also axum's method routers.
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON")
    }

    /// Every `$ref` value in `value`, with where it was found.
    fn refs<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "$ref" {
                        out.push((at.to_owned(), child.as_str().unwrap_or("<not a string>")));
                    } else {
                        refs(child, &format!("{at}/{key}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    refs(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_ref_resolves() {
        let doc = document();
        let version = doc["openapi"].as_str().unwrap_or("");
        assert!(version.starts_with("3.1."), "openapi is {version:?}");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let mut found = Vec::new();
        refs(&doc, "", &mut found);
        assert!(found.len() > 100, "only {} $refs", found.len());
        let broken: Vec<_> = found
            .iter()
            .filter(|(_, target)| {
                target
                    .strip_prefix('#')
                    .is_none_or(|pointer| doc.pointer(pointer).is_none())
            })
            .collect();
        assert!(broken.is_empty(), "unresolved $refs: {broken:?}");
    }

    /// The (method, path) pairs of the router, read from the `.route(...)` calls in `mod.rs`.
    fn router_routes() -> BTreeSet<(String, String)> {
        let source: String = include_str!("mod.rs")
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for unsupported in [".nest(", ".merge(", ".route_service(", ".nest_service("] {
            assert!(
                !source.contains(unsupported),
                "the router uses {unsupported}: teach this test to read it"
            );
        }
        let mut routes = BTreeSet::new();
        let mut rest = source.as_str();
        while let Some(start) = rest.find(".route(") {
            let call = &rest[start + ".route(".len()..];
            let args = &call[..closing_paren(call)];
            let (path, methods) = route_args(args);
            for method in methods {
                routes.insert((method, path.clone()));
            }
            rest = &call[args.len()..];
        }
        routes
    }

    /// The byte index of the `)` that closes a call whose arguments start `text`.
    fn closing_paren(text: &str) -> usize {
        let mut depth = 0usize;
        let mut in_string = false;
        for (i, c) in text.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '(' if !in_string => depth += 1,
                ')' if !in_string && depth == 0 => return i,
                ')' if !in_string => depth -= 1,
                _ => {}
            }
        }
        panic!("unbalanced .route( call in mod.rs: {text:.80}")
    }

    /// The path and the methods of `"<path>", get(..).post(..).layer(..)`.
    fn route_args(args: &str) -> (String, Vec<String>) {
        let args = args.trim();
        let inner = args
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("a route whose path is not a literal: {args}"));
        let end = inner.find('"').expect("a closed path literal");
        let path = inner[..end].to_owned();
        let handler = inner[end + 1..].trim_start().trim_start_matches(',');
        // The method routers are the identifiers called at depth 0: `get(..)`, `.post(..)`.
        let mut methods = Vec::new();
        let mut depth = 0usize;
        let mut word = String::new();
        for c in handler.chars() {
            match c {
                '(' => {
                    if depth == 0 {
                        match word.as_str() {
                            "layer" | "route_layer" | "with_state" => {}
                            w if METHODS.contains(&w) => methods.push(w.to_owned()),
                            w => panic!("route {path}: cannot tell the method of {w:?}(...)"),
                        }
                    }
                    depth += 1;
                    word.clear();
                }
                ')' => depth = depth.saturating_sub(1),
                c if c.is_alphanumeric() || c == '_' => word.push(c),
                _ => word.clear(),
            }
        }
        assert!(!methods.is_empty(), "route {path} has no method");
        (path, methods)
    }

    fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths");
        let mut routes = BTreeSet::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    routes.insert((method.to_owned(), path.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_router() {
        let router = router_routes();
        assert!(
            router.len() >= 40,
            "read only {} routes: {router:?}",
            router.len()
        );
        assert!(router.contains(&("post".into(), "/api/cluster/jobs".into())));
        assert!(router.contains(&("get".into(), "/api/cluster/jobs".into())));
        let documented = documented_routes(&document());
        let undocumented: Vec<_> = router.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&router).collect();
        assert!(
            undocumented.is_empty() && phantom.is_empty(),
            "routes without docs: {undocumented:?}; docs without a route: {phantom:?}"
        );
    }

    #[test]
    fn the_route_reader_understands_chained_methods_and_layers() {
        let (path, methods) = route_args(
            "\"/x/{id}\",\n get(a::b)\n .post(c::d)\n .layer(DefaultBodyLimit::max(f(1)))",
        );
        assert_eq!(path, "/x/{id}");
        assert_eq!(methods, ["get", "post"]);
        let (_, methods) = route_args("\"/y\", post(a::b).layer(DefaultBodyLimit::max(n))");
        assert_eq!(methods, ["post"]);
    }

    #[test]
    fn every_operation_is_described_and_answers_errors_in_the_api_shape() {
        let doc = document();
        let error = "#/components/schemas/Error";
        for (method, path) in documented_routes(&doc) {
            let op = &doc["paths"][&path][&method];
            let name = format!("{} {path}", method.to_uppercase());
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no summary"
            );
            assert!(op["operationId"].is_string(), "{name}: no operationId");
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.contains_key("200"), "{name}: no 200");
            for guard in ["401", "403"] {
                assert!(
                    responses.contains_key(guard),
                    "{name}: no {guard} from the guard"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("400"), "{name}: a body but no 400");
                assert!(responses.contains_key("413"), "{name}: a body but no 413");
            }
            for (status, response) in responses {
                let response = match response.get("$ref").and_then(Value::as_str) {
                    Some(target) => doc.pointer(&target[1..]).expect("resolved"),
                    None => response,
                };
                // 2xx answers are the operation's own; every other one is an Error.
                if !status.starts_with('2') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, error, "{name}: {status} is not an Error");
                }
            }
            let path_params: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for param in path_params {
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["in"] == "path" && p["name"] == param && p["required"] == true)
                });
                assert!(declared, "{name}: path parameter {param} not declared");
            }
        }
        // The event streams are documented as such.
        for path in [
            "/api/mq/events",
            "/api/groups/events",
            "/api/cluster/events",
        ] {
            let ok = &doc["paths"][path]["get"]["responses"]["200"];
            assert!(ok["content"]["text/event-stream"].is_object(), "{path}");
            assert!(ok["x-sse-events"]["lagged"].is_object(), "{path}");
        }
    }

    #[test]
    fn required_fields_are_declared_and_strict_bodies_refuse_unknown_fields() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for (name, schema) in schemas {
            let (Some(required), Some(properties)) = (
                schema["required"].as_array(),
                schema["properties"].as_object(),
            ) else {
                continue;
            };
            for field in required {
                let field = field.as_str().expect("a field name");
                assert!(
                    properties.contains_key(field),
                    "{name}.{field} is required but undeclared"
                );
            }
        }
        for strict in ["SubmitBatch", "SubmitJob"] {
            assert_eq!(schemas[strict]["additionalProperties"], false, "{strict}");
        }
    }

    /// The properties of schema `name`.
    fn properties(doc: &Value, name: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} has no properties"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(value: &impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(value)
            .expect("serializable")
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn the_shared_schemas_list_the_fields_the_wire_types_write() {
        use proto::api::{ClusterStatus, CreateCluster, SubmitJob};
        use proto::cluster::{AttemptOutcome, AttemptRecord, QueueStats, WorkerInfo, WorkerStatus};
        use proto::{Attempt, JobId, MemberInfo, Timestamp};

        let doc = document();
        let peer: proto::PeerId = "12D3KooWPeer".parse().expect("a peer id");
        let at = Timestamp::from_unix_ms(1_700_000_000_000);
        let mut job = SubmitJob::new("t");
        job.payload = Some(serde_json::value::to_raw_value(&1).expect("raw").into());
        job.labels = vec!["l".into()];
        job.not_before = Some(at);
        job.after = vec![JobId::from_u64(1)];
        job.idempotency_key = Some("k".into());
        assert_eq!(properties(&doc, "SubmitJob"), keys(&job));
        assert_eq!(properties(&doc, "QueueStats"), keys(&QueueStats::default()));
        let status = ClusterStatus {
            role: "worker".into(),
            group_id: "g".into(),
            stats: Some(QueueStats::default()),
            binary_path: Some("/bin/x".into()),
            binary_mode: Some("oneshot".into()),
            worker_status: Some("idle".into()),
        };
        assert_eq!(properties(&doc, "ClusterStatus"), keys(&status));
        let create = CreateCluster {
            name: Some("n".into()),
            group_id: Some("g".parse().expect("a group id")),
            max_members: 1,
            admission: Some(proto::Admission::Invite),
        };
        assert_eq!(properties(&doc, "CreateCluster"), keys(&create));
        let worker = WorkerInfo {
            peer_id: peer.clone(),
            status: WorkerStatus::Idle,
            binary_path: Some("/bin/x".into()),
            binary_mode: Some("oneshot".into()),
            verified: true,
            job_types: vec!["t".into()],
            capacity: 1,
            running_jobs: 0,
            last_seen: at,
            version: Some("1".into()),
        };
        assert_eq!(properties(&doc, "WorkerInfo"), keys(&worker));
        let attempt = AttemptRecord {
            attempt: Attempt(1),
            worker_id: peer.clone(),
            started_at: at,
            ended_at: Some(at),
            outcome: Some(AttemptOutcome::Failed),
            error: Some("e".into()),
        };
        assert_eq!(properties(&doc, "AttemptRecord"), keys(&attempt));
        let member = MemberInfo {
            peer_id: peer.clone(),
            name: Some("n".into()),
            role: "r".into(),
            joined_at: 1,
        };
        assert_eq!(properties(&doc, "MemberInfo"), keys(&member));
        let message = groups::chat::ChatMessage {
            id: "1-p".into(),
            from: peer.clone(),
            from_name: "n".into(),
            text: "t".into(),
            timestamp: 1,
        };
        assert_eq!(properties(&doc, "ChatMessage"), keys(&message));
        let room = groups::chat::Room {
            id: "g".parse().expect("a group id"),
            name: "r".into(),
            description: "d".into(),
            host: peer,
        };
        assert_eq!(properties(&doc, "ChatRoom"), keys(&room));
        let doc_info = groups::files::DocInfo {
            name: "n".into(),
            size: 1,
            mod_time: 1,
            hash: "sha256:0".into(),
        };
        assert_eq!(properties(&doc, "DocInfo"), keys(&doc_info));
    }
}
