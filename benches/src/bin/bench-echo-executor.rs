//! A stand-in for the SDK echo executor, for the executor benchmark: it answers `__check__`
//! with a `done`, ignores `__cancel__` lines, and answers every job with its payload as the
//! result. It serves both modes: it reads lines until stdin closes. Output is flushed whenever
//! no further input is already buffered, so a batch of job lines gets a batch of answers.

use std::borrow::Cow;
use std::io::{self, BufRead, BufWriter, Write};

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct JobLine<'a> {
    #[serde(borrow)]
    job_id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    job_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

fn main() -> io::Result<()> {
    let mut input = io::BufReader::with_capacity(64 * 1024, io::stdin());
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let Ok(job) = serde_json::from_slice::<JobLine<'_>>(&line) else {
            continue;
        };
        match job.job_type.as_deref() {
            Some("__cancel__") => {}
            Some("__check__") => {
                out.write_all(b"{\"job_id\":\"__check__\",\"status\":\"done\"}\n")?
            }
            _ => {
                out.write_all(b"{\"job_id\":")?;
                serde_json::to_writer(&mut out, &job.job_id)?;
                out.write_all(b",\"status\":\"done\",\"result\":")?;
                out.write_all(job.payload.map_or("null", |p| p.get()).as_bytes())?;
                out.write_all(b"}\n")?;
            }
        }
        if input.buffer().is_empty() {
            out.flush()?;
        }
    }
    out.flush()
}
