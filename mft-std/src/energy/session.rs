//! [`EnergySession`]: the scheduler and the energy meter of one training run, as the step loop
//! uses them — [`EnergySession::gate`] before each step (run on how many threads, or pause:
//! wait or exit), [`EnergySession::begin_step`] / [`EnergySession::finish_step`] around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::clock::{Clock, SystemClock};
use super::meter::{EnergyMeter, StepEnergy};
use super::options::{EnergyOptions, OnPause};
use super::policy::{Action, Decision, Scheduler};
use super::sysfs::DeviceReader;
use crate::error::Result;

/// The longest a waiting run sleeps before looking at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What the step loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Train the next step on this many threads.
    Run {
        /// Threads.
        threads: usize,
    },
    /// Stop with a resumable checkpoint (`--on-pause exit`): the policy paused the run.
    Exit {
        /// Why it paused.
        reason: String,
    },
    /// The stop flag (Ctrl-C) was set while waiting.
    Stopped,
}

/// The scheduler and energy meter of one run.
pub struct EnergySession {
    options: EnergyOptions,
    reader: Arc<DeviceReader>,
    clock: Arc<dyn Clock>,
    scheduler: Option<Scheduler>,
    meter: EnergyMeter,
    max_threads: usize,
}

impl std::fmt::Debug for EnergySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergySession")
            .field("options", &self.options)
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl EnergySession {
    /// A session on the real clocks, for a run of `max_threads` threads.
    pub fn new(options: &EnergyOptions, max_threads: usize) -> EnergySession {
        EnergySession::with_clock(options, max_threads, Arc::new(SystemClock::new()))
    }

    /// A session on `clock` (tests pass a [`super::ManualClock`] or their own).
    pub fn with_clock(
        options: &EnergyOptions,
        max_threads: usize,
        clock: Arc<dyn Clock>,
    ) -> EnergySession {
        let reader = Arc::new(DeviceReader::new(&options.power_root));
        let scheduler =
            options.policy.is_active().then(|| Scheduler::new(options.policy.clone(), max_threads));
        let meter = EnergyMeter::new(Arc::clone(&reader), Arc::clone(&clock), options.sample_every);
        EnergySession {
            options: options.clone(),
            reader,
            clock,
            scheduler,
            meter,
            max_threads: max_threads.max(1),
        }
    }

    /// The device reader.
    pub fn reader(&self) -> &DeviceReader {
        &self.reader
    }

    /// Whether a policy is in force (without one, [`EnergySession::gate`] always runs on every
    /// thread and reads nothing).
    pub fn scheduling(&self) -> bool {
        self.scheduler.is_some()
    }

    /// Decides whether the next step may run. Every decision that differs from the previous
    /// one goes to `log`. On a pause: with `--on-pause exit`, returns [`Gate::Exit`] (the
    /// caller saves its checkpoint as it does at the end of a run); with `wait`, calls
    /// `checkpoint` once, then checks again every poll interval until a decision lets the run
    /// go on, or until `stop` is set ([`Gate::Stopped`]).
    ///
    /// # Errors
    /// What `log` or `checkpoint` return.
    pub fn gate(
        &mut self,
        stop: &AtomicBool,
        mut log: impl FnMut(&Decision) -> Result<()>,
        mut checkpoint: impl FnMut(&Decision) -> Result<()>,
    ) -> Result<Gate> {
        let Some(scheduler) = &mut self.scheduler else {
            return Ok(Gate::Run { threads: self.max_threads });
        };
        let thermal = scheduler.policy().thermal.is_some();
        let mut saved = false;
        loop {
            let state = self.reader.read(thermal);
            let decision = scheduler.decide(&state, self.clock.unix_seconds());
            if decision.changed {
                log(&decision)?;
            }
            match decision.action {
                Action::Run { threads } => return Ok(Gate::Run { threads }),
                Action::Pause => match self.options.on_pause {
                    OnPause::Exit => return Ok(Gate::Exit { reason: decision.reason }),
                    OnPause::Wait => {
                        if !saved {
                            checkpoint(&decision)?;
                            saved = true;
                        }
                        let mut left = self.options.poll;
                        while !left.is_zero() {
                            if stop.load(Ordering::SeqCst) {
                                return Ok(Gate::Stopped);
                            }
                            let nap = left.min(STOP_CHECK);
                            self.clock.sleep(nap);
                            left -= nap;
                        }
                        if stop.load(Ordering::SeqCst) {
                            return Ok(Gate::Stopped);
                        }
                    }
                },
            }
        }
    }

    /// Starts measuring a step's energy.
    pub fn begin_step(&self) {
        self.meter.begin();
    }

    /// Takes a sample now, within a step (the background sampler does this on its own).
    pub fn sample(&self) {
        self.meter.sample();
    }

    /// Ends the step and returns its energy.
    pub fn finish_step(&self) -> StepEnergy {
        self.meter.finish()
    }

    /// Missing or unreadable device nodes noticed since the last call (each once per run).
    pub fn take_notes(&self) -> Vec<String> {
        self.reader.take_notes()
    }
}
