//! The Flower client: joins the federation, keeps the node alive, and answers `train` and
//! `evaluate` messages with local LoRA training and evaluation.
//!
//! # The loop
//! register-node (a key the SuperLink knows already is fine) → activate-node → background
//! heartbeats ([`crate::heartbeat`]) → repeat: pull-messages; for a message, pull its objects
//! (each checked, [`crate::objects`]), confirm receipt, train or evaluate, push the reply and
//! the objects the SuperLink asks for. On Ctrl-C or SIGTERM: deactivate-node (and
//! unregister-node with `--unregister-on-exit`).
//!
//! # Robustness
//! - Calls that fail for network reasons are retried with exponential backoff
//!   ([`crate::backoff`]), giving up after `--connect-timeout` at start and
//!   `--reconnect-timeout` while running; a SuperLink that forgot the node (it restarted) is
//!   joined again.
//! - The key file keeps the node's identity across restarts; the node id is kept beside it, so
//!   a client restarted before the SuperLink noticed it was gone takes its place again.
//! - A message's deadline is its `created_at + ttl`: objects are waited for and steps are taken
//!   only until then, and the reply's ttl is what is left.
//! - A message this node cannot act on (malformed or forged objects, arrays that do not match
//!   the local adapter, a config missing `server-round`, an unknown type) is logged and
//!   answered with an error reply, so the strategy counts a failure instead of waiting.
//! - While training, the message is noted in `in-flight.json`; a client killed mid-round finds
//!   the note when it restarts and answers that round with an error reply (the round goes on
//!   with the other nodes), then takes part in the next.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mft_core::Element;
use mft_kernels::GemmRhs;
use serde::{Deserialize, Serialize};

use crate::auth::NodeKey;
use crate::backoff::{Backoff, retry};
use crate::error::{Error, Result};
use crate::heartbeat::Heartbeat;
use crate::local::{Local, RoundConfig};
use crate::log;
use crate::objects::{self, Array, Inflated, Limits, Named, Record, RecordDict};
use crate::proto::{self, ConfigValue, Metadata, MetricValue, Node, ObjectTree};
use crate::transport::{Endpoint, Fleet};

/// Flower's `ErrorCode.CLIENT_APP_RAISED_EXCEPTION`: the node could not handle the message.
pub const ERROR_CLIENT_FAILED: i64 = 2;
/// The file, in the state directory, noting the message being worked on.
pub const IN_FLIGHT_FILE: &str = "in-flight.json";
/// The file, in the state directory, keeping the node id of the key.
pub const NODE_FILE: &str = "node.json";

/// How the client connects and behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// The SuperLink.
    pub endpoint: Endpoint,
    /// PEM roots to verify the SuperLink's certificate with (TLS only).
    pub root_certificates: Option<PathBuf>,
    /// The node's private key (created if missing).
    pub key: PathBuf,
    /// Where the node id and the in-flight note are kept.
    pub state_dir: PathBuf,
    /// The heartbeat interval announced to the SuperLink (10 s to 30 min).
    pub heartbeat_interval: Duration,
    /// Pause between pulls when there is no message.
    pub poll_interval: Duration,
    /// Give up joining after this long without reaching the SuperLink.
    pub connect_timeout: Duration,
    /// Give up after this long without reaching the SuperLink while running.
    pub reconnect_timeout: Duration,
    /// Bound of one HTTP call.
    pub call_timeout: Duration,
    /// Write each reply's adapter and metrics here (`round-NNNN-train/`, …).
    pub record_dir: Option<PathBuf>,
    /// Unregister the node when stopping (its key then joins as a new node next time).
    pub unregister_on_exit: bool,
    /// Stop after answering this many messages (`None`: run until stopped).
    pub max_messages: Option<u64>,
}

/// The node id kept for a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NodeNote {
    node_id: u64,
    /// The public key it belongs to (PEM).
    public_key: String,
    /// The SuperLink it was given by.
    superlink: String,
}

/// The message being worked on, enough to answer it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InFlight {
    run_id: u64,
    message_id: String,
    src_node_id: u64,
    dst_node_id: u64,
    group_id: String,
    message_type: String,
    created_at: f64,
    ttl: f64,
    src_task_id: Option<u64>,
    dst_task_id: Option<u64>,
}

impl InFlight {
    fn of(m: &Metadata) -> InFlight {
        InFlight {
            run_id: m.run_id,
            message_id: m.message_id.clone(),
            src_node_id: m.src_node_id,
            dst_node_id: m.dst_node_id,
            group_id: m.group_id.clone(),
            message_type: m.message_type.clone(),
            created_at: m.created_at,
            ttl: m.ttl,
            src_task_id: m.src_task_id,
            dst_task_id: m.dst_task_id,
        }
    }

    fn metadata(&self) -> Metadata {
        Metadata {
            run_id: self.run_id,
            message_id: self.message_id.clone(),
            src_node_id: self.src_node_id,
            dst_node_id: self.dst_node_id,
            reply_to_message_id: String::new(),
            group_id: self.group_id.clone(),
            ttl: self.ttl,
            message_type: self.message_type.clone(),
            created_at: self.created_at,
            src_task_id: self.src_task_id,
            dst_task_id: self.dst_task_id,
        }
    }
}

/// Seconds since the Unix epoch, as Flower's `created_at`.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The client of one node.
pub struct Client<T: 'static> {
    settings: ClientSettings,
    fleet: Fleet,
    local: Local<T>,
    node_id: u64,
    heartbeat: Option<Heartbeat>,
    backoff: Backoff,
    answered: u64,
}

impl<T: GemmRhs + Element + Send + Sync> Client<T> {
    /// Joins the federation: reads (or makes) the key, registers and activates the node
    /// (retrying an unreachable SuperLink until `connect_timeout`), starts the heartbeat, and
    /// answers a message a previous run of this node left unanswered.
    ///
    /// # Errors
    /// A key file that is not a key; a SuperLink that cannot be reached in time, or that
    /// refuses the node (each one line naming the address and the reason).
    pub fn join(settings: ClientSettings, local: Local<T>, stop: &AtomicBool) -> Result<Client<T>> {
        let key = NodeKey::load_or_create(&settings.key)?;
        let fleet = Fleet::new(
            settings.endpoint.clone(),
            key,
            settings.root_certificates.as_deref(),
            settings.call_timeout,
        )?;
        let seed = u64::from_le_bytes(
            objects::object_id(fleet.key().public_pem()).as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        let mut client = Client {
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30), seed),
            settings,
            fleet,
            local,
            node_id: 0,
            heartbeat: None,
            answered: 0,
        };
        let limit = client.settings.connect_timeout;
        client.node_id = client.with_retry("join", limit, stop, |c| c.register())?;
        log::info(&format!(
            "joined the federation at {} as node {} (key {})",
            client.settings.endpoint.address,
            client.node_id,
            client.fleet.key().path().display()
        ));
        client.heartbeat = Some(Heartbeat::start(
            client.fleet.clone(),
            client.node_id,
            client.settings.heartbeat_interval,
        ));
        client.answer_in_flight();
        Ok(client)
    }

    /// The node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Calls `f` until it succeeds, fails for good, `limit` passes, or `stop` is set.
    fn with_retry<R>(
        &mut self,
        what: &str,
        limit: Duration,
        stop: &AtomicBool,
        mut f: impl FnMut(&mut Self) -> Result<R>,
    ) -> Result<R> {
        let mut backoff = self.backoff.clone();
        let address = self.settings.endpoint.address.clone();
        let out = retry(
            &mut backoff,
            limit,
            &mut |d| sleep_unless(stop, d),
            &mut |e, d| log::warn(&format!("{what}: {e}; retrying in {:.1} s", d.as_secs_f64())),
            &mut || {
                if stop.load(Ordering::SeqCst) {
                    return Err(Error::Usage("stopped".into()));
                }
                f(self)
            },
        );
        self.backoff = backoff;
        out.map_err(|e| match e {
            Error::Unreachable { problem, rpc, .. } => Error::Unreachable {
                address,
                rpc,
                problem: format!("{problem} (gave up after {:.0} s)", limit.as_secs_f64()),
            },
            other => other,
        })
    }

    /// register-node, then activate-node; a node still online after a restart is taken back
    /// by its kept id.
    fn register(&mut self) -> Result<u64> {
        let public_key = self.fleet.key().public_pem().to_vec();
        match self.fleet.call::<_, proto::RegisterNodeFleetResponse>(
            "register-node",
            &proto::RegisterNodeFleetRequest { public_key: public_key.clone() },
        ) {
            Ok(r) => log::info(&format!("registered as node {}", r.node_id)),
            // The key is registered already (a restart), or the SuperLink registers nodes
            // itself (`flwr supernode register`): activation decides.
            Err(Error::Refused { detail, .. }) => {
                log::info(&format!("register-node: {detail}; activating the known key"))
            }
            Err(e) => return Err(e),
        }
        let interval = self.settings.heartbeat_interval.as_secs_f64();
        let activated = self.fleet.call::<_, proto::ActivateNodeResponse>(
            "activate-node",
            &proto::ActivateNodeRequest { public_key, heartbeat_interval: interval },
        );
        let node_id = match activated {
            Ok(r) => r.node_id,
            Err(Error::Refused { rpc, status, detail }) => {
                // Still online from a run that was killed: the kept id, if the SuperLink
                // accepts a heartbeat for it, is ours.
                let kept =
                    self.read_node_note().filter(|n| n.superlink == self.settings.endpoint.address);
                let Some(note) = kept else { return Err(Error::Refused { rpc, status, detail }) };
                let beat = self.fleet.call::<_, proto::SendNodeHeartbeatResponse>(
                    "send-node-heartbeat",
                    &proto::SendNodeHeartbeatRequest {
                        node: Some(Node { node_id: note.node_id }),
                        heartbeat_interval: interval,
                    },
                );
                match beat {
                    Ok(r) if r.success => {
                        log::info(&format!(
                            "node {} was still online; continuing as it",
                            note.node_id
                        ));
                        note.node_id
                    }
                    _ => return Err(Error::Refused { rpc, status, detail }),
                }
            }
            Err(e) => return Err(e),
        };
        self.write_node_note(node_id)?;
        Ok(node_id)
    }

    fn read_node_note(&self) -> Option<NodeNote> {
        let text = std::fs::read_to_string(self.settings.state_dir.join(NODE_FILE)).ok()?;
        let note: NodeNote = serde_json::from_str(&text).ok()?;
        (note.public_key.as_bytes() == self.fleet.key().public_pem()).then_some(note)
    }

    fn write_node_note(&self, node_id: u64) -> Result<()> {
        let note = NodeNote {
            node_id,
            public_key: String::from_utf8_lossy(self.fleet.key().public_pem()).into_owned(),
            superlink: self.settings.endpoint.address.clone(),
        };
        let text = serde_json::to_string_pretty(&note).expect("a note serializes");
        mft_std::fsio::create_dir_all(&self.settings.state_dir)?;
        mft_std::fsio::write_atomic(&self.settings.state_dir.join(NODE_FILE), text.as_bytes())?;
        Ok(())
    }

    /// Answers the message a previous run was working on when it ended (an error reply: the
    /// work is lost), if it is still waiting.
    fn answer_in_flight(&mut self) {
        let path = self.settings.state_dir.join(IN_FLIGHT_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else { return };
        let note: Option<InFlight> = serde_json::from_str(&text).ok();
        match note {
            Some(note) if note.dst_node_id == self.node_id => {
                let metadata = note.metadata();
                let reason = "the node restarted while working on this message; its result is lost";
                log::warn(&format!(
                    "a previous run stopped during {} message {}: answering it with an error",
                    note.message_type, note.message_id
                ));
                let deadline = Instant::now() + Duration::from_secs(60);
                let never = AtomicBool::new(false);
                if let Err(e) = self.reply(&metadata, None, Some(reason), deadline, &never) {
                    log::warn(&format!("could not answer message {}: {e}", note.message_id));
                }
            }
            Some(note) => log::warn(&format!(
                "ignoring {}: it was for node {}, this is node {}",
                path.display(),
                note.dst_node_id,
                self.node_id
            )),
            None => {
                log::warn(&format!("ignoring {}: not a note this version wrote", path.display()))
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Pulls and answers messages until `stop` is set (or `max_messages` are answered).
    ///
    /// # Errors
    /// A SuperLink unreachable for longer than `reconnect_timeout`, or one that refuses the
    /// node for good.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            if self.settings.max_messages.is_some_and(|m| self.answered >= m) {
                break;
            }
            let limit = self.settings.reconnect_timeout;
            let pulled = self.with_retry("pull-messages", limit, stop, |c| {
                let request = proto::PullMessagesRequest {
                    node: Some(Node { node_id: c.node_id }),
                    message_ids: Vec::new(),
                };
                match c.fleet.call::<_, proto::PullMessagesResponse>("pull-messages", &request) {
                    // The SuperLink does not know this node any more (it restarted): join again.
                    Err(Error::Unauthorized { .. }) => {
                        log::warn("the SuperLink no longer knows this node; joining again");
                        let id = c.register()?;
                        c.node_id = id;
                        if let Some(h) = &c.heartbeat {
                            h.set_node(id);
                        }
                        Ok(proto::PullMessagesResponse::default())
                    }
                    other => other,
                }
            });
            let pulled = match pulled {
                Ok(p) => p,
                Err(_) if stop.load(Ordering::SeqCst) => break,
                Err(e) => return Err(e),
            };
            if pulled.messages_list.is_empty() {
                sleep_unless(stop, self.settings.poll_interval);
                continue;
            }
            for (i, message) in pulled.messages_list.iter().enumerate() {
                let tree = pulled.message_object_trees.get(i);
                self.handle(message, tree, stop);
                self.answered += 1;
            }
        }
        Ok(())
    }

    /// Stops the heartbeat and tells the SuperLink the node leaves.
    pub fn leave(mut self) {
        self.heartbeat = None;
        let node = self.node_id;
        match self
            .fleet
            .call::<_, proto::Empty>("deactivate-node", &proto::NodeIdRequest { node_id: node })
        {
            Ok(_) => log::info(&format!("node {node} deactivated")),
            Err(e) => log::warn(&format!("deactivate-node: {e}")),
        }
        if self.settings.unregister_on_exit {
            match self
                .fleet
                .call::<_, proto::Empty>("unregister-node", &proto::NodeIdRequest { node_id: node })
            {
                Ok(_) => {
                    log::info(&format!("node {node} unregistered"));
                    let _ = std::fs::remove_file(self.settings.state_dir.join(NODE_FILE));
                }
                Err(e) => log::warn(&format!("unregister-node: {e}")),
            }
        }
    }

    /// Handles one pulled message: every failure is logged and, where the message can still
    /// be answered, answered with an error reply. Never panics on bad input.
    fn handle(&mut self, message: &proto::Message, tree: Option<&ObjectTree>, stop: &AtomicBool) {
        let Some(metadata) = message.metadata.clone() else {
            log::error("rejected a pulled message without metadata");
            return;
        };
        let id = metadata.message_id.clone();
        let deadline_at = metadata.created_at + metadata.ttl;
        let left = deadline_at - unix_now();
        if !left.is_finite() || left <= 0.0 {
            log::warn(&format!("message {id} expired before it was handled; skipping it"));
            return;
        }
        let deadline = Instant::now() + Duration::from_secs_f64(left.min(1e9));
        log::info(&format!(
            "message {} ({}, run {}), {:.0} s to answer",
            short(&id),
            metadata.message_type,
            metadata.run_id,
            left
        ));
        let outcome = self.pull_content(&metadata, tree, deadline).and_then(|inflated| {
            self.confirm(&metadata);
            self.act(&inflated, deadline, stop)
        });
        match outcome {
            Ok(()) => {}
            Err(e) if stop.load(Ordering::SeqCst) => {
                log::warn(&format!("stopping: message {} is left unanswered ({e})", short(&id)));
            }
            Err(e) => {
                log::error(&format!(
                    "rejected message {} ({}): {e}",
                    short(&id),
                    metadata.message_type
                ));
                if Instant::now() < deadline
                    && let Err(e2) =
                        self.reply(&metadata, None, Some(&e.to_string()), deadline, stop)
                {
                    log::warn(&format!("could not send the error reply: {e2}"));
                }
            }
        }
    }

    /// Pulls the message's objects and checks them.
    fn pull_content(
        &mut self,
        metadata: &Metadata,
        tree: Option<&ObjectTree>,
        deadline: Instant,
    ) -> Result<Inflated> {
        let id = &metadata.message_id;
        let message_error = |problem: String| Error::Message { message_id: id.clone(), problem };
        let tree = tree.ok_or_else(|| message_error("the SuperLink sent no object tree".into()))?;
        if tree.object_id != *id {
            return Err(message_error(format!("its object tree is rooted at {}", tree.object_id)));
        }
        let fleet = self.fleet.clone();
        let node_id = self.node_id;
        let run_id = metadata.run_id;
        let mut fetch = |object_id: &str| -> Result<Vec<u8>> {
            pull_object(&fleet, node_id, run_id, object_id, deadline)
        };
        let inflated = objects::inflate_message(tree, Limits::default(), &mut fetch)?;
        let m = &inflated.metadata;
        if m.run_id != metadata.run_id || m.dst_node_id != self.node_id {
            return Err(message_error(format!(
                "its object says run {} for node {}; the SuperLink delivered it for run {} to node {}",
                m.run_id, m.dst_node_id, metadata.run_id, self.node_id
            )));
        }
        Ok(inflated)
    }

    /// confirm-message-received (the SuperLink may then free the objects).
    fn confirm(&self, metadata: &Metadata) {
        let request = proto::ConfirmMessageReceivedRequest {
            node: Some(Node { node_id: self.node_id }),
            run_id: metadata.run_id,
            message_object_id: metadata.message_id.clone(),
        };
        if let Err(e) = self.fleet.call::<_, proto::Empty>("confirm-message-received", &request) {
            log::warn(&format!("confirm-message-received: {e}"));
        }
    }

    /// Trains or evaluates, and replies.
    fn act(&mut self, inflated: &Inflated, deadline: Instant, stop: &AtomicBool) -> Result<()> {
        let metadata = &inflated.metadata;
        let message_error =
            |problem: String| Error::Message { message_id: metadata.message_id.clone(), problem };
        if let Some(error) = &inflated.error {
            return Err(message_error(format!(
                "it carries an error ({}): {}",
                error.code, error.reason
            )));
        }
        let content =
            inflated.content.as_ref().ok_or_else(|| message_error("it has no content".into()))?;
        let kind = metadata.message_type.split('.').next().unwrap_or("");
        match kind {
            "train" => self.train(inflated, content, deadline, stop),
            "evaluate" => self.evaluate(inflated, content, deadline, stop),
            other => Err(message_error(format!(
                "message type {other:?}: mft-fl answers \"train\" and \"evaluate\""
            ))),
        }
    }

    fn train(
        &mut self,
        inflated: &Inflated,
        content: &RecordDict,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Result<()> {
        let metadata = &inflated.metadata;
        let (round, global) = self.round_of(metadata, content)?;
        let in_flight = self.settings.state_dir.join(IN_FLIGHT_FILE);
        let note = serde_json::to_string(&InFlight::of(metadata)).expect("a note serializes");
        mft_std::fsio::create_dir_all(&self.settings.state_dir)?;
        mft_std::fsio::write_atomic(&in_flight, note.as_bytes())?;
        log::info(&format!(
            "round {}: training {} steps from the global adapter (lr {}{})",
            round.round,
            round.steps,
            round.lr,
            round.proximal_mu.map(|mu| format!(", FedProx mu {mu}")).unwrap_or_default()
        ));
        // Steps stop at Ctrl-C and at the deadline (nobody waits for the reply after it).
        let outcome = self.local.train(&global, &round, stop, deadline);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = std::fs::remove_file(&in_flight);
                return Err(e);
            }
        };
        let arrays = self.local.arrays().to_arrays(&outcome.adapters);
        let update =
            RecordDict { records: vec![("arrays".into(), Record::Arrays(arrays.clone()))] };
        let bytes_sent =
            objects::deflate_message(&Metadata::default(), Some(&update), None).total_bytes();
        let mut metrics = vec![
            ("num-examples".to_string(), MetricValue::Sint64(outcome.num_examples as i64)),
            ("train-loss".into(), MetricValue::Double(outcome.mean_loss())),
            (
                "train-loss-last".into(),
                MetricValue::Double(outcome.steps.last().map_or(0.0, |s| f64::from(s.0))),
            ),
            ("local-steps".into(), MetricValue::Sint64(outcome.steps.len() as i64)),
            ("tokens".into(), MetricValue::Sint64(outcome.tokens as i64)),
            ("train-seconds".into(), MetricValue::Double(outcome.seconds)),
        ];
        let step_times: Vec<f64> = outcome.steps.iter().map(|s| s.1).collect();
        let mean = step_times.iter().sum::<f64>() / step_times.len().max(1) as f64;
        let max = step_times.iter().copied().fold(0.0, f64::max);
        metrics.push(("step-seconds-mean".into(), MetricValue::Double(mean)));
        metrics.push(("step-seconds-max".into(), MetricValue::Double(max)));
        metrics.extend(self.common_metrics(inflated.bytes, bytes_sent, outcome.peak_rss_bytes));
        metrics.push((
            "energy-joules".into(),
            MetricValue::Double(outcome.energy_joules.unwrap_or(0.0)),
        ));
        metrics.push((
            "energy-measured".into(),
            MetricValue::Sint64(i64::from(outcome.energy_joules.is_some())),
        ));
        let content = RecordDict {
            records: vec![
                ("arrays".into(), Record::Arrays(arrays)),
                ("metrics".into(), Record::Metrics(metrics.clone())),
            ],
        };
        self.reply(metadata, Some(&content), None, deadline, stop)?;
        let _ = std::fs::remove_file(&in_flight);
        log::info(&format!(
            "round {}: sent the update ({} arrays, {} examples, mean loss {:.4}, {:.1} s{})",
            round.round,
            self.local.arrays().count(),
            outcome.num_examples,
            outcome.mean_loss(),
            outcome.seconds,
            outcome
                .energy_note
                .as_deref()
                .map(|n| format!("; energy not measured: {n}"))
                .unwrap_or_default()
        ));
        self.record(round.round, "train", Some(&outcome.adapters), &metrics)
    }

    fn evaluate(
        &mut self,
        inflated: &Inflated,
        content: &RecordDict,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Result<()> {
        let metadata = &inflated.metadata;
        let (round, global) = self.round_of(metadata, content)?;
        let e = self.local.evaluate(&global)?;
        let mut metrics = vec![
            ("num-examples".to_string(), MetricValue::Sint64(e.num_examples as i64)),
            ("eval-loss".into(), MetricValue::Double(e.loss)),
            ("eval-tokens".into(), MetricValue::Sint64(e.tokens as i64)),
        ];
        metrics.extend(self.common_metrics(inflated.bytes, 0, mft_std::progress::peak_rss_bytes()));
        let content =
            RecordDict { records: vec![("metrics".into(), Record::Metrics(metrics.clone()))] };
        self.reply(metadata, Some(&content), None, deadline, stop)?;
        log::info(&format!(
            "round {}: evaluated the global adapter: loss {:.4} on {} examples",
            round.round, e.loss, e.num_examples
        ));
        self.record(round.round, "evaluate", None, &metrics)
    }

    /// The round's configuration (the server's keys over this node's settings) and the global
    /// adapter that a train or evaluate message carries.
    fn round_of(
        &self,
        metadata: &Metadata,
        content: &RecordDict,
    ) -> Result<(RoundConfig, Vec<f32>)> {
        let RoundInputs { arrays, config } = round_inputs(metadata, content)?;
        let settings = self.local.settings();
        let round = round_config(metadata, config, settings.local_steps, settings.lr)?;
        Ok((round, self.local.arrays().from_arrays(arrays)?))
    }

    fn common_metrics(&self, received: usize, sent: usize, rss: u64) -> Vec<(String, MetricValue)> {
        vec![
            ("bytes-received".into(), MetricValue::Sint64(received as i64)),
            ("bytes-sent".into(), MetricValue::Sint64(sent as i64)),
            ("peak-rss-bytes".into(), MetricValue::Sint64(rss as i64)),
        ]
    }

    /// Builds and pushes a reply to `to` carrying `content` or an error `reason`; retries until
    /// the deadline or `--reconnect-timeout`, whichever comes first, or until `stop`.
    fn reply(
        &mut self,
        to: &Metadata,
        content: Option<&RecordDict>,
        reason: Option<&str>,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Result<()> {
        let now = unix_now();
        let ttl = to.created_at + to.ttl - now;
        if ttl <= 0.0 {
            return Err(Error::Message {
                message_id: to.message_id.clone(),
                problem: "its deadline passed before the reply was ready".into(),
            });
        }
        let metadata = Metadata {
            run_id: to.run_id,
            message_id: String::new(),
            src_node_id: self.node_id,
            dst_node_id: to.src_node_id,
            reply_to_message_id: to.message_id.clone(),
            group_id: to.group_id.clone(),
            ttl,
            message_type: to.message_type.clone(),
            created_at: now,
            src_task_id: to.dst_task_id,
            dst_task_id: to.src_task_id,
        };
        let error =
            reason.map(|r| proto::Error { code: ERROR_CLIENT_FAILED, reason: r.to_string() });
        if error.is_some() == content.is_some() {
            unreachable!("a reply carries content or an error");
        }
        let deflated = objects::deflate_message(&metadata, content, error.as_ref());
        let request = proto::PushMessagesRequest {
            node: Some(Node { node_id: self.node_id }),
            // The content travels as objects; the message says it has some (an empty
            // RecordDict), or carries its error (the SuperLink rebuilds the message from this).
            messages_list: vec![proto::Message {
                metadata: Some(Metadata { message_id: deflated.id.clone(), ..metadata }),
                content: content.map(|_| proto::RecordDict {}),
                error,
            }],
            message_object_trees: vec![deflated.tree.clone()],
            clientapp_runtime_list: Vec::new(),
        };
        let limit = |c: &Self| {
            deadline.saturating_duration_since(Instant::now()).min(c.settings.reconnect_timeout)
        };
        let pushed = self.with_retry("push-messages", limit(self), stop, |c| {
            c.fleet.call::<_, proto::PushMessagesResponse>("push-messages", &request)
        })?;
        if pushed.results.get(&deflated.id).is_some_and(|&code| code != 0) {
            return Err(Error::Message {
                message_id: to.message_id.clone(),
                problem: format!("the SuperLink did not accept the reply: {:?}", pushed.results),
            });
        }
        for object_id in &pushed.objects_to_push {
            let bytes = deflated.object(object_id).ok_or_else(|| Error::Message {
                message_id: to.message_id.clone(),
                problem: format!(
                    "the SuperLink asks for object {object_id}, which is not in the reply"
                ),
            })?;
            let request = proto::PushObjectRequest {
                node: Some(Node { node_id: self.node_id }),
                run_id: to.run_id,
                object_id: object_id.clone(),
                object_content: bytes.to_vec(),
                session_id: pushed.session_id.clone(),
            };
            let stored = self.with_retry("push-object", limit(self), stop, |c| {
                c.fleet.call::<_, proto::PushObjectResponse>("push-object", &request)
            })?;
            if !stored.stored {
                log::warn(&format!(
                    "push-object {}: the SuperLink did not store it",
                    short(object_id)
                ));
            }
        }
        Ok(())
    }

    /// Writes what was sent, for inspection and tests: `round-NNNN-<kind>/` with the adapter (a
    /// PEFT directory) and `reply.json` (node, round, metrics).
    fn record(
        &self,
        round: u64,
        kind: &str,
        adapters: Option<&[f32]>,
        metrics: &[(String, MetricValue)],
    ) -> Result<()> {
        let Some(root) = &self.settings.record_dir else { return Ok(()) };
        let dir = root.join(format!("round-{round:04}-{kind}"));
        mft_std::fsio::create_dir_all(&dir)?;
        if let Some(adapters) = adapters {
            mft_std::export::export_peft_adapter(
                &dir,
                self.local.model_config(),
                self.local.layout(),
                adapters,
                Some(self.local.source_name()),
            )?;
        }
        let metrics: serde_json::Map<String, serde_json::Value> = metrics
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    MetricValue::Double(x) => serde_json::json!(x),
                    MetricValue::Sint64(n) => serde_json::json!(n),
                    MetricValue::Uint64(n) => serde_json::json!(n),
                    other => serde_json::json!(format!("{other:?}")),
                };
                (k.clone(), value)
            })
            .collect();
        let reply = serde_json::json!({ "node_id": self.node_id, "round": round, "kind": kind, "metrics": metrics });
        mft_std::fsio::write_atomic(
            &dir.join("reply.json"),
            serde_json::to_string_pretty(&reply).expect("json").as_bytes(),
        )?;
        Ok(())
    }
}

/// A round's settings from the message's config: `server-round` (required), `local-steps`
/// and `lr` (else `steps` and `lr`), `proximal-mu` (FedProx).
///
/// # Errors
/// [`Error::Message`] naming the key that is missing or of the wrong type or range.
pub fn round_config(
    metadata: &Metadata,
    config: &[(String, ConfigValue)],
    steps: u64,
    lr: f32,
) -> Result<RoundConfig> {
    let bad = |problem: String| Error::Message { message_id: metadata.message_id.clone(), problem };
    let get = |key: &str| config.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let int = |key: &str, v: &ConfigValue| match v {
        ConfigValue::Sint64(n) if *n >= 0 => Ok(*n as u64),
        ConfigValue::Uint64(n) => Ok(*n),
        other => Err(bad(format!("config {key:?} is {other:?}, not a non-negative integer"))),
    };
    let float = |key: &str, v: &ConfigValue| match v {
        ConfigValue::Double(x) if x.is_finite() && *x >= 0.0 => Ok(*x),
        ConfigValue::Sint64(n) if *n >= 0 => Ok(*n as f64),
        other => Err(bad(format!("config {key:?} is {other:?}, not a non-negative number"))),
    };
    let round = get("server-round")
        .ok_or_else(|| bad("the config has no \"server-round\" (required)".into()))
        .and_then(|v| int("server-round", v))?;
    let steps = match get("local-steps") {
        Some(v) => int("local-steps", v)?,
        None => steps,
    };
    if steps == 0 || steps > 1_000_000 {
        return Err(bad(format!("config \"local-steps\" {steps} is not in 1..=1000000")));
    }
    let lr = match get("lr") {
        Some(v) => float("lr", v)? as f32,
        None => lr,
    };
    let proximal_mu =
        get("proximal-mu").map(|v| float("proximal-mu", v)).transpose()?.map(|m| m as f32);
    Ok(RoundConfig { round, steps, lr, proximal_mu })
}

/// The one ArrayRecord and the one ConfigRecord of a train or evaluate message.
struct RoundInputs<'c> {
    arrays: &'c [Named<Array>],
    config: &'c [Named<ConfigValue>],
}

/// The [`RoundInputs`] of a train or evaluate message.
fn round_inputs<'c>(metadata: &Metadata, content: &'c RecordDict) -> Result<RoundInputs<'c>> {
    let bad = |problem: String| Error::Message { message_id: metadata.message_id.clone(), problem };
    let arrays: Vec<&[Named<Array>]> = content
        .records
        .iter()
        .filter_map(|(_, r)| if let Record::Arrays(a) = r { Some(&a[..]) } else { None })
        .collect();
    let configs: Vec<&[Named<ConfigValue>]> = content
        .records
        .iter()
        .filter_map(|(_, r)| if let Record::Config(c) = r { Some(&c[..]) } else { None })
        .collect();
    let [arrays] = arrays[..] else {
        return Err(bad(format!(
            "{} ArrayRecords; a train or evaluate message has one",
            arrays.len()
        )));
    };
    let [config] = configs[..] else {
        return Err(bad(format!(
            "{} ConfigRecords; a train or evaluate message has one",
            configs.len()
        )));
    };
    Ok(RoundInputs { arrays, config })
}

/// Pulls one object, waiting (until `deadline`) for one the SuperLink has not received yet.
fn pull_object(
    fleet: &Fleet,
    node_id: u64,
    run_id: u64,
    object_id: &str,
    deadline: Instant,
) -> Result<Vec<u8>> {
    let request = proto::PullObjectRequest {
        node: Some(Node { node_id }),
        run_id,
        object_id: object_id.to_string(),
    };
    let mut backoff =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5), node_id).without_jitter();
    loop {
        let attempt = retry(
            &mut Backoff::new(Duration::from_millis(200), Duration::from_secs(10), node_id),
            deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(300)),
            &mut std::thread::sleep,
            &mut |e, d| {
                log::warn(&format!("pull-object: {e}; retrying in {:.1} s", d.as_secs_f64()))
            },
            &mut || fleet.call::<_, proto::PullObjectResponse>("pull-object", &request),
        )?;
        match attempt {
            r if r.object_found && r.object_available => return Ok(r.object_content),
            r if r.object_found && Instant::now() < deadline => {
                let _ = r;
                std::thread::sleep(backoff.next_delay());
            }
            _ => {
                return Err(Error::Object {
                    id: object_id.to_string(),
                    problem: "the SuperLink does not have it (or not before the deadline)".into(),
                });
            }
        }
    }
}

/// Sleeps `duration`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, duration: Duration) {
    let end = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The first 12 hex digits of an id, for logs.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Where the node's key and state live by default: `<state-dir>/node-key.pem`.
pub fn default_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("node-key.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(items: &[(&str, ConfigValue)]) -> Vec<(String, ConfigValue)> {
        items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn round_config_takes_the_servers_keys_and_refuses_bad_ones() {
        let m = Metadata { message_id: "abc".into(), ..Default::default() };
        let c = config(&[("server-round", ConfigValue::Sint64(2))]);
        let r = round_config(&m, &c, 7, 0.5).unwrap();
        assert_eq!((r.round, r.steps, r.lr, r.proximal_mu), (2, 7, 0.5, None));
        let c = config(&[
            ("server-round", ConfigValue::Sint64(3)),
            ("local-steps", ConfigValue::Sint64(4)),
            ("lr", ConfigValue::Double(0.01)),
            ("proximal-mu", ConfigValue::Double(0.1)),
        ]);
        let r = round_config(&m, &c, 7, 0.5).unwrap();
        assert_eq!((r.round, r.steps, r.lr, r.proximal_mu), (3, 4, 0.01, Some(0.1)));
        for (items, expect) in [
            (config(&[]), "no \"server-round\""),
            (config(&[("server-round", ConfigValue::String("2".into()))]), "server-round"),
            (
                config(&[
                    ("server-round", ConfigValue::Sint64(1)),
                    ("local-steps", ConfigValue::Sint64(0)),
                ]),
                "local-steps",
            ),
            (
                config(&[
                    ("server-round", ConfigValue::Sint64(1)),
                    ("lr", ConfigValue::Double(f64::NAN)),
                ]),
                "\"lr\"",
            ),
            (
                config(&[
                    ("server-round", ConfigValue::Sint64(1)),
                    ("proximal-mu", ConfigValue::Double(-1.0)),
                ]),
                "proximal-mu",
            ),
        ] {
            let err = round_config(&m, &items, 7, 0.5).unwrap_err().to_string();
            assert!(err.contains(expect) && err.contains("abc"), "{err} should name {expect}");
        }
    }
}
