//! Energy- and thermal-aware training: read the device's battery and temperatures from sysfs,
//! decide before every step whether to train (and on how many threads), pause with a
//! resumable checkpoint, and measure the energy each step draws from the battery.
//!
//! - [`sysfs`]: [`DeviceReader`] reads `ROOT/sys/class/power_supply/*` and
//!   `ROOT/sys/class/thermal/thermal_zone*` into a [`DeviceState`]; missing or unreadable
//!   nodes are tolerated and noted once.
//! - [`policy`]: the [`Policy`] (minimum battery unless charging, charging only, a thermal
//!   limit that first throttles then pauses, with hysteresis, quiet hours) and the
//!   [`Scheduler`] that turns states into [`Decision`]s with their reasons.
//! - [`meter`]: [`EnergyMeter`] integrates the battery's power over each step (samples at the
//!   start, the end, and every 200 ms between on a background thread; trapezoid rule), or the
//!   charge counter times the voltage; otherwise the step's energy is
//!   [`StepEnergy::Unavailable`] with the reason — never an estimate.
//! - [`options`]: the settings from `mft finetune`'s flags and a JSON policy file.
//! - [`session`]: [`EnergySession`], what the step loop calls; [`clock`]: the injectable time.
//!
//! Energy is only measured while the device runs on its battery: on a charger the battery's
//! flow is the charger's current minus the device's, which sysfs cannot separate, so those
//! steps report "unavailable" with that reason. `current_now`'s sign differs between devices
//! (negative while discharging on many Android kernels, positive on laptops); its magnitude is
//! used once the power source is known to be the battery.
//!
//! Thread changes (throttling) change the order of some floating-point sums (per-thread
//! partial sums), so a throttled run can differ in the last bits from one that was not
//! throttled. Pausing changes nothing: a paused run that resumes — waiting in the process, or
//! exiting and `--resume` — ends bit-identical to the uninterrupted run on the same threads.

pub mod clock;
pub mod meter;
pub mod options;
pub mod policy;
pub mod session;
pub mod sysfs;

pub use clock::{Clock, ManualClock, SystemClock};
pub use meter::{EnergyMeter, Integrator, Method, Sample, StepEnergy};
pub use options::{EnergyFlags, EnergyOptions, OnPause};
pub use policy::{Action, Decision, Policy, QuietHours, Scheduler, ThermalPolicy};
pub use session::{EnergySession, Gate};
pub use sysfs::{BatteryReading, DeviceReader, DeviceState, PowerSource, PowerSupply, ThermalZone};

/// The exit code of `mft finetune` when the policy paused the run with `--on-pause exit`
/// (sysexits' `EX_TEMPFAIL`: try again later, with `--resume`).
pub const PAUSED_EXIT_CODE: u8 = 75;
