//! The `__check__` handshake in both modes: what it reads, and every way it fails.

use std::time::Duration;

use worker::{BinaryMode, StartError, check};

use crate::support::{config, fixture};

const MODES: [BinaryMode; 2] = [BinaryMode::Oneshot, BinaryMode::Daemon];

fn failed(result: Result<worker::CheckInfo, StartError>) -> (String, Option<String>) {
    match result {
        Err(StartError::CheckFailed {
            reason,
            stderr_tail,
        }) => (reason, stderr_tail),
        Ok(info) => panic!("check passed: {info:?}"),
    }
}

#[tokio::test]
async fn reads_types_capacity_and_version_in_both_modes() {
    for mode in MODES {
        let info = check(config("echo.py", mode)).await.expect("check");
        assert_eq!(info.types, ["alpha", "beta"], "{mode}");
        assert_eq!(info.capacity, 4, "{mode}");
        assert_eq!(info.version.as_deref(), Some("fixture-1"), "{mode}");
    }
}

#[tokio::test]
async fn a_goop2_executor_passes_its_check_unchanged() {
    let info = check(config("goop2_style.sh", BinaryMode::Oneshot))
        .await
        .expect("check");
    assert_eq!(info.types, ["render"]);
    assert_eq!(info.capacity, 2);
    assert_eq!(info.version.as_deref(), Some("0.9"));
}

#[tokio::test]
async fn an_error_answer_fails_with_its_text_and_stderr() {
    for mode in MODES {
        let (reason, tail) = failed(check(config("check_error.sh", mode)).await);
        assert!(reason.contains("no GPU found"), "{mode}: {reason}");
        if mode == BinaryMode::Oneshot {
            assert_eq!(tail.as_deref(), Some("no GPU found"));
        }
    }
}

#[tokio::test]
async fn a_silent_executor_times_out() {
    for mode in MODES {
        let mut config = config("check_hang.sh", mode);
        config.check_timeout = Duration::from_millis(300);
        let (reason, _) = failed(check(config).await);
        assert!(reason.contains("timed out after 0.3s"), "{mode}: {reason}");
    }
}

#[tokio::test]
async fn a_crash_during_the_check_says_how_and_keeps_stderr() {
    for mode in MODES {
        let (reason, tail) = failed(check(config("check_crash.sh", mode)).await);
        assert!(reason.contains("exited with status 2"), "{mode}: {reason}");
        assert_eq!(tail.as_deref(), Some("boom: missing config"), "{mode}");
    }
}

#[tokio::test]
async fn garbage_and_no_answer_fail_the_check() {
    for mode in MODES {
        let (reason, _) = failed(check(config("check_garbage.sh", mode)).await);
        let expected = match mode {
            BinaryMode::Oneshot => "executor produced no result",
            BinaryMode::Daemon => "exited with status 0",
        };
        assert!(reason.contains(expected), "{mode}: {reason}");
    }
}

#[tokio::test]
async fn a_missing_binary_cannot_start() {
    for mode in MODES {
        let mut config = config("echo.py", mode);
        config.path = fixture("no-such-executor");
        let (reason, _) = failed(check(config).await);
        assert!(reason.contains("cannot start executor"), "{mode}: {reason}");
        assert!(reason.contains("no-such-executor"), "{mode}: {reason}");
    }
}
