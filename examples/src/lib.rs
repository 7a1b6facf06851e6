//! Example executors for goop, written against the executor SDK. The binaries live in
//! `src/bin/`; the Python and Bash executors beside them speak the protocol by hand.
