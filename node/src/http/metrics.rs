//! `GET /metrics`: this peer in the Prometheus text format (version 0.0.4), for a monitoring
//! system to scrape. Guarded like every route: with an API token, the scraper sends it as a
//! bearer token.
//!
//! Every peer: its version, id and cluster role, and its open connections. A cluster host
//! adds its queue (jobs by status, as `GET /api/cluster/stats` counts them), its workers with
//! their load, and what it did since it started (jobs accepted, attempts by outcome, jobs
//! finished by status), the counters to take rates of.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use proto::cluster::{QueueStats, WorkerInfo};

use super::{ApiError, AppState};
use crate::cluster::counters::{Counters, FINISHED, OUTCOMES};

/// The content type of the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub(crate) async fn get(State(state): State<AppState>) -> Result<Response, ApiError> {
    let peers = state.node.peers().await.map_err(super::api::stopped)?;
    let status = state.cluster.status().await;
    let mut text = Text::default();
    text.family(
        "goop_info",
        "gauge",
        "This peer: version, peer id, cluster role.",
    );
    text.sample(
        "goop_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("peer_id", &state.node.local_peer_id().to_base58()),
            ("role", &status.role),
        ],
        1,
    );
    text.family(
        "goop_peers_connected",
        "gauge",
        "Peers with an open connection.",
    );
    text.sample("goop_peers_connected", &[], peers.len() as u64);
    if let Some(host) = state.cluster.host() {
        let stats = host.stats().await?;
        let workers = host.workers().await?;
        host_metrics(&mut text, &stats, &workers, host.counters());
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text.0).into_response())
}

/// The families of a cluster host.
fn host_metrics(text: &mut Text, stats: &QueueStats, workers: &[WorkerInfo], counters: &Counters) {
    text.labelled(
        ("goop_cluster_jobs", "gauge"),
        "Jobs by status; pending excludes assigned (sent, not yet acknowledged by the worker).",
        "status",
        [
            ("pending", stats.pending.saturating_sub(stats.assigned)),
            ("assigned", stats.assigned),
            ("running", stats.running),
            ("completed", stats.completed),
            ("failed", stats.failed),
            ("cancelled", stats.cancelled),
        ],
    );
    text.family(
        "goop_cluster_jobs_submitted_total",
        "counter",
        "Jobs accepted since the host started (a repeated idempotency key is not a new job).",
    );
    text.sample(
        "goop_cluster_jobs_submitted_total",
        &[],
        counters.submitted_total(),
    );
    text.labelled(
        ("goop_cluster_jobs_finished_total", "counter"),
        "Jobs that reached a final status since the host started (a retried job counts again).",
        "status",
        FINISHED
            .iter()
            .map(|s| s.as_str())
            .zip(counters.finished_totals()),
    );
    text.labelled(
        ("goop_cluster_attempts_total", "counter"),
        "Attempts ended since the host started, by outcome (lost: the worker or its executor \
         went away; it costs no retry).",
        "outcome",
        OUTCOMES.iter().map(|o| o.as_str()).zip(counters.attempts()),
    );
    text.family(
        "goop_cluster_workers",
        "gauge",
        "Workers the host knows, verified or not.",
    );
    text.sample("goop_cluster_workers", &[], workers.len() as u64);
    text.labelled(
        ("goop_cluster_worker_running_jobs", "gauge"),
        "Attempts each worker is running.",
        "worker",
        workers
            .iter()
            .map(|w| (w.peer_id.as_str(), u64::from(w.running_jobs))),
    );
    text.labelled(
        ("goop_cluster_worker_capacity", "gauge"),
        "Attempts each worker runs at once at most.",
        "worker",
        workers
            .iter()
            .map(|w| (w.peer_id.as_str(), u64::from(w.capacity))),
    );
}

/// The exposition text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// Starts a metric family: its help line and its type.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// A family of samples that differ by one label: `(name, kind)`, its help, the label,
    /// and each sample's label value and value.
    fn labelled<'a>(
        &mut self,
        (name, kind): (&str, &str),
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.family(name, kind, help);
        for (value_of_label, value) in samples {
            self.sample(name, &[(label, value_of_label)], value);
        }
    }

    /// One sample, its label values escaped as the format asks.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"{}\"", escape(value));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_carry_their_labels_escaped_and_families_their_help_and_type() {
        let mut text = Text::default();
        text.family("goop_x", "gauge", "An x.");
        text.sample("goop_x", &[], 3);
        text.sample("goop_x", &[("a", "1"), ("b", "q\"u\\o\nte")], 4);
        assert_eq!(
            text.0,
            "# HELP goop_x An x.\n# TYPE goop_x gauge\ngoop_x 3\n\
             goop_x{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 4\n"
        );
    }

    #[test]
    fn pending_leaves_out_the_assigned_so_the_statuses_add_up() {
        let stats = QueueStats {
            pending: 10,
            assigned: 4,
            running: 2,
            completed: 7,
            failed: 1,
            cancelled: 0,
            workers: 0,
        };
        let mut text = Text::default();
        host_metrics(&mut text, &stats, &[], &Counters::default());
        let total: u64 = text
            .0
            .lines()
            .filter(|l| l.starts_with("goop_cluster_jobs{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 10 + 2 + 7 + 1);
        assert!(text.0.contains("goop_cluster_jobs{status=\"pending\"} 6\n"));
    }
}
