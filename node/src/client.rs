//! A blocking client of a goop node's HTTP API, for the command line and the demo.
//!
//! Errors from the node arrive as `{"error":{"code","message"}}` and surface as
//! [`ClientError::Api`] with the node's own words.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use proto::api::{
    ClusterEvent, ErrorBody, JobIdRequest, SubmitBatch, SubmitBatchResponse, SubmitJob,
};
use proto::cluster::JobState;
use proto::{JobId, JobStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The address of a node's API when none is given.
pub const DEFAULT_API: &str = "http://127.0.0.1:8787";

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the node is not running there, or the connection broke.
    #[error("cannot reach the goop API at {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The node's error code.
        code: String,
        /// The node's message.
        message: String,
    },
    /// The node answered with something that is not what the route returns.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// A client of one node's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the node whose API is at `base` (e.g. `http://127.0.0.1:8787`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        // Event streams stay open as long as the caller reads them.
        let stream_agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            base,
            token,
            agent,
            stream_agent,
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// `GET path`, decoding the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.get_with_header(path, "")?.0)
    }

    /// `GET path`, decoding the JSON answer and returning the value of one response header.
    pub fn get_with_header<T: DeserializeOwned>(
        &self,
        path: &str,
        header: &str,
    ) -> Result<(T, Option<String>), ClientError> {
        let url = self.url(path);
        let response =
            self.authorize(self.agent.get(&url))
                .call()
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        let value = response
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|_| !header.is_empty());
        Ok((decode(&url, response)?, value))
    }

    /// `POST path` with a JSON body, decoding the JSON answer.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self
            .authorize(self.agent.post(&url))
            .send_json(body)
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        decode(&url, response)
    }

    /// Submits jobs in batches of at most `batch` and returns their ids in order.
    pub fn submit(&self, jobs: Vec<SubmitJob>, batch: usize) -> Result<Vec<JobId>, ClientError> {
        let mut ids = Vec::with_capacity(jobs.len());
        self.submit_each(jobs, batch, |accepted| ids.extend_from_slice(accepted))
            .map_err(|(_, error)| error)?;
        Ok(ids)
    }

    /// Submits jobs in batches of at most `batch`, handing each batch's ids to `accepted` as
    /// soon as the node took it. On an error, it also says how many jobs the node took
    /// before: the batches after the one that failed are not sent.
    pub fn submit_each(
        &self,
        jobs: Vec<SubmitJob>,
        batch: usize,
        mut accepted: impl FnMut(&[JobId]),
    ) -> Result<(), (usize, ClientError)> {
        let mut taken = 0;
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<_> = jobs.by_ref().take(batch.max(1)).collect();
            let answer: SubmitBatchResponse = self
                .post("/api/cluster/jobs", &SubmitBatch { jobs: chunk })
                .map_err(|error| (taken, error))?;
            taken += answer.job_ids.len();
            accepted(&answer.job_ids);
        }
        Ok(())
    }

    /// One job with its attempt history.
    pub fn job(&self, id: JobId) -> Result<JobState, ClientError> {
        self.get(&format!("/api/cluster/jobs/{id}"))
    }

    /// Cancels a job.
    pub fn cancel(&self, id: JobId) -> Result<serde_json::Value, ClientError> {
        self.post("/api/cluster/cancel", &JobIdRequest { job_id: id })
    }

    /// Runs a failed or cancelled job again.
    pub fn retry(&self, id: JobId) -> Result<serde_json::Value, ClientError> {
        self.post("/api/cluster/retry", &JobIdRequest { job_id: id })
    }

    /// Opens the live event stream of the cluster.
    pub fn events(&self) -> Result<EventStream, ClientError> {
        self.events_until(None)
    }

    /// Opens the live event stream of the cluster; with a deadline, reading from it fails once
    /// the deadline passes, even while the node sends nothing.
    pub fn events_until(&self, deadline: Option<Instant>) -> Result<EventStream, ClientError> {
        let url = self.url("/api/cluster/events");
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let response = self
            .authorize(self.stream_agent.get(&url))
            .config()
            .timeout_recv_body(remaining)
            .build()
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(decode::<serde_json::Value>(&url, response).err().unwrap_or(
                ClientError::BadResponse {
                    url,
                    reason: "event stream refused".into(),
                },
            ));
        }
        let reader = response.into_body().into_reader();
        Ok(EventStream {
            lines: BufReader::new(Box::new(reader)),
            url,
        })
    }

    /// The stored state of each of `ids` that exists, asked 1000 at a time (a page of large
    /// payloads may hold fewer: the pages of each request are followed to the end).
    pub fn jobs(&self, ids: &[JobId]) -> Result<Vec<JobState>, ClientError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let list: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            let base = format!("/api/cluster/jobs?limit=1000&ids={}", list.join(","));
            let mut path = base.clone();
            loop {
                let (page, next): (Vec<JobState>, _) =
                    self.get_with_header(&path, "x-next-cursor")?;
                out.extend(page);
                match next {
                    Some(cursor) => path = format!("{base}&cursor={cursor}"),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Follows `ids` until each is terminal; `on_event` sees every event on the way. Returns
    /// the final states, in the order of `ids`.
    pub fn follow(
        &self,
        ids: &[JobId],
        timeout: Option<Duration>,
        mut on_event: impl FnMut(&ClusterEvent),
    ) -> Result<Vec<JobState>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timed_out = |open: &HashSet<JobId>| ClientError::BadResponse {
            url: self.url("/api/cluster/events"),
            reason: format!("jobs not finished in time: {} of {}", open.len(), ids.len()),
        };
        let mut events = self.events_until(deadline)?;
        let mut open: HashSet<JobId> = ids.iter().copied().collect();
        // Jobs may have ended before the stream opened: look once, then trust the stream, and
        // look again whenever it says events were missed or it had to be reopened.
        let mut recheck = true;
        loop {
            if recheck {
                let pending: Vec<JobId> = open.iter().copied().collect();
                for state in self.jobs(&pending)? {
                    if state.status.is_terminal() {
                        open.remove(&state.job.id);
                    }
                }
                recheck = false;
            }
            if open.is_empty() {
                break;
            }
            let past = || deadline.is_some_and(|d| Instant::now() >= d);
            if past() {
                return Err(timed_out(&open));
            }
            // A read that fails at the deadline is the deadline, not a broken stream.
            let next = events
                .next_event()
                .map_err(|e| if past() { timed_out(&open) } else { e })?;
            let Some(event) = next else {
                // The node closed the stream (it restarted?): reopen and look again.
                events = self.events_until(deadline)?;
                recheck = true;
                continue;
            };
            on_event(&event);
            match &event {
                ClusterEvent::Job(job) if job.status.is_terminal() => {
                    open.remove(&job.job_id);
                }
                ClusterEvent::Lagged { .. } => recheck = true,
                _ => {}
            }
        }
        let mut finished: HashMap<JobId, JobState> = self
            .jobs(ids)?
            .into_iter()
            .map(|state| (state.job.id, state))
            .collect();
        Ok(ids.iter().filter_map(|id| finished.remove(id)).collect())
    }
}

fn decode<T: DeserializeOwned>(
    url: &str,
    response: ureq::http::Response<ureq::Body>,
) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    let mut body = String::new();
    response
        .into_body()
        .into_reader()
        .take(256 * 1024 * 1024)
        .read_to_string(&mut body)
        .map_err(|e| ClientError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_str::<ErrorBody>(&body) {
            Ok(error) => ClientError::Api {
                status,
                code: error.error.code,
                message: error.error.message,
            },
            Err(_) => ClientError::Api {
                status,
                code: "http".into(),
                message: body.trim().chars().take(500).collect(),
            },
        });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::BadResponse {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// A server-sent event stream of cluster events.
pub struct EventStream {
    lines: BufReader<Box<dyn Read + Send>>,
    url: String,
}

impl EventStream {
    /// The next event, or `None` when the node closed the stream. Events this client does not
    /// know are skipped.
    pub fn next_event(&mut self) -> Result<Option<ClusterEvent>, ClientError> {
        let mut name = String::new();
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let read = self
                .lines
                .read_line(&mut line)
                .map_err(|e| ClientError::Unreachable {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
            if read == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                let event_name = if name.is_empty() {
                    "message"
                } else {
                    name.as_str()
                };
                if !data.is_empty()
                    && let Ok(event) = ClusterEvent::decode(event_name, &data)
                {
                    return Ok(Some(event));
                }
                name.clear();
                data.clear();
            } else if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
    }
}

/// Whether a status counts as success for exit codes.
pub fn all_completed(states: &[JobState]) -> bool {
    states.iter().all(|s| s.status == JobStatus::Completed)
}
