//! Starting, refusing to start, restarting and stopping `goop node`.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use super::support::{goop, start_in, temp_dir};

async fn run_to_end(mut cmd: tokio::process::Command) -> (std::process::ExitStatus, String) {
    let child = cmd.spawn().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("goop exits")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn binding_the_api_beyond_loopback_without_a_token_is_refused() {
    let dir = temp_dir("open-api");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_goop"));
    cmd.arg("node")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--api", "0.0.0.0:0", "--no-mdns"])
        .env_remove("GOOP_API_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (status, stderr) = run_to_end(cmd).await;
    assert!(!status.success());
    assert!(stderr.contains("without an API token"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_identity_survives_a_restart_and_a_corrupt_key_stops_the_start() {
    let dir = temp_dir("restart");
    let first = start_in(dir.clone(), &[]).await;
    let id = first.ready.peer_id.clone();
    first.kill_keeping_data().await;
    let second = start_in(dir.clone(), &[]).await;
    assert_eq!(second.ready.peer_id, id);
    drop(second);

    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("identity.key"), b"garbage").unwrap();
    let (status, stderr) = run_to_end(goop(&dir, &[])).await;
    assert!(!status.success());
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("identity.key")).unwrap(), b"garbage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_stops_the_node_gracefully() {
    let mut peer = start_in(temp_dir("sigterm"), &[]).await;
    let pid = peer.child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), peer.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    if let Some(mut out) = peer.child.stdout.take() {
        let _ = out.read_to_string(&mut stdout).await;
    }
    assert!(
        stdout.is_empty(),
        "nothing on stdout but the ready line: {stdout}"
    );
}

#[tokio::test]
async fn a_config_file_is_read_and_flags_win_over_it() {
    let dir = temp_dir("config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("goop.json");
    std::fs::write(&file, r#"{"label":"from-file","mdns":false}"#).unwrap();
    let file_arg = file.to_str().unwrap().to_owned();
    let from_file = start_in(dir.join("a"), &["--config", &file_arg]).await;
    let me = super::support::get(&from_file.ready.api, "/api/self")
        .await
        .json();
    assert_eq!(me["label"], "from-file");
    let overridden = start_in(
        dir.join("b"),
        &["--config", &file_arg, "--label", "from-flag"],
    )
    .await;
    let me = super::support::get(&overridden.ready.api, "/api/self")
        .await
        .json();
    assert_eq!(me["label"], "from-flag");

    std::fs::write(&file, r#"{"lable":"typo"}"#).unwrap();
    let mut cmd = goop(&dir.join("c"), &["--config", &file_arg]);
    cmd.kill_on_drop(true);
    let (status, stderr) = run_to_end(cmd).await;
    assert!(!status.success());
    assert!(stderr.contains("invalid config file"), "{stderr}");
    drop((from_file, overridden));
    let _ = std::fs::remove_dir_all(&dir);
}
