//! Group settings: liveness bounds, join timeouts, rejoin backoff, limits and queue sizes.

use std::time::Duration;

/// Settings of the group manager. [`Default`] gives the values a node runs with.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// How often a host pings each member of each hosted group.
    pub ping_interval: Duration,
    /// A member the host has heard nothing from (no pong, no message) for this long is dropped.
    pub member_timeout: Duration,
    /// A member that has heard nothing from a Goop² host (no ping, no message) for this long
    /// considers it lost and rejoins; above Goop²'s 60 s ping period. A goop host (one that
    /// grants features in its welcome) pings every `ping_interval`, so `member_timeout` bounds
    /// it instead: liveness has the same bound both ways.
    pub host_timeout: Duration,
    /// How long a join waits for `welcome` or `error`.
    pub join_timeout: Duration,
    /// How long a discovery request waits for its answer.
    pub discover_timeout: Duration,
    /// First delay between rejoin attempts to a lost host; doubles up to `rejoin_backoff_max`.
    pub rejoin_backoff_min: Duration,
    /// Longest delay between rejoin attempts.
    pub rejoin_backoff_max: Duration,
    /// How many non-volatile groups one peer may host.
    pub max_hosted_groups: usize,
    /// The most members a group without a limit of its own admits.
    pub member_cap: u32,
    /// The most banned peers a hosted group keeps; past it, a kick lifts the oldest ban.
    pub max_bans: usize,
    /// A peer whose join a hosted group refused (banned, not invited, full) gets no other
    /// answer before this much time has passed; joins in between are dropped. Below the
    /// shortest rejoin delay, so a member waiting for room is always answered.
    pub refusal_interval: Duration,
    /// Join requests kept per group that admits by approval; past it, the oldest is dropped
    /// (its peer, still asking, makes a new one).
    pub max_join_requests: usize,
    /// How many received invitations are kept (the oldest go first).
    pub max_received_invites: usize,
    /// The most rows a discovery answer carries.
    pub discover_limit: u32,
    /// How often the shell drives timers (`Input::Tick`).
    pub tick_interval: Duration,
    /// Messages queued for one peer before that peer counts as too slow and is dropped.
    pub peer_queue: usize,
    /// Local events buffered for each event subscriber.
    pub event_buffer: usize,
    /// Commands queued to the manager.
    pub command_buffer: usize,
    /// Seed for group ids and backoff jitter.
    pub seed: u64,
    /// Messages per second a member of a hosted group may have relayed (`msg` and `state`);
    /// beyond it, and past [`Self::relay_burst`], its messages are dropped and it gets a
    /// `rate_limited` error at most once a second. 0 for no limit. Default 500.
    pub relay_rate: u32,
    /// Messages a member may have relayed at once, before [`Self::relay_rate`] holds
    /// (default 2,000).
    pub relay_burst: u32,
    /// This peer's display name, sent when it joins a group and listed with it as a host
    /// (cleaned first; empty for none).
    pub label: String,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(20),
            member_timeout: Duration::from_secs(60),
            host_timeout: Duration::from_secs(150),
            join_timeout: Duration::from_secs(5),
            discover_timeout: Duration::from_secs(5),
            rejoin_backoff_min: Duration::from_secs(1),
            rejoin_backoff_max: Duration::from_secs(60),
            max_hosted_groups: 50,
            member_cap: 10_000,
            max_bans: 10_000,
            refusal_interval: Duration::from_millis(500),
            max_join_requests: 1_000,
            max_received_invites: 64,
            discover_limit: 100,
            tick_interval: Duration::from_millis(250),
            peer_queue: 1024,
            event_buffer: 1024,
            command_buffer: 256,
            seed: 0x9e37_79b9_7f4a_7c15,
            relay_rate: 500,
            relay_burst: 2_000,
            label: String::new(),
        }
    }
}
