//! `goop graphql`: one GraphQL request to a node, the answer printed as JSON.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::cmd_job::{ApiArgs, fail};

/// What `goop graphql` sends (its help is the doc of `Command::Graphql`).
#[derive(Debug, Args)]
pub struct GraphqlArgs {
    /// The query (`-`: read it from standard input).
    query: Option<String>,
    /// Read the query from this file (`-`: standard input).
    #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "query")]
    file: Option<String>,
    /// The query's variables, a JSON object.
    #[arg(long, value_name = "JSON")]
    variables: Option<String>,
    /// The operation to run, when the query holds several.
    #[arg(long, value_name = "NAME")]
    operation: Option<String>,
}

#[derive(Serialize)]
struct Request {
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<serde_json::Value>,
    #[serde(rename = "operationName", skip_serializing_if = "Option::is_none")]
    operation: Option<String>,
}

/// Runs `goop graphql ...`.
pub fn run(api: &ApiArgs, args: GraphqlArgs) -> ExitCode {
    let query = match (args.query, args.file) {
        (Some(query), None) if query != "-" => Ok(query),
        (Some(_), None) => read("-"),
        (None, Some(path)) => read(&path),
        (None, None) => Err("give a query, or --file with one".to_owned()),
        (Some(_), Some(_)) => Err("give a query or --file, not both".to_owned()),
    };
    let query = match query {
        Ok(query) if !query.trim().is_empty() => query,
        Ok(_) => return fail("the query is empty"),
        Err(error) => return fail(error),
    };
    let variables = match args.variables.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(serde_json::Value::Object(vars))) => Some(serde_json::Value::Object(vars)),
        Some(Ok(_)) => return fail("--variables must be a JSON object"),
        Some(Err(error)) => return fail(format!("--variables is not JSON: {error}")),
    };
    let request = Request {
        query,
        variables,
        operation: args.operation,
    };
    match api
        .client()
        .post::<_, serde_json::Value>("/api/graphql", &request)
    {
        Ok(answer) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
            let failed = answer
                .get("errors")
                .and_then(|e| e.as_array())
                .is_some_and(|e| !e.is_empty());
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => fail(error),
    }
}

/// The query in file `path` (`-`: standard input).
fn read(path: &str) -> Result<String, String> {
    if path == "-" {
        let mut query = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut query)
            .map_err(|e| format!("cannot read the query from standard input: {e}"))?;
        return Ok(query);
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the query from {path}: {e}"))
}
