//! The `goop` binary as a real process: `goop node` driven over HTTP on loopback, and the
//! executor commands run as a user would run them.

mod node {
    pub(crate) mod support;

    mod api;
    mod chat;
    mod cluster;
    mod cluster_routes;
    mod data;
    mod datafed;
    mod demo;
    mod executor_cmd;
    mod files;
    mod groups;
    mod interop;
    mod lifecycle;
    mod listen;
    mod openapi;
}
