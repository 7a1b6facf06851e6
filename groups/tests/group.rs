//! Group managers talking over the in-memory transport: the whole group stack except the
//! network (the libp2p test comes with the wiring).

mod group {
    pub(crate) mod harness;
    mod hooks;
    mod membership;
    mod restart;
}
