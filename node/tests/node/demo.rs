//! `goop demo` as a user runs it: a host and two workers as real processes, a checked workload,
//! the summary on stdout, and nothing left behind.

use std::process::Command;

use super::support::temp_dir;

#[test]
fn the_demo_runs_a_checked_workload_and_cleans_up() {
    let dir = temp_dir("demo");
    // The example executor is found next to the `goop` binary when the workspace's binaries are
    // built; otherwise the demo falls back to the Python example executor by itself.
    let output = Command::new(env!("CARGO_BIN_EXE_goop"))
        .args(["demo", "--workers", "2", "--jobs", "200", "--timeout", "60"])
        .arg("--dir")
        .arg(&dir)
        .env("GOOP_LOG", "warn")
        .output()
        .expect("run goop demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "goop demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.starts_with("goop demo: 2 workers ("), "{stdout}");
    assert!(stdout.contains(", 200 jobs ("), "{stdout}");
    assert!(stdout.contains("\n  completed    200\n"), "{stdout}");
    assert!(stdout.contains("\n  failed       0\n"), "{stdout}");
    assert!(
        stdout.contains("\n  results      200 of 200 correct\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  latency      p50 "), "{stdout}");
    assert!(
        stdout.ends_with("ok: every job completed with the right answer\n"),
        "{stdout}"
    );
    // Both workers ran jobs, and the counts add up to every job.
    let per_worker = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  per worker   "))
        .expect("a per-worker line");
    let counts: Vec<usize> = per_worker
        .split(", ")
        .map(|entry| {
            let (_, count) = entry.rsplit_once(' ').expect("name and count");
            count.replace(',', "").parse().expect("a count")
        })
        .collect();
    assert_eq!(counts.len(), 2, "{per_worker}");
    assert_eq!(counts.iter().sum::<usize>(), 200, "{per_worker}");
    assert!(
        !dir.exists(),
        "the demo directory {} was not removed",
        dir.display()
    );
}
