//! The executor: handlers registered by job type, and the loop that serves them over a pair of
//! byte streams (stdin and stdout in a real executor).
//!
//! The calling thread reads and decodes input lines; handler threads run jobs; one writer thread
//! writes output (see the `output` module). At end of input the queue is drained, every running
//! job finishes, the output is flushed, and [`Executor::run`] returns.

use std::any::Any;
use std::io::{self, BufRead, BufReader, Write};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use serde::Serialize;

use crate::context::Context;
use crate::error::Error;
use crate::job::Job;
use crate::output::Output;
use crate::pool::{Duplicate, Pool, Queued, Task};
use crate::wire::{self, Input, LineRead, Malformed};

/// A type-erased handler: runs the job and appends its encoded result to the buffer.
type Handler = dyn Fn(Job, &Context<'_>, &mut Vec<u8>) -> Result<(), Error> + Send + Sync;

/// The default limit on one input line, the same as the worker's default limit on output lines.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// An executor under construction: a name, a version, a capacity and one handler per job type.
///
/// ```
/// use executor_sdk::{Error, Executor};
///
/// #[derive(serde::Deserialize)]
/// struct Greet<'a> {
///     name: &'a str,
/// }
///
/// let executor = Executor::new("greeter")
///     .version("1.0.0")
///     .capacity(4)
///     .handle("greet", |job, ctx| {
///         let greet: Greet<'_> = job.payload()?;
///         ctx.progress(50.0, "greeting");
///         Ok(format!("hello, {}", greet.name))
///     });
///
/// let input = concat!(
///     r#"{"job_id":"__check__","type":"__check__","payload":null,"timeout_s":0}"#, "\n",
///     r#"{"job_id":"a1","type":"greet","payload":{"name":"ada"},"timeout_s":0}"#, "\n",
/// );
/// let mut output = Vec::new();
/// executor.run_with(input.as_bytes(), &mut output)?;
/// let output = String::from_utf8(output).unwrap();
/// let lines: Vec<&str> = output.lines().collect();
/// assert_eq!(lines, [
///     r#"{"job_id":"__check__","status":"done","result":{"name":"greeter","types":["greet"],"capacity":4,"version":"1.0.0"}}"#,
///     r#"{"job_id":"a1","status":"progress","pct":50,"msg":"greeting"}"#,
///     r#"{"job_id":"a1","status":"done","result":"hello, ada"}"#,
/// ]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Executor {
    name: String,
    version: String,
    capacity: usize,
    max_line_bytes: usize,
    handlers: Vec<(Arc<str>, Box<Handler>)>,
    fallback: Option<Box<Handler>>,
}

impl Executor {
    /// A new executor called `name`, with version `0.0.0`, capacity 1 and no handlers.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: "0.0.0".to_owned(),
            capacity: 1,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            handlers: Vec::new(),
            fallback: None,
        }
    }

    /// The version reported in the `__check__` answer.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// How many jobs may run at once in daemon mode (at least 1). It is reported in the
    /// `__check__` answer, and jobs beyond it wait for a running one to finish.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The longest input line accepted, in bytes; a longer job line fails that job.
    #[must_use]
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes.max(64);
        self
    }

    /// Serves jobs of type `job_type` with `handler`. Its `Ok` value is the job's result: any
    /// [`Serialize`] value, including a `Box<RawValue>` passed through untouched. Its `Err`, or
    /// a panic, fails the job with that message; the executor keeps serving.
    ///
    /// Registering the same type twice keeps the later handler.
    #[must_use]
    pub fn handle<F, R>(mut self, job_type: &str, handler: F) -> Self
    where
        F: Fn(Job, &Context<'_>) -> Result<R, Error> + Send + Sync + 'static,
        R: Serialize,
    {
        self.handlers.retain(|(name, _)| &**name != job_type);
        self.handlers.push((job_type.into(), erase(handler)));
        self
    }

    /// Serves every job type no [`Executor::handle`] handler claims. The `__check__` answer then
    /// lists no types, which tells the worker the executor accepts all of them.
    ///
    /// ```
    /// use executor_sdk::Executor;
    ///
    /// // Echoes every payload back byte for byte.
    /// let echo = Executor::new("echo").handle_any(|job, _ctx| Ok(job.into_payload()));
    /// let mut out = Vec::new();
    /// echo.run_with(&br#"{"job_id":"j","type":"x","payload":[1e400,12345678901234567890]}"#[..], &mut out)?;
    /// assert_eq!(out, br#"{"job_id":"j","status":"done","result":[1e400,12345678901234567890]}
    /// "#);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn handle_any<F, R>(mut self, handler: F) -> Self
    where
        F: Fn(Job, &Context<'_>) -> Result<R, Error> + Send + Sync + 'static,
        R: Serialize,
    {
        self.fallback = Some(erase(handler));
        self
    }

    /// Serves stdin and stdout until stdin closes, then returns the process exit code: success,
    /// or failure after an I/O error (which is also written to stderr).
    ///
    /// ```no_run
    /// use std::process::ExitCode;
    /// use executor_sdk::Executor;
    ///
    /// fn main() -> ExitCode {
    ///     Executor::new("echo").handle_any(|job, _ctx| Ok(job.into_payload())).run()
    /// }
    /// ```
    pub fn run(&self) -> ExitCode {
        let stdin = BufReader::with_capacity(64 << 10, io::stdin().lock());
        match self.run_with(stdin, io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                // The worker captures stderr and attaches it to the failure it reports.
                let _ = writeln!(io::stderr(), "{}: {err}", self.name);
                ExitCode::FAILURE
            }
        }
    }

    /// Serves `reader` and `writer` as [`Executor::run`] serves stdin and stdout: until `reader`
    /// ends, then after every job has answered. Useful in tests.
    ///
    /// # Errors
    /// The first error reading `reader` or writing `writer`. After a write error the remaining
    /// input is still read (and its jobs run) so the caller sees end of input before returning.
    pub fn run_with<R: BufRead, W: Write + Send>(&self, reader: R, writer: W) -> io::Result<()> {
        let output = Output::new();
        let pool = Pool::new(self.capacity);
        let check = self.check_result();
        thread::scope(|scope| {
            let writer = scope.spawn(|| output.run_writer(writer));
            let read = self.read_loop(scope, reader, &output, &pool, &check);
            output.close();
            let written = match writer.join() {
                Ok(result) => result,
                Err(panic) => panic::resume_unwind(panic),
            };
            read.and(written)
        })
    }

    /// Reads and dispatches lines until end of input, then waits for the handler threads to
    /// finish every queued and running job.
    fn read_loop<'scope, 'env: 'scope, R: BufRead>(
        &'env self,
        scope: &'scope thread::Scope<'scope, 'env>,
        mut reader: R,
        output: &'env Output,
        pool: &'env Pool,
        check: &[u8],
    ) -> io::Result<()> {
        let mut workers = Vec::new();
        let mut line = Vec::with_capacity(8 << 10);
        let mut reply = Vec::with_capacity(256);
        let result = loop {
            reply.clear();
            match wire::read_line(&mut reader, &mut line, self.max_line_bytes) {
                Err(err) => break Err(err),
                Ok(LineRead::Eof) => break Ok(()),
                Ok(LineRead::TooLong) => {
                    let reason = format!(
                        "input line is longer than the limit of {} bytes",
                        self.max_line_bytes
                    );
                    report(&mut reply, wire::salvage(&line, reason));
                }
                Ok(LineRead::Line) => {
                    let start = self.dispatch(&line, &mut reply, pool, check);
                    if start {
                        let spawned = thread::Builder::new()
                            .name(format!("{}-job", self.name))
                            .spawn_scoped(scope, move || serve_jobs(self, pool, output));
                        match spawned {
                            Ok(worker) => workers.push(worker),
                            // Without any handler thread the queued job would never answer.
                            Err(err) if workers.is_empty() => break Err(err),
                            // The threads already running will take the job in turn.
                            Err(_) => {}
                        }
                    }
                }
            }
            if !reply.is_empty() {
                output.push(&reply);
            }
        };
        pool.close();
        for worker in workers {
            if let Err(panic) = worker.join() {
                panic::resume_unwind(panic);
            }
        }
        result
    }

    /// Acts on one input line, writing any immediate answer into `reply`. Returns whether a new
    /// handler thread is needed for a job it queued.
    fn dispatch(&self, line: &[u8], reply: &mut Vec<u8>, pool: &Pool, check: &[u8]) -> bool {
        let job = match wire::decode(line) {
            Ok(Input::Job(job)) => job,
            Ok(Input::Blank) => return false,
            Ok(Input::Check { job_id }) => {
                wire::write_prefix(reply, &job_id, None);
                reply.extend_from_slice(br#","status":"done","result":"#);
                reply.extend_from_slice(check);
                reply.extend_from_slice(b"}\n");
                return false;
            }
            Ok(Input::Cancel { job_id }) => {
                // A cancel for a job that already answered is expected: the two crossed.
                pool.cancel(&job_id);
                return false;
            }
            Err(malformed) => {
                report(reply, malformed);
                return false;
            }
        };
        let Some((handler, job_type)) = self.lookup(&job.job_type) else {
            let error = format!("unsupported job type {:?}", &*job.job_type);
            wire::write_error(reply, &job.job_id, job.attempt, &error);
            return false;
        };
        let task = Arc::new(Task::new(job.job_id.into(), job.attempt));
        let queued = Queued {
            job: Job {
                task,
                job_type,
                payload: job.payload.map(ToOwned::to_owned),
                timeout_s: job.timeout_s,
                mode: job.mode,
            },
            handler,
        };
        match pool.submit(queued) {
            Ok(start) => start,
            Err(Duplicate(queued)) => {
                let task = &queued.job.task;
                let error = format!("job {} is already running in this executor", task.id);
                wire::write_error(reply, &task.id, task.attempt, &error);
                false
            }
        }
    }

    /// The encoded result of the `__check__` answer.
    fn check_result(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Check<'a> {
            name: &'a str,
            types: Vec<&'a str>,
            capacity: usize,
            version: &'a str,
        }
        let types = if self.fallback.is_some() {
            Vec::new()
        } else {
            self.handlers.iter().map(|(name, _)| &**name).collect()
        };
        let check = Check {
            name: &self.name,
            types,
            capacity: self.capacity,
            version: &self.version,
        };
        // A struct of strings and numbers always encodes.
        serde_json::to_vec(&check).unwrap_or_default()
    }

    /// The handler for a job type, and the type's name as the job will hold it (shared with the
    /// registration, so a registered type costs no allocation per job).
    fn lookup(&self, job_type: &str) -> Option<(usize, Arc<str>)> {
        match self
            .handlers
            .iter()
            .position(|(name, _)| &**name == job_type)
        {
            Some(index) => Some((index, Arc::clone(&self.handlers[index].0))),
            None => self
                .fallback
                .as_ref()
                .map(|_| (self.handlers.len(), Arc::from(job_type))),
        }
    }

    fn handler(&self, index: usize) -> &Handler {
        match self.handlers.get(index) {
            Some((_, handler)) => handler,
            // `lookup` hands out `handlers.len()` only when there is a fallback.
            None => self.fallback.as_deref().unwrap_or(&unreachable_handler),
        }
    }
}

fn unreachable_handler(_: Job, _: &Context<'_>, _: &mut Vec<u8>) -> Result<(), Error> {
    Err(Error::new("no handler for this job type"))
}

fn erase<F, R>(handler: F) -> Box<Handler>
where
    F: Fn(Job, &Context<'_>) -> Result<R, Error> + Send + Sync + 'static,
    R: Serialize,
{
    Box::new(move |job, ctx, out| {
        let result = handler(job, ctx)?;
        serde_json::to_writer(out, &result)
            .map_err(|e| Error::new(format!("result could not be encoded: {e}")))
    })
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("capacity", &self.capacity)
            .field(
                "types",
                &self.handlers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("handles_any", &self.fallback.is_some())
            .finish()
    }
}

/// Writes what a malformed line deserves: an error for the job it names, or a log.
fn report(reply: &mut Vec<u8>, malformed: Malformed) {
    match malformed {
        Malformed::NoId { reason } => wire::write_log(reply, None, &reason),
        Malformed::Job {
            job_id,
            attempt,
            reason,
        } => wire::write_error(reply, &job_id, attempt, &reason),
    }
}

/// A handler thread: runs queued jobs one at a time until the pool closes and drains.
fn serve_jobs(executor: &Executor, pool: &Pool, output: &Output) {
    let mut prefix = Vec::with_capacity(64);
    let mut line = Vec::with_capacity(4 << 10);
    let mut finished: Option<Arc<Task>> = None;
    loop {
        let answer = finished.as_deref().map(|task| (task, &line[..]));
        let Some(Queued { job, handler }) = pool.next(answer, output) else {
            return;
        };
        let task = Arc::clone(&job.task);
        prefix.clear();
        wire::write_prefix(&mut prefix, &task.id, task.attempt);
        line.clear();
        if line.capacity() > 1 << 20 {
            // One huge result should not pin its memory for the life of the thread.
            line = Vec::with_capacity(4 << 10);
        }
        if task.is_cancelled() {
            wire::write_error(
                &mut line,
                &task.id,
                task.attempt,
                "cancelled before it started",
            );
        } else {
            line.extend_from_slice(&prefix);
            line.extend_from_slice(br#","status":"done","result":"#);
            let ctx = Context {
                task: &task,
                prefix: &prefix,
                output,
            };
            let handler = executor.handler(handler);
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler(job, &ctx, &mut line)));
            match outcome {
                Ok(Ok(())) => line.extend_from_slice(b"}\n"),
                Ok(Err(error)) => {
                    line.clear();
                    wire::write_error(&mut line, &task.id, task.attempt, error.message());
                }
                Err(panic) => {
                    line.clear();
                    let error = format!("handler panicked: {}", panic_message(&*panic));
                    wire::write_error(&mut line, &task.id, task.attempt, &error);
                }
            }
        }
        finished = Some(task);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "non-string panic payload"
    }
}
