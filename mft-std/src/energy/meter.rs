//! Energy per training step, measured from the battery: [`Integrator`] integrates the samples
//! of one step (trapezoid rule), [`EnergyMeter`] takes them — at the step's start and end, and
//! every `sample_every` in between on a background thread.
//!
//! Two measurements, in order of preference:
//! - `power`: every sample has the battery's power (`power_now`, or `voltage_now` ×
//!   |`current_now`|); energy is the trapezoid integral of power over time;
//! - `charge_counter`: every sample has the voltage and `charge_counter`; energy is, between
//!   consecutive samples, the charge that left the battery times the mean voltage. The counter
//!   moves in coarse steps on many phones, so short steps read unevenly (but what is read was
//!   measured).
//!
//! Otherwise — no battery, external power, unreadable nodes — a step's energy is
//! [`StepEnergy::Unavailable`] with the reason; nothing is estimated.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::clock::Clock;
use super::sysfs::{BatteryReading, DeviceReader};

/// µAh in coulombs.
const COULOMBS_PER_UAH: f64 = 3.6e-3;

/// One reading at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When (the clock's monotonic time).
    pub at: Duration,
    /// What the battery delivered, or why that cannot be known.
    pub reading: Result<BatteryReading, String>,
}

/// How a step's energy was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Integrated power.
    Power,
    /// Charge counted out of the battery, times the voltage.
    ChargeCounter,
}

impl Method {
    /// `power` or `charge_counter`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Power => "power",
            Method::ChargeCounter => "charge_counter",
        }
    }
}

/// The energy of one step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnergy {
    /// Measured.
    Measured {
        /// Joules drawn from the battery.
        joules: f64,
        /// Seconds between the first and last sample.
        seconds: f64,
        /// How.
        method: Method,
        /// Samples integrated.
        samples: usize,
    },
    /// Not measurable; why.
    Unavailable {
        /// The reason.
        reason: String,
    },
}

impl StepEnergy {
    /// Joules, when measured.
    pub fn joules(&self) -> Option<f64> {
        match self {
            StepEnergy::Measured { joules, .. } => Some(*joules),
            StepEnergy::Unavailable { .. } => None,
        }
    }

    /// Joules per token of `tokens`, when measured (and `tokens > 0`).
    pub fn joules_per_token(&self, tokens: usize) -> Option<f64> {
        self.joules().filter(|_| tokens > 0).map(|j| j / tokens as f64)
    }

    /// For a progress line, to three significant digits: `3.25 J/step 1.56 mJ/tok`, or
    /// `energy n/a`.
    pub fn short(&self, tokens: usize) -> String {
        match (self.joules(), self.joules_per_token(tokens)) {
            (Some(j), Some(per)) => format!("{} J/step {} mJ/tok", sig3(j), sig3(per * 1e3)),
            (Some(j), None) => format!("{} J/step", sig3(j)),
            _ => "energy n/a".into(),
        }
    }
}

/// `x` to three significant digits (no exponent).
fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// Integrates the samples of one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Integrator {
    samples: Vec<Sample>,
}

impl Integrator {
    /// An integrator without samples.
    pub fn new() -> Integrator {
        Integrator::default()
    }

    /// Adds a sample (in any order: they are sorted by time when integrated).
    pub fn push(&mut self, sample: Sample) {
        self.samples.push(sample);
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The energy between the first and the last sample (see the module documentation).
    pub fn energy(&self) -> StepEnergy {
        let unavailable = |reason: String| StepEnergy::Unavailable { reason };
        if self.samples.len() < 2 {
            return unavailable("fewer than two samples".into());
        }
        let mut samples: Vec<&Sample> = self.samples.iter().collect();
        samples.sort_by_key(|s| s.at);
        let mut readings = Vec::with_capacity(samples.len());
        for s in &samples {
            match &s.reading {
                Ok(r) => readings.push((s.at.as_secs_f64(), *r)),
                Err(reason) => return unavailable(reason.clone()),
            }
        }
        let seconds = readings[readings.len() - 1].0 - readings[0].0;
        let pairs = readings.windows(2).map(|w| (w[0], w[1]));
        let power: Option<f64> = pairs
            .clone()
            .map(|((t0, a), (t1, b))| Some((t1 - t0) * (a.watts? + b.watts?) / 2.0))
            .sum();
        let measured = |joules, method| StepEnergy::Measured {
            joules,
            seconds,
            method,
            samples: readings.len(),
        };
        if let Some(joules) = power {
            return measured(joules, Method::Power);
        }
        let charge: Option<f64> = pairs
            .map(|((_, a), (_, b))| {
                let out_uah = (a.charge_uah? - b.charge_uah?).unsigned_abs() as f64;
                Some(out_uah * COULOMBS_PER_UAH * (a.volts? + b.volts?) / 2.0)
            })
            .sum();
        match charge {
            Some(joules) => measured(joules, Method::ChargeCounter),
            None => unavailable(
                "neither the battery's power (power_now, or voltage_now and current_now) nor \
                 voltage_now and charge_counter are readable"
                    .into(),
            ),
        }
    }
}

/// Shared between the meter and its sampler thread.
struct Shared {
    reader: Arc<DeviceReader>,
    clock: Arc<dyn Clock>,
    /// The step's samples, and whether a step is being measured.
    state: Mutex<(Integrator, bool)>,
    /// Bumped at every step's start, so a late sample of the last step is dropped.
    generation: AtomicU64,
    quit: AtomicBool,
    wake: Condvar,
}

impl Shared {
    fn read(&self) -> Sample {
        let reading = self.reader.read(false).battery_reading();
        Sample { at: self.clock.now(), reading }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Integrator, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Measures the energy of each step: [`EnergyMeter::begin`] before it,
/// [`EnergyMeter::finish`] after it.
pub struct EnergyMeter {
    shared: Arc<Shared>,
    sampler: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EnergyMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyMeter").field("sampler", &self.sampler.is_some()).finish()
    }
}

impl EnergyMeter {
    /// A meter reading through `reader` at `clock`'s times; with `sample_every`, a background
    /// thread also samples that often during a step (it sleeps on the real clock; the sample
    /// times come from `clock`).
    pub fn new(
        reader: Arc<DeviceReader>,
        clock: Arc<dyn Clock>,
        sample_every: Option<Duration>,
    ) -> EnergyMeter {
        let shared = Arc::new(Shared {
            reader,
            clock,
            state: Mutex::new((Integrator::new(), false)),
            generation: AtomicU64::new(0),
            quit: AtomicBool::new(false),
            wake: Condvar::new(),
        });
        let sampler = sample_every.map(|every| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("mft-energy".into())
                .spawn(move || sample_loop(&shared, every))
                .expect("the energy sampler thread starts")
        });
        EnergyMeter { shared, sampler }
    }

    /// Starts measuring a step: forgets earlier samples and takes the first.
    pub fn begin(&self) {
        let first = self.shared.read();
        let mut state = self.shared.lock();
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        state.0.clear();
        state.0.push(first);
        state.1 = true;
        self.shared.wake.notify_all();
    }

    /// Takes a sample now (the sampler thread calls this; tests may too). Outside a step it
    /// does nothing.
    pub fn sample(&self) {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        take_sample(&self.shared, generation);
    }

    /// Ends the step: takes the last sample and integrates.
    pub fn finish(&self) -> StepEnergy {
        let last = self.shared.read();
        let mut state = self.shared.lock();
        state.1 = false;
        state.0.push(last);
        state.0.energy()
    }
}

impl Drop for EnergyMeter {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::SeqCst);
        {
            let _state = self.shared.lock();
            self.shared.wake.notify_all();
        }
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// Adds a sample to the step of `generation`, if that step is still being measured.
fn take_sample(shared: &Shared, generation: u64) {
    let sample = shared.read();
    let mut state = shared.lock();
    if state.1 && shared.generation.load(Ordering::SeqCst) == generation {
        state.0.push(sample);
    }
}

/// The sampler thread: every `every` during a step, a sample; idle between steps.
fn sample_loop(shared: &Shared, every: Duration) {
    loop {
        let generation = {
            let mut state = shared.lock();
            while !state.1 && !shared.quit.load(Ordering::SeqCst) {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if shared.quit.load(Ordering::SeqCst) {
                return;
            }
            let generation = shared.generation.load(Ordering::SeqCst);
            let (state, _) =
                shared.wake.wait_timeout(state, every).unwrap_or_else(|e| e.into_inner());
            if shared.quit.load(Ordering::SeqCst) {
                return;
            }
            if !state.1 {
                continue;
            }
            generation
        };
        take_sample(shared, generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, reading: Result<BatteryReading, String>) -> Sample {
        Sample { at: Duration::from_millis(ms), reading }
    }

    fn watts(w: f64) -> Result<BatteryReading, String> {
        Ok(BatteryReading { watts: Some(w), volts: None, charge_uah: None })
    }

    #[test]
    fn trapezoids_of_power() {
        let mut i = Integrator::new();
        // 2 W for 0.5 s, then rising linearly to 4 W over 0.25 s: 1 J + 0.75 J.
        for s in [at(250, watts(2.0)), at(0, watts(2.0)), at(500, watts(2.0)), at(750, watts(4.0))]
        {
            i.push(s);
        }
        assert_eq!(
            i.energy(),
            StepEnergy::Measured { joules: 1.75, seconds: 0.75, method: Method::Power, samples: 4 }
        );
    }

    #[test]
    fn charge_counter_when_there_is_no_power() {
        let mut i = Integrator::new();
        let r = |uah, v| Ok(BatteryReading { watts: None, volts: Some(v), charge_uah: Some(uah) });
        // 1000 µAh = 3.6 C out at a mean 4 V: 14.4 J; then 500 µAh at 3.5 V: 6.3 J.
        i.push(at(0, r(10_000, 4.0)));
        i.push(at(1000, r(9_000, 4.0)));
        i.push(at(2000, r(8_500, 3.0)));
        let StepEnergy::Measured { joules, method, .. } = i.energy() else { panic!() };
        assert_eq!(method, Method::ChargeCounter);
        assert!((joules - (14.4 + 6.3)).abs() < 1e-12, "{joules}");
    }

    #[test]
    fn one_unavailable_sample_makes_the_step_unavailable() {
        let mut i = Integrator::new();
        i.push(at(0, watts(2.0)));
        i.push(at(100, Err("on external power".into())));
        i.push(at(200, watts(2.0)));
        assert_eq!(i.energy(), StepEnergy::Unavailable { reason: "on external power".into() });
        assert_eq!(i.energy().short(10), "energy n/a");
        assert_eq!(sig3(0.032059), "0.0321");
        assert_eq!(sig3(125.0), "125");
        assert_eq!(sig3(3.25), "3.25");
        let mut one = Integrator::new();
        one.push(at(0, watts(1.0)));
        assert!(matches!(one.energy(), StepEnergy::Unavailable { .. }));
    }
}
