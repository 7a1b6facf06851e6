//! The configuration of `goop node`, in two stages: [`RawConfig`] (all optional, from the
//! `--config` file and the flags, flags winning) validated into [`Config`]. Defaults live in
//! [`RawConfig::validate`] and nowhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

/// The API address when none is given.
pub const DEFAULT_API: &str = "127.0.0.1:8787";
/// The libp2p listen addresses when none is given: every interface, over TCP and over QUIC,
/// ports the system picks (go-libp2p peers, Goop²'s among them, listen on both as well).
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"];
/// How often a host pings the members of its groups when not set, in milliseconds.
pub const DEFAULT_GROUP_PING_MS: u64 = 20_000;
/// The fewest finished jobs a cluster host may keep in memory.
pub const MIN_FINISHED_JOBS: usize = 10_000;
/// A member (or a host) not heard from for this many ping intervals is lost.
pub const GROUP_PINGS_BEFORE_LOST: u32 = 3;

/// Settings as read from `goop.json` or the command line, every one optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the identity key and the database live.
    pub data_dir: Option<PathBuf>,
    /// A human-readable name for this peer.
    pub label: Option<String>,
    /// libp2p listen addresses.
    pub listen: Option<Vec<String>>,
    /// The HTTP API address (`HOST:PORT`).
    pub api: Option<String>,
    /// Peers to dial at start (multiaddrs).
    pub peers: Option<Vec<String>>,
    /// Whether mDNS discovery runs.
    pub mdns: Option<bool>,
    /// The token the API requires (`Authorization: Bearer ...`).
    pub api_token: Option<String>,
    /// The largest MQ message accepted, in bytes.
    pub max_message_bytes: Option<usize>,
    /// How often a host pings the members of its groups, in milliseconds (default 20000). A
    /// member, or a goop host, not heard from for three intervals is lost.
    pub group_ping_ms: Option<u64>,
    /// Messages per second a member of a group this peer hosts may have relayed (default
    /// 500, in bursts of up to four times as many); beyond it they are dropped and the member
    /// gets a `rate_limited` error. 0 for no limit.
    pub group_relay_rate: Option<u32>,
    /// The most finished jobs whose status a cluster host keeps in memory (default 1000000);
    /// older ones are looked up in the job store when named.
    pub max_finished_jobs: Option<usize>,
    /// How long a cluster host's store keeps finished jobs, in seconds after they were
    /// submitted and finished (default 604800, a week); 0 keeps them for ever.
    pub keep_finished_s: Option<u64>,
    /// The most finished jobs a cluster host's store keeps, whatever their age (default
    /// 100000000); past it the oldest are deleted. 0 means no limit.
    pub keep_finished_jobs: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the identity key and the database live.
    pub data_dir: PathBuf,
    /// A human-readable name for this peer (empty when not set).
    pub label: String,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// The HTTP API address.
    pub api: SocketAddr,
    /// Peers to dial at start.
    pub peers: Vec<Multiaddr>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// The token the API requires, if any.
    pub api_token: Option<String>,
    /// The largest MQ message accepted, in bytes.
    pub max_message_bytes: usize,
    /// How often a host pings the members of its groups.
    pub group_ping_interval: Duration,
    /// Messages per second a member of a hosted group may have relayed; 0 for no limit.
    pub group_relay_rate: u32,
    /// The most finished jobs whose status a cluster host keeps in memory.
    pub max_finished_jobs: usize,
    /// How long a cluster host's store keeps finished jobs; `None` keeps them for ever.
    pub keep_finished: Option<Duration>,
    /// The most finished jobs a cluster host's store keeps; `None` for no limit.
    pub keep_finished_jobs: Option<usize>,
}

/// Why the configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A value is not valid.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Which setting.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// No data directory was given and the platform's could not be found.
    #[error("no data directory: pass --data-dir (neither XDG_DATA_HOME nor HOME is set)")]
    NoDataDir,
    /// The API would be reachable from other machines without a token.
    #[error(
        "refusing to serve the API on non-loopback address {0} without an API token: set \
         --api-token (or GOOP_API_TOKEN), or bind to 127.0.0.1"
    )]
    OpenApiWithoutToken(SocketAddr),
}

impl RawConfig {
    /// Reads a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Layers `over` on top of `self`: every setting `over` has wins.
    #[must_use]
    pub fn overlay(self, over: Self) -> Self {
        Self {
            data_dir: over.data_dir.or(self.data_dir),
            label: over.label.or(self.label),
            listen: over.listen.or(self.listen),
            api: over.api.or(self.api),
            peers: over.peers.or(self.peers),
            mdns: over.mdns.or(self.mdns),
            api_token: over.api_token.or(self.api_token),
            max_message_bytes: over.max_message_bytes.or(self.max_message_bytes),
            group_ping_ms: over.group_ping_ms.or(self.group_ping_ms),
            group_relay_rate: over.group_relay_rate.or(self.group_relay_rate),
            max_finished_jobs: over.max_finished_jobs.or(self.max_finished_jobs),
            keep_finished_s: over.keep_finished_s.or(self.keep_finished_s),
            keep_finished_jobs: over.keep_finished_jobs.or(self.keep_finished_jobs),
        }
    }

    /// Checks every value and fills in the defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        let listen = match self.listen {
            Some(list) => list
                .iter()
                .map(|a| parse_multiaddr("listen address", a))
                .collect::<Result<_, _>>()?,
            None => DEFAULT_LISTEN
                .iter()
                .map(|a| parse_multiaddr("listen address", a))
                .collect::<Result<_, _>>()?,
        };
        let peers = self
            .peers
            .unwrap_or_default()
            .iter()
            .map(|a| parse_multiaddr("peer address", a))
            .collect::<Result<_, _>>()?;
        let api_text = self.api.unwrap_or_else(|| DEFAULT_API.to_owned());
        let api: SocketAddr = api_text.parse().map_err(|e| ConfigError::Invalid {
            field: "api address",
            value: api_text.clone(),
            reason: format!("{e} (expected HOST:PORT with an IP address)"),
        })?;
        let api_token = self.api_token.filter(|t| !t.is_empty());
        if let Some(token) = &api_token
            && (token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::Invalid {
                field: "api token",
                value: "<hidden>".to_owned(),
                reason: "expected at least 16 characters without spaces".to_owned(),
            });
        }
        if !api.ip().is_loopback() && api_token.is_none() {
            return Err(ConfigError::OpenApiWithoutToken(api));
        }
        let max_message_bytes = self
            .max_message_bytes
            .unwrap_or(proto::DEFAULT_MAX_FRAME_BYTES);
        if max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                field: "max message bytes",
                value: max_message_bytes.to_string(),
                reason: "expected at least 1024".to_owned(),
            });
        }
        let group_ping_ms = self.group_ping_ms.unwrap_or(DEFAULT_GROUP_PING_MS);
        // Above a minute a pinged link would go idle and libp2p would close it.
        if !(100..=60_000).contains(&group_ping_ms) {
            return Err(ConfigError::Invalid {
                field: "group ping interval",
                value: group_ping_ms.to_string(),
                reason: "expected 100 to 60000 milliseconds".to_owned(),
            });
        }
        let max_finished_jobs = self
            .max_finished_jobs
            .unwrap_or(dispatcher::Config::default().max_finished);
        // Far more than finish while a submit is being stored, so that the finished jobs it
        // names stay known until it is queued.
        if max_finished_jobs < MIN_FINISHED_JOBS {
            return Err(ConfigError::Invalid {
                field: "max finished jobs",
                value: max_finished_jobs.to_string(),
                reason: format!("expected at least {MIN_FINISHED_JOBS}"),
            });
        }
        Ok(Config {
            data_dir,
            label: self.label.unwrap_or_default(),
            listen,
            api,
            peers,
            mdns: self.mdns.unwrap_or(true),
            api_token,
            max_message_bytes,
            group_ping_interval: Duration::from_millis(group_ping_ms),
            group_relay_rate: self
                .group_relay_rate
                .unwrap_or(groups::GroupConfig::default().relay_rate),
            max_finished_jobs,
            keep_finished: match self.keep_finished_s {
                None => Some(crate::cluster::host::KEEP_FINISHED),
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
            },
            keep_finished_jobs: match self.keep_finished_jobs {
                None => Some(crate::cluster::host::KEEP_FINISHED_JOBS),
                Some(0) => None,
                Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
        })
    }
}

fn parse_multiaddr(field: &'static str, text: &str) -> Result<Multiaddr, ConfigError> {
    text.parse()
        .map_err(|e: libp2p::multiaddr::Error| ConfigError::Invalid {
            field,
            value: text.to_owned(),
            reason: e.to_string(),
        })
}

/// `$XDG_DATA_HOME/goop`, else `$HOME/.local/share/goop`.
fn default_data_dir() -> Option<PathBuf> {
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("XDG_DATA_HOME")
        .map(|d| d.join("goop"))
        .or_else(|| from_env("HOME").map(|h| h.join(".local/share/goop")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        RawConfig {
            data_dir: Some("/tmp/x".into()),
            ..RawConfig::default()
        }
    }

    #[test]
    fn defaults_are_loopback_api_and_any_interface_listen() {
        let c = raw().validate().unwrap();
        assert_eq!(c.api.to_string(), DEFAULT_API);
        let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, DEFAULT_LISTEN);
        assert!(c.mdns);
        assert_eq!(c.max_message_bytes, proto::DEFAULT_MAX_FRAME_BYTES);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: RawConfig =
            serde_json::from_str(r#"{"label":"file","api":"127.0.0.1:1","mdns":false}"#).unwrap();
        let flags = RawConfig {
            label: Some("flag".into()),
            ..raw()
        };
        let c = file.overlay(flags).validate().unwrap();
        assert_eq!(c.label, "flag");
        assert_eq!(c.api.port(), 1);
        assert!(!c.mdns);
    }

    #[test]
    fn an_open_api_needs_a_token() {
        let open = RawConfig {
            api: Some("0.0.0.0:8787".into()),
            ..raw()
        };
        let err = open.clone().validate().unwrap_err();
        assert!(err.to_string().contains("without an API token"), "{err}");
        let with_token = RawConfig {
            api_token: Some("0123456789abcdef".into()),
            ..open
        };
        assert!(with_token.validate().is_ok());
    }

    #[test]
    fn the_finished_job_limit_has_a_floor() {
        assert_eq!(raw().validate().unwrap().max_finished_jobs, 1_000_000);
        let small = RawConfig {
            max_finished_jobs: Some(MIN_FINISHED_JOBS),
            ..raw()
        };
        assert_eq!(
            small.validate().unwrap().max_finished_jobs,
            MIN_FINISHED_JOBS
        );
        let too_small = RawConfig {
            max_finished_jobs: Some(MIN_FINISHED_JOBS - 1),
            ..raw()
        };
        let error = too_small.validate().unwrap_err().to_string();
        assert!(error.contains("max finished jobs"), "{error}");
    }

    #[test]
    fn finished_jobs_are_kept_a_week_and_a_hundred_million_unless_told_otherwise() {
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(raw().validate().unwrap().keep_finished, Some(week));
        let keep = |secs| {
            RawConfig {
                keep_finished_s: Some(secs),
                ..raw()
            }
            .validate()
            .unwrap()
            .keep_finished
        };
        assert_eq!(keep(90), Some(Duration::from_secs(90)));
        assert_eq!(keep(0), None, "0 keeps them for ever");
        let most = |n| {
            RawConfig {
                keep_finished_jobs: n,
                ..raw()
            }
            .validate()
            .unwrap()
            .keep_finished_jobs
        };
        assert_eq!(most(None), Some(100_000_000));
        assert_eq!(most(Some(5)), Some(5));
        assert_eq!(most(Some(0)), None, "0 is no limit");
    }

    #[test]
    fn the_group_ping_interval_is_bounded() {
        assert_eq!(
            raw().validate().unwrap().group_ping_interval,
            Duration::from_millis(DEFAULT_GROUP_PING_MS)
        );
        let fast = RawConfig {
            group_ping_ms: Some(300),
            ..raw()
        };
        assert_eq!(
            fast.validate().unwrap().group_ping_interval,
            Duration::from_millis(300)
        );
        for bad in [0, 99, 60_001] {
            let bad = RawConfig {
                group_ping_ms: Some(bad),
                ..raw()
            };
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("group ping interval"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_setting() {
        let bad = RawConfig {
            listen: Some(vec!["nonsense".into()]),
            ..raw()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("listen address")
        );
        let bad = RawConfig {
            api: Some("localhost:80".into()),
            ..raw()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("api address")
        );
        assert!(serde_json::from_str::<RawConfig>(r#"{"lable":"x"}"#).is_err());
    }
}
