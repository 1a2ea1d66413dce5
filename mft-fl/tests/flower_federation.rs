//! A real Flower federation on loopback: `flower-superlink --insecure` from flwr 1.42.0, the
//! app of `mft-fl/flower/app` started with `flwr run` (flwr's own FedAvg), and three `mft-fl`
//! clients training the bundled demo model on three shards of the demo task.
//!
//! - Three rounds complete; each round's aggregated adapter equals the num-examples-weighted
//!   mean of the adapters the clients sent (their `--record-dir` files against the
//!   ServerApp's); the evaluation loss after round 3 is below round 1's.
//! - A second federation kills one client (SIGKILL) while it trains in round 2 and restarts it
//!   with the same state directory: round 2 aggregates the two others and records the
//!   restarted node's error reply, the node keeps its id, and round 3 has all three.
//!
//! It needs a Python environment with flwr: `MFT_FL_FLWR_VENV` names it (`cargo xtask flower`
//! makes `target/flwr-venv` and runs this test). It is `#[ignore]`d so that `cargo test
//! --workspace` does not need Python; run without the variable, it fails and says how to set
//! it up. Every process it starts is stopped at the end, also when it fails.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mft_std::finetune::LoraArgs;
use mft_std::hf::load_adapters;
use mft_std::source::ModelSource;

const ROUNDS: usize = 3;
const CLIENTS: usize = 3;
const TARGETS: &str = "c_attn,c_proj,c_fc";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The flwr virtual environment's `bin/`, or a failure saying how to make one.
fn venv_bin() -> PathBuf {
    let Some(venv) = std::env::var_os("MFT_FL_FLWR_VENV") else {
        panic!(
            "MFT_FL_FLWR_VENV is not set: this test needs a Python venv with flwr==1.42.0 \
             (run `cargo xtask flower`, which makes target/flwr-venv and runs this test)"
        );
    };
    let bin = PathBuf::from(venv).join("bin");
    for tool in ["flower-superlink", "flwr", "flower-superexec", "python"] {
        assert!(
            bin.join(tool).exists(),
            "{} is missing: MFT_FL_FLWR_VENV must hold flwr==1.42.0 (pip install flwr==1.42.0)",
            bin.join(tool).display()
        );
    }
    bin
}

/// Processes this test started, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn add(&mut self, name: &str, child: Child) {
        self.0.push((name.to_string(), child));
    }

    fn take(&mut self, name: &str) -> Child {
        let i = self.0.iter().position(|(n, _)| n == name).unwrap();
        self.0.remove(i).1
    }

    /// Stops `name` (SIGTERM, waiting up to 10 s) and returns its exit status.
    fn stop(&mut self, name: &str) -> std::process::ExitStatus {
        let mut child = self.take(name);
        terminate(&mut child)
    }
}

/// SIGTERM to the process group led by `child`, then SIGKILL after 10 s.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id() as i32;
    signal(-pid, "TERM");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            signal(-pid, "KILL");
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(target: i32, name: &str) {
    // `kill -s NAME -- -PGID` signals the group this test created for the child.
    let _ = Command::new("kill").args(["-s", name, "--", &target.to_string()]).status();
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            terminate(child);
        }
    }
}

/// A fresh process group per child, so that the SuperLink's own children stop with it.
fn grouped(mut command: Command) -> Command {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where one federation runs.
struct Federation {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    home: PathBuf,
}

impl Federation {
    fn new(root: &Path, name: &str, bin: &Path) -> Federation {
        let dir = root.join(name);
        let home = dir.join("flwr-home");
        std::fs::create_dir_all(&home).unwrap();
        let port = free_port();
        std::fs::write(
            home.join("config.toml"),
            format!(
                "[superlink]\ndefault = \"local\"\n\n[superlink.local]\naddress = \
                 \"127.0.0.1:{port}\"\ninsecure = true\n"
            ),
        )
        .unwrap();
        Federation { dir, bin: bin.to_path_buf(), port, home }
    }

    /// A command of the venv with the environment every flwr command gets.
    fn flwr(&self, tool: &str) -> Command {
        let mut command = grouped(Command::new(self.bin.join(tool)));
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        command
            .env("PATH", path)
            .env("FLWR_HOME", &self.home)
            .env("FLWR_TELEMETRY_ENABLED", "0")
            .env("FLWR_DISABLE_UPDATE_CHECK", "1")
            .current_dir(&self.dir);
        command
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap()
    }

    fn start_superlink(&self, procs: &mut Procs) {
        let mut command = self.flwr("flower-superlink");
        command
            .args(["--insecure", "--disable-runtime-dependency-installation", "--host"])
            .args(["127.0.0.1", "--port", &self.port.to_string()])
            .stdout(self.log("superlink"))
            .stderr(self.log("superlink.err"));
        procs.add("superlink", command.spawn().expect("flower-superlink starts"));
        // Listening within about 4 s.
        let end = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "the SuperLink did not listen within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn client_command(&self, i: usize, shards: &Path) -> Command {
        let mut command = grouped(Command::new(env!("CARGO_BIN_EXE_mft-fl")));
        command
            .arg("run")
            .args(["--superlink", &format!("127.0.0.1:{}", self.port), "--insecure"])
            .args(["--model", &repo().join("demo/base").display().to_string()])
            .arg("--data")
            .arg(shards.join(format!("train{i}.jsonl")))
            .arg("--eval-data")
            .arg(shards.join(format!("eval{i}.jsonl")))
            .args(["--lora-targets", TARGETS, "--batch", "4", "--seq", "64", "--threads", "1"])
            .args(["--heartbeat-interval", "10", "--seed", &i.to_string()])
            .arg("--state-dir")
            .arg(self.dir.join(format!("node{i}")))
            .arg("--record-dir")
            .arg(self.dir.join(format!("records{i}")));
        command
    }

    fn start_client(&self, i: usize, shards: &Path, procs: &mut Procs) {
        let mut command = self.client_command(i, shards);
        command.stderr(self.log(&format!("client{i}"))).stdout(Stdio::null());
        procs.add(&format!("client{i}"), command.spawn().expect("mft-fl starts"));
    }

    /// `flwr run` of the app, in the background (it streams until the run ends).
    fn start_run(&self, init: &Path, procs: &mut Procs) {
        let out = self.dir.join("out");
        let config = format!(
            "num-server-rounds={ROUNDS} min-nodes={CLIENTS} local-steps=5 lr=0.003 \
             round-timeout=600.0 initial-adapter='{}' out-dir='{}'",
            init.display(),
            out.display()
        );
        let mut command = self.flwr("flwr");
        command
            .arg("run")
            .arg(repo().join("mft-fl/flower/app"))
            .args(["local", "--stream", "--run-config", &config])
            .stdout(self.log("flwr-run"))
            .stderr(self.log("flwr-run.err"));
        procs.add("flwr-run", command.spawn().expect("flwr run starts"));
    }

    /// Waits for `out/summary.json` (the ServerApp writes it after the last round).
    fn wait_summary(&self, procs: &mut Procs, limit: Duration) -> serde_json::Value {
        let path = self.dir.join("out/summary.json");
        let end = Instant::now() + limit;
        while !path.exists() {
            if Instant::now() > end {
                panic!("no {} after {limit:?}:\n{}", path.display(), self.tail_logs());
            }
            for (name, child) in &mut procs.0 {
                if (name.starts_with("client") || name == "superlink")
                    && let Some(status) = child.try_wait().unwrap()
                {
                    panic!("{name} exited ({status}) during the run:\n{}", self.tail_logs());
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn tail_logs(&self) -> String {
        let mut text = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        names.sort();
        for path in names {
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = body.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            text.push_str(&format!("--- {}\n{}\n", path.display(), tail.join("\n")));
        }
        text
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let path = self.dir.join(path);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.tail_logs()));
        serde_json::from_str(&text).unwrap()
    }

    /// Stops the clients (SIGTERM: they deactivate and exit 0), the run and the SuperLink.
    fn stop_all(&self, procs: &mut Procs) {
        for i in 0..CLIENTS {
            let status = procs.stop(&format!("client{i}"));
            assert!(status.success(), "client{i} stopped with {status}:\n{}", self.tail_logs());
        }
        procs.stop("flwr-run");
        procs.stop("superlink");
    }
}

/// Three shards of the demo task of different sizes (so the FedAvg weights differ), each with
/// a third of the evaluation set.
fn shards(root: &Path) -> PathBuf {
    let dir = root.join("shards");
    std::fs::create_dir_all(&dir).unwrap();
    let train = std::fs::read_to_string(repo().join("demo/task/train.jsonl")).unwrap();
    let eval = std::fs::read_to_string(repo().join("demo/task/eval.jsonl")).unwrap();
    let train: Vec<&str> = train.lines().collect();
    let eval: Vec<&str> = eval.lines().collect();
    let cuts = [0, 160, 380, 700];
    for i in 0..CLIENTS {
        let shard = train[cuts[i]..cuts[i + 1]].join("\n") + "\n";
        std::fs::write(dir.join(format!("train{i}.jsonl")), shard).unwrap();
        let third = eval.len() / CLIENTS;
        let part = eval[i * third..(i + 1) * third].join("\n") + "\n";
        std::fs::write(dir.join(format!("eval{i}.jsonl")), part).unwrap();
    }
    dir
}

/// The demo model's LoRA layout for the test's adapter.
fn layout() -> mft_models::LoraLayout {
    let config = ModelSource::parse(&repo().join("demo/base").display().to_string())
        .unwrap()
        .config()
        .unwrap();
    let spec = LoraArgs {
        rank: 8,
        alpha: 16.0,
        dropout: 0.05,
        targets: Some(TARGETS.split(',').map(String::from).collect()),
        rslora: false,
    };
    spec.layout(&config).unwrap()
}

fn init_adapter(root: &Path) -> PathBuf {
    let out = root.join("init-adapter");
    let status = Command::new(env!("CARGO_BIN_EXE_mft-fl"))
        .args(["init-adapter", "--model", &repo().join("demo/base").display().to_string()])
        .args(["--lora-targets", TARGETS, "--out", &out.display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// Each round's aggregate against the weighted mean of what the clients sent; returns the
/// rounds' evaluation losses.
fn check_rounds(fed: &Federation, layout: &mft_models::LoraLayout) -> Vec<f64> {
    let mut eval_losses = Vec::new();
    for round in 1..=ROUNDS {
        let train = fed.json(&format!("out/round-{round:04}/train.json"));
        assert_eq!(train["aggregated"], true, "round {round} aggregated: {train}");
        let aggregate = load_adapters(
            &fed.dir.join(format!("out/round-{round:04}/adapter_model.safetensors")),
            layout,
        )
        .unwrap();
        // What each client sent this round, by node id.
        let mut sent = Vec::new();
        for i in 0..CLIENTS {
            let dir = fed.dir.join(format!("records{i}/round-{round:04}-train"));
            if !dir.join("reply.json").exists() {
                continue;
            }
            let reply = fed.json(&format!("records{i}/round-{round:04}-train/reply.json"));
            let adapters = load_adapters(&dir.join("adapter_model.safetensors"), layout).unwrap();
            sent.push((
                reply["node_id"].as_u64().unwrap(),
                reply["metrics"]["num-examples"].as_f64().unwrap(),
                adapters,
            ));
        }
        let replies = train["replies"].as_array().unwrap();
        assert!(replies.len() >= 2, "round {round}: {} replies", replies.len());
        let mut weighted = vec![0.0f64; layout.len()];
        let mut total = 0.0;
        for reply in replies {
            let node = reply["node_id"].as_u64().unwrap();
            let weight = reply["metrics"]["num-examples"].as_f64().unwrap();
            let (_, recorded, adapters) = sent
                .iter()
                .find(|(id, _, _)| *id == node)
                .unwrap_or_else(|| panic!("round {round}: node {node}'s update has no record"));
            assert_eq!(weight, *recorded, "round {round}: node {node}'s num-examples");
            for (w, &a) in weighted.iter_mut().zip(adapters) {
                *w += weight * f64::from(a);
            }
            total += weight;
        }
        let mut worst = 0.0f64;
        for (w, &a) in weighted.iter().zip(&aggregate) {
            worst = worst.max((w / total - f64::from(a)).abs());
        }
        assert!(worst < 1e-6, "round {round}: the aggregate is off the weighted mean by {worst}");
        // Not trivially equal to one client's update.
        let (_, _, first) = &sent[0];
        let apart = first.iter().zip(&aggregate).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(apart > 1e-4, "round {round}: the aggregate equals one client's update");
        let evaluate = fed.json(&format!("out/round-{round:04}/evaluate.json"));
        eval_losses.push(evaluate["metrics"]["eval-loss"].as_f64().unwrap());
    }
    eval_losses
}

#[test]
#[ignore = "needs Python and flwr: run through `cargo xtask flower` (MFT_FL_FLWR_VENV)"]
fn three_clients_three_rounds_and_a_client_killed_mid_round() {
    let bin = venv_bin();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let shards = shards(root);
    let init = init_adapter(root);
    let layout = layout();

    // 1. Three clients, three rounds.
    let fed = Federation::new(root, "plain", &bin);
    let mut procs = Procs::default();
    fed.start_superlink(&mut procs);
    for i in 0..CLIENTS {
        fed.start_client(i, &shards, &mut procs);
    }
    fed.start_run(&init, &mut procs);
    let summary = fed.wait_summary(&mut procs, Duration::from_secs(600));
    assert_eq!(summary["rounds"], ROUNDS);
    let losses = check_rounds(&fed, &layout);
    assert!(losses[ROUNDS - 1] < losses[0], "eval loss by round: {losses:?}");
    for round in 1..=ROUNDS {
        let train = fed.json(&format!("out/round-{round:04}/train.json"));
        assert_eq!(train["replies"].as_array().unwrap().len(), CLIENTS, "round {round}");
    }
    fed.stop_all(&mut procs);
    drop(procs);
    eprintln!("plain federation: eval loss by round {losses:?}");

    // 2. Client 1 killed while it trains in round 2, then restarted.
    let fed = Federation::new(root, "killed", &bin);
    let mut procs = Procs::default();
    fed.start_superlink(&mut procs);
    for i in [0, 2] {
        fed.start_client(i, &shards, &mut procs);
    }
    let mut command = fed.client_command(1, &shards);
    let mut victim = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let stderr = victim.stderr.take().unwrap();
    procs.add("client1", victim);
    let (tx, rx) = mpsc::channel();
    let log_path = fed.dir.join("client1-first.log");
    let reader = std::thread::spawn(move || {
        let mut log = std::fs::File::create(log_path).unwrap();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            use std::io::Write;
            let _ = writeln!(log, "{line}");
            if !sent && line.contains("round 2: step 1/") {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    fed.start_run(&init, &mut procs);
    rx.recv_timeout(Duration::from_secs(600))
        .unwrap_or_else(|_| panic!("client 1 never trained in round 2:\n{}", fed.tail_logs()));
    let mut victim = procs.take("client1");
    victim.kill().unwrap();
    victim.wait().unwrap();
    reader.join().unwrap();
    let first_id = std::fs::read_to_string(fed.dir.join("node1/node.json")).unwrap();
    fed.start_client(1, &shards, &mut procs);
    let summary = fed.wait_summary(&mut procs, Duration::from_secs(600));
    assert_eq!(summary["rounds"], ROUNDS);
    check_rounds(&fed, &layout);
    let node: serde_json::Value = serde_json::from_str(&first_id).unwrap();
    let killed = node["node_id"].as_u64().unwrap();
    let round2 = fed.json("out/round-0002/train.json");
    let replied: Vec<u64> = round2["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(replied.len(), CLIENTS - 1, "round 2 aggregates the two others: {round2}");
    assert!(!replied.contains(&killed), "the killed node's round-2 update: {round2}");
    let failures = round2["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f["node_id"].as_u64() == Some(killed)
            && f["reason"].as_str().unwrap_or("").contains("restarted")),
        "round 2 records the restarted node's error reply: {round2}"
    );
    let round3 = fed.json("out/round-0003/train.json");
    let replied: Vec<u64> = round3["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(replied.len(), CLIENTS, "round 3 has all three: {round3}");
    assert!(replied.contains(&killed), "the restarted node kept its id {killed}: {round3}");
    fed.stop_all(&mut procs);
}
