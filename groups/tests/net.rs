//! The node and the MQ bus over real libp2p swarms on loopback.

mod net {
    pub(crate) mod support;

    mod goop2;
    mod groups;
    mod identity;
    mod listen;
    mod mq;
    mod names;
    mod node;
}
