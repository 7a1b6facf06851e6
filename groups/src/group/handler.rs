//! Group types: the [`TypeHandler`] a group type (cluster, chat, files...) plugs in, and the
//! registry that finds it by the group's `group_type`.
//!
//! A group whose type has no handler still works: it relays messages, the host may join it,
//! and it is not volatile.

use std::collections::BTreeMap;
use std::sync::Arc;

use proto::{GroupEvent, GroupId, PeerId};

use super::core::LeaveReason;

/// What `on_create` learns about the new group.
#[derive(Debug, Clone, Copy)]
pub struct CreateInfo<'a> {
    /// The group.
    pub group: &'a GroupId,
    /// Its name.
    pub name: &'a str,
    /// Its member limit, 0 for none.
    pub max_members: u32,
    /// True when the group is restored from the store at startup rather than created.
    pub restored: bool,
}

/// A group type. Hooks run on the group manager's task, in the order of the events they
/// report: they must not block; hand long work to a task of your own through a bounded channel.
///
/// Host side: `on_create`, `on_join`, `on_leave` (every way out: leave, kick, lost), `on_close`
/// and `on_event` for hosted groups. Member side: `on_event` for joined groups (`welcome`,
/// `members`, `msg`, `leave`...) and `on_close` when the host closes the group or kicks this
/// peer.
pub trait TypeHandler: Send + Sync + 'static {
    /// Whether the host may join its own group as a member.
    fn host_can_join(&self) -> bool {
        true
    }

    /// Whether groups of this type live only in memory: not persisted, and one per type per
    /// peer (creating one closes the others of that type; joining one leaves the others).
    fn volatile(&self) -> bool {
        false
    }

    /// A group was created (or restored at startup). An error on creation closes it again
    /// (`on_close` follows, for cleanup) and is returned to whoever created it; on restore it
    /// is logged and the group stays.
    fn on_create(&self, info: &CreateInfo<'_>) -> Result<(), String> {
        let _ = info;
        Ok(())
    }

    /// A peer joined a hosted group (`is_host` when it is the host joining its own group).
    fn on_join(&self, group: &GroupId, peer: &PeerId, is_host: bool) {
        let _ = (group, peer, is_host);
    }

    /// A peer left a hosted group, was kicked, or was lost.
    fn on_leave(&self, group: &GroupId, peer: &PeerId, is_host: bool, reason: LeaveReason) {
        let _ = (group, peer, is_host, reason);
    }

    /// A hosted group was closed, or the host of a joined group closed it or kicked this peer.
    fn on_close(&self, group: &GroupId) {
        let _ = group;
    }

    /// Every local event of a group of this type.
    fn on_event(&self, event: &GroupEvent) {
        let _ = event;
    }
}

/// The handlers by group type. Built before the manager starts, then shared read-only.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: BTreeMap<String, Arc<dyn TypeHandler>>,
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `group_type`, replacing an earlier one.
    pub fn register(&mut self, group_type: impl Into<String>, handler: Arc<dyn TypeHandler>) {
        self.handlers.insert(group_type.into(), handler);
    }

    /// The handler of a type, if one is registered.
    pub fn get(&self, group_type: &str) -> Option<&Arc<dyn TypeHandler>> {
        self.handlers.get(group_type)
    }

    /// The registered types, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// Whether the host may join groups of this type (true without a handler).
    pub fn host_can_join(&self, group_type: &str) -> bool {
        self.get(group_type).is_none_or(|h| h.host_can_join())
    }

    /// Whether groups of this type are volatile (false without a handler).
    pub fn volatile(&self, group_type: &str) -> bool {
        self.get(group_type).is_some_and(|h| h.volatile())
    }
}
