//! The echo executor, for tests and benchmarks: serves every job type and returns the payload as
//! the result, byte for byte.
//!
//! Payload fields it acts on (when the payload is an object):
//! - `sleep_ms`: log `sleeping <n> ms`, then sleep this long, waking early (and failing with
//!   `cancelled`) on cancel;
//! - `fail`: a text; the job fails with it instead of echoing;
//! - `panic`: a text; the handler panics with it (the SDK turns that into an error line).
//!
//! A job in `continuous` mode instead streams its payload as an `output` line every
//! `interval_ms` (default 100) until it is cancelled, or, when the payload has `count`, until it
//! has written that many; the result is then `{"outputs":<count>}`.
//!
//! Capacity comes from `ECHO_CAPACITY` (default 64). The check answer lists no types, so the
//! worker sends it everything.

use std::borrow::Cow;
use std::process::ExitCode;
use std::time::Duration;

use executor_sdk::{Context, Error, Executor, Job, Mode, RawValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct Control<'a> {
    #[serde(default)]
    sleep_ms: Option<u64>,
    #[serde(default, borrow)]
    fail: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    panic: Option<Cow<'a, str>>,
}

fn main() -> ExitCode {
    let capacity = std::env::var("ECHO_CAPACITY")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(64);
    Executor::new("echo-executor")
        .version(env!("CARGO_PKG_VERSION"))
        .capacity(capacity)
        .handle_any(|job, ctx| {
            if job.mode() == Mode::Continuous {
                let count = stream(&job, ctx)?;
                return Ok(RawValue::from_string(format!(r#"{{"outputs":{count}}}"#))?);
            }
            let raw = job.payload_raw().get();
            // The benchmark's hot path: most payloads name neither field, and a substring search
            // is far cheaper than decoding the payload a second time.
            if has_control_field(raw) {
                let control: Control<'_> = job.payload()?;
                if let Some(ms) = control.sleep_ms {
                    // Tells a watcher the job is running, e.g. a test counting jobs at once.
                    ctx.log(format!("sleeping {ms} ms"));
                    ctx.sleep(Duration::from_millis(ms))?;
                }
                if let Some(text) = control.fail {
                    return Err(Error::new(text));
                }
                if let Some(text) = control.panic {
                    panic!("{text}");
                }
            }
            Ok(job.into_payload())
        })
        .run()
}

fn has_control_field(raw: &str) -> bool {
    raw.starts_with('{')
        && ["\"sleep_ms\"", "\"fail\"", "\"panic\""]
            .iter()
            .any(|key| raw.contains(key))
}

#[derive(Deserialize)]
struct Stream {
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
}

/// A continuous job: the payload as output, again and again, until cancelled or `count` is
/// reached.
fn stream(job: &Job, ctx: &Context<'_>) -> Result<u64, Error> {
    let raw = job.payload_raw();
    let settings = if raw.get().starts_with('{') {
        job.payload::<Stream>()?
    } else {
        Stream {
            interval_ms: None,
            count: None,
        }
    };
    let interval = Duration::from_millis(settings.interval_ms.unwrap_or(100));
    let mut written = 0;
    while settings.count.is_none_or(|count| written < count) {
        ctx.output(raw)?;
        written += 1;
        if settings.count != Some(written) {
            ctx.sleep(interval)?;
        }
    }
    Ok(written)
}
