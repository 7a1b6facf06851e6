//! A peer's tables served as GraphQL, and the federation of member schemas in
//! `data-federation` groups.
