//! Integration tests of the dispatcher, driven through `step` only: a scenario per dispatch
//! rule, and property tests against a model.

mod dispatcher {
    mod eviction;
    pub(crate) mod harness;
    mod properties;
    mod scenarios;
}
