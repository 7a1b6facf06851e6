//! An example executor built on the executor SDK, doing real work for two job types:
//!
//! - `calculate`: `{"expression":"(a + b) * 2 ^ c","parameters":{"a":1,"b":2,"c":3}}` gives
//!   `{"expression":…,"value":24}`. With `"expressions":[…]` instead it evaluates each in turn,
//!   streams each value as an `output` line and reports progress, then gives `{"values":[…]}`.
//! - `transform`: `{"input":"…","format":"upper","options":{"delimiter":";"}}` gives
//!   `{"format":"upper","output":…}`; the formats are listed in `examples::transform`.
//!
//! Capacity is 4, or `GOOP_EXAMPLE_CAPACITY`.

use std::collections::HashMap;
use std::process::ExitCode;

use examples::{calc, transform};
use executor_sdk::{Context, Error, Executor, Job, RawValue};
use serde::{Deserialize, Serialize};
use serde_json::Number;

#[derive(Deserialize)]
struct Calculate {
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    expressions: Option<Vec<String>>,
    #[serde(default)]
    parameters: HashMap<String, f64>,
}

/// A value as JSON: whole numbers that `f64` holds exactly are written as integers (`24`, not
/// `24.0`).
fn number(value: f64) -> Number {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() <= EXACT {
        // In range and whole, so the conversion is exact.
        Number::from(value as i64)
    } else {
        Number::from_f64(value).unwrap_or_else(|| Number::from(0))
    }
}

fn calculate(job: Job, ctx: &Context<'_>) -> Result<serde_json::Value, Error> {
    let payload: Calculate = job.payload()?;
    let lookup = |name: &str| payload.parameters.get(name).copied();
    match (&payload.expression, &payload.expressions) {
        (Some(expression), None) => {
            ctx.progress(0.0, "parsing");
            let parsed = calc::parse(expression)?;
            ctx.progress(50.0, "evaluating");
            let value = calc::eval(&parsed, &lookup)?;
            ctx.progress(100.0, "done");
            Ok(serde_json::json!({ "expression": expression, "value": number(value) }))
        }
        (None, Some(expressions)) => {
            ctx.log(format!("evaluating {} expressions", expressions.len()));
            let mut values = Vec::with_capacity(expressions.len());
            for (i, expression) in expressions.iter().enumerate() {
                ctx.check_cancelled()?;
                let value = calc::evaluate(expression, &lookup)
                    .map_err(|e| Error::new(format!("expression {}: {e}", i + 1)))?;
                ctx.output(&serde_json::json!({ "index": i, "value": number(value) }))?;
                let pct = 100.0 * (i + 1) as f64 / expressions.len() as f64;
                ctx.progress(pct.floor(), format!("{} of {}", i + 1, expressions.len()));
                values.push(number(value));
            }
            Ok(serde_json::json!({ "values": values }))
        }
        _ => Err(Error::new(
            "payload needs exactly one of `expression` (a string) or `expressions` (an array)",
        )),
    }
}

#[derive(Deserialize)]
struct Transform<'a> {
    #[serde(borrow)]
    input: &'a RawValue,
    format: String,
    #[serde(default)]
    options: Options,
}

#[derive(Deserialize, Default)]
struct Options {
    #[serde(default)]
    delimiter: Option<String>,
}

#[derive(Serialize)]
struct Transformed {
    format: String,
    output: transform::Transformed,
}

fn transform(job: Job, ctx: &Context<'_>) -> Result<Transformed, Error> {
    let payload: Transform<'_> = job.payload()?;
    let delimiter = match payload.options.delimiter.as_deref() {
        None => ',',
        Some(text) => {
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c != '"' && c != '\n' && c != '\r' => c,
                _ => return Err(Error::new("`options.delimiter` must be one character")),
            }
        }
    };
    ctx.progress(0.0, format!("transforming with {}", payload.format));
    let output = transform::transform(
        payload.input,
        &payload.format,
        delimiter,
        &mut |pct, msg| {
            ctx.progress(pct.floor(), msg);
        },
    )
    .map_err(Error::new)?;
    ctx.progress(100.0, "done");
    // Returned as a typed value, not a `serde_json::Value`, so object keys keep column order.
    Ok(Transformed {
        format: payload.format,
        output,
    })
}

fn main() -> ExitCode {
    let capacity = std::env::var("GOOP_EXAMPLE_CAPACITY")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(4);
    Executor::new("goop-example-executor")
        .version(env!("CARGO_PKG_VERSION"))
        .capacity(capacity)
        .handle("calculate", calculate)
        .handle("transform", transform)
        .run()
}
