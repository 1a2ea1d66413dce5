//! The background heartbeat: `send-node-heartbeat` every third of the interval on its own
//! thread, so the SuperLink keeps the node online while a long local round trains (after two
//! intervals without one, the node is offline and its round fails). A failed heartbeat is
//! retried sooner; the thread stops when the [`Heartbeat`] is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::log;
use crate::proto::{Node, SendNodeHeartbeatRequest, SendNodeHeartbeatResponse};
use crate::transport::Fleet;

/// A running heartbeat thread.
pub struct Heartbeat {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    node_id: AtomicU64,
    quit: Mutex<bool>,
    wake: Condvar,
    /// Whether the last heartbeat got through.
    healthy: AtomicBool,
    sent: AtomicU64,
}

impl Heartbeat {
    /// Starts sending heartbeats for `node_id` every `interval / 3` (the interval the node
    /// activated with).
    pub fn start(fleet: Fleet, node_id: u64, interval: Duration) -> Heartbeat {
        let shared = Arc::new(Shared {
            node_id: AtomicU64::new(node_id),
            quit: Mutex::new(false),
            wake: Condvar::new(),
            healthy: AtomicBool::new(true),
            sent: AtomicU64::new(0),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("mft-fl-heartbeat".into())
                .spawn(move || run(&fleet, &shared, interval))
                .expect("the heartbeat thread starts")
        };
        Heartbeat { shared, thread: Some(thread) }
    }

    /// Heartbeats from now on are for `node_id` (after registering again).
    pub fn set_node(&self, node_id: u64) {
        self.shared.node_id.store(node_id, Ordering::SeqCst);
    }

    /// Heartbeats that got through.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Whether the last heartbeat got through.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        *self.shared.quit.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(fleet: &Fleet, shared: &Shared, interval: Duration) {
    let period = interval / 3;
    let mut wait = period;
    loop {
        {
            let quit = shared.quit.lock().unwrap_or_else(|e| e.into_inner());
            let (quit, _) = shared
                .wake
                .wait_timeout_while(quit, wait, |q| !*q)
                .unwrap_or_else(|e| e.into_inner());
            if *quit {
                return;
            }
        }
        let request = SendNodeHeartbeatRequest {
            node: Some(Node { node_id: shared.node_id.load(Ordering::SeqCst) }),
            heartbeat_interval: interval.as_secs_f64(),
        };
        match fleet.call::<_, SendNodeHeartbeatResponse>("send-node-heartbeat", &request) {
            Ok(r) if r.success => {
                if !shared.healthy.swap(true, Ordering::SeqCst) {
                    log::info("heartbeat: the SuperLink answers again");
                }
                shared.sent.fetch_add(1, Ordering::SeqCst);
                wait = period;
            }
            outcome => {
                let why = match outcome {
                    Ok(_) => "the SuperLink does not know this node".to_string(),
                    Err(e) => e.to_string(),
                };
                if shared.healthy.swap(false, Ordering::SeqCst) {
                    log::warn(&format!("heartbeat failed: {why}; retrying"));
                }
                // Retry sooner, but not in a tight loop.
                wait = (period / 4).max(Duration::from_millis(500));
            }
        }
    }
}
