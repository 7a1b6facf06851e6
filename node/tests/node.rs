//! `goop node` as a real process, driven over HTTP on loopback.

mod node {
    pub(crate) mod support;

    mod api;
    mod groups;
    mod lifecycle;
}
