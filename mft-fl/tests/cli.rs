//! `mft-fl run` on bad input: one clear line on stderr and a non-zero exit, never a panic. A
//! bad address, an unreachable SuperLink, a SuperLink that rejects the node's authentication
//! (a stand-in that answers HTTP 401 as flwr's does), a key file that is not a key.
//!
//! Host-only, as mft-std's CLI tests: under the aarch64 cross run the test executes in qemu user
//! mode and cannot exec the (aarch64) `mft-fl` binary it spawns.
#![cfg(not(target_arch = "aarch64"))]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `mft-fl run` against `superlink` with the demo model and task; returns (exit ok, stderr).
fn run(superlink: &str, state: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mft-fl"))
        .args(["run", "--superlink", superlink, "--insecure", "--connect-timeout", "2"])
        .arg("--model")
        .arg(repo().join("demo/base"))
        .arg("--data")
        .arg(repo().join("demo/task/eval.jsonl"))
        .arg("--state-dir")
        .arg(state)
        .args(["--batch", "2", "--threads", "1", "--quiet"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stderr)
}

/// The one `mft-fl: ...` line the run ended with.
fn last_line(stderr: &str) -> &str {
    let line = stderr.lines().last().unwrap_or("");
    assert!(line.starts_with("mft-fl: "), "the error line: {stderr}");
    line
}

#[test]
fn a_malformed_address_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run("localhost", dir.path(), &[]);
    assert!(!ok);
    assert!(last_line(&stderr).contains("--superlink \"localhost\": no port"), "{stderr}");
}

#[test]
fn an_unreachable_superlink_is_one_line_after_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let (ok, stderr) = run(&format!("127.0.0.1:{port}"), dir.path(), &[]);
    assert!(!ok);
    let line = last_line(&stderr);
    assert!(line.contains(&format!("cannot reach the SuperLink at 127.0.0.1:{port}")), "{line}");
    assert!(line.contains("gave up after 2 s"), "{line}");
    assert!(stderr.contains("retrying in"), "it retried with backoff: {stderr}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn rejected_authentication_is_one_line() {
    // A stand-in SuperLink answering every call as flwr does a bad signature.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut buf);
            let body = r#"{"detail":"Invalid SuperNode authentication"}"#;
            let reply = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: \
                 {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run(&format!("127.0.0.1:{port}"), dir.path(), &[]);
    assert!(!ok);
    let line = last_line(&stderr);
    assert!(line.contains("rejected this node's authentication"), "{line}");
    assert!(line.contains("Invalid SuperNode authentication"), "{line}");
}

#[test]
fn a_key_file_that_is_not_a_key_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.pem");
    std::fs::write(&key, "not a key").unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, stderr) =
        run(&format!("127.0.0.1:{port}"), dir.path(), &["--key", key.to_str().unwrap()]);
    assert!(!ok);
    let line = last_line(&stderr);
    assert!(line.contains("node.pem") && line.contains("P-384"), "{line}");
}

#[test]
fn lora_flags_the_model_lacks_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = run("127.0.0.1:9", dir.path(), &["--lora-targets", "q_proj"]);
    assert!(!ok);
    assert!(last_line(&stderr).contains("--lora-targets q_proj"), "{stderr}");
}
