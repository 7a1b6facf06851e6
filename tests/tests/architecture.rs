//! Architecture rules, checked from `cargo metadata` rather than remembered: the pure crates
//! stay pure, and nothing depends on the binary crate.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The resolved dependency graph: package id to (name, dependencies that are not dev-only).
struct Graph {
    names: HashMap<String, String>,
    normal_deps: HashMap<String, Vec<String>>,
    any_deps: HashMap<String, Vec<String>>,
}

fn load_graph() -> Result<Graph> {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(tests::workspace_root())
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    let mut names = HashMap::new();
    for package in meta["packages"].as_array().context("no packages")? {
        names.insert(
            package["id"].as_str().context("package id")?.to_owned(),
            package["name"].as_str().context("package name")?.to_owned(),
        );
    }
    let mut normal_deps = HashMap::new();
    let mut any_deps = HashMap::new();
    for node in meta["resolve"]["nodes"]
        .as_array()
        .context("no resolve graph")?
    {
        let id = node["id"].as_str().context("node id")?.to_owned();
        let mut normal = Vec::new();
        let mut any = Vec::new();
        for dep in node["deps"].as_array().context("node deps")? {
            let pkg = dep["pkg"].as_str().context("dep pkg")?.to_owned();
            let kinds = dep["dep_kinds"].as_array().context("dep kinds")?;
            if kinds.iter().any(|k| k["kind"].as_str() != Some("dev")) {
                normal.push(pkg.clone());
            }
            any.push(pkg);
        }
        normal_deps.insert(id.clone(), normal);
        any_deps.insert(id, any);
    }
    Ok(Graph {
        names,
        normal_deps,
        any_deps,
    })
}

impl Graph {
    fn id_of(&self, name: &str) -> Result<&str> {
        let mut ids = self
            .names
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(id, _)| id.as_str());
        ids.next()
            .with_context(|| format!("no package named {name}"))
    }

    /// Names of every package `name` pulls in for its library, transitively, dev-deps excluded.
    fn closure(&self, name: &str) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.id_of(name)?.to_owned()];
        while let Some(id) = stack.pop() {
            for dep in self.normal_deps.get(&id).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        Ok(seen
            .iter()
            .filter_map(|id| self.names.get(id).cloned())
            .collect())
    }
}

const HEAVY: &[&str] = &[
    "tokio",
    "libp2p",
    "rusqlite",
    "nix",
    "axum",
    "async-graphql",
];

#[test]
fn pure_crates_pull_in_no_runtime_network_or_storage() -> Result<()> {
    let graph = load_graph()?;
    for pure in ["proto", "dispatcher", "executor-sdk"] {
        let deps = graph.closure(pure)?;
        let bad: Vec<_> = deps
            .iter()
            .filter(|d| HEAVY.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{pure} must not depend on {bad:?}");
    }
    Ok(())
}

#[test]
fn nothing_depends_on_the_binary_crate() -> Result<()> {
    let graph = load_graph()?;
    let node = graph.id_of("node")?.to_owned();
    for (id, deps) in &graph.any_deps {
        assert!(!deps.contains(&node), "{} depends on node", graph.names[id]);
    }
    Ok(())
}

#[test]
fn the_graph_sees_the_heavy_crates_where_they_belong() -> Result<()> {
    // Guards the two tests above against passing vacuously on a graph they cannot read.
    let graph = load_graph()?;
    assert!(graph.closure("groups")?.contains("libp2p"));
    assert!(graph.closure("worker")?.contains("tokio"));
    assert!(graph.closure("dispatcher")?.contains("proto"));
    Ok(())
}
