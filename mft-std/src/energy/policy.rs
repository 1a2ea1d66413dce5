//! When training may run, and on how many threads: the [`Policy`] (what the user asked for)
//! and the [`Scheduler`] that turns device states into [`Decision`]s, each with its reason.
//!
//! The rules, checked before every step:
//! - **quiet hours** (`HH:MM-HH:MM`, at a fixed UTC offset; may span midnight): pause inside;
//! - **minimum battery**: on battery power below `min_battery` percent, pause; once paused, a
//!   charger resumes at once, the battery alone only at `min_battery + 2` (readings bounce up
//!   by a point when the load stops; the margin keeps that from flapping);
//! - **charging only**: pause unless on external power;
//! - **thermal limit**, on the hottest sensor chosen: at `limit` and above, train on fewer
//!   threads (`throttle_threads`, half by default); at `pause` and above, pause. Both hold
//!   until the temperature is back at `resume` or below (hysteresis); a paused run that has
//!   cooled below `limit` but not to `resume` continues throttled.
//!
//! A rule whose input cannot be read (no battery capacity, no readable sensor, no way to tell
//! the power source) is not enforced; the decision's reason says so. A machine without a
//! battery counts as on external power.

use super::sysfs::{DeviceState, PowerSource};

/// Points above `min_battery` the battery alone must reach to resume a battery pause.
pub const BATTERY_RESUME_MARGIN: i64 = 2;

/// The thermal rule (temperatures in °C).
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalPolicy {
    /// At or above it, train on `throttle_threads`.
    pub limit_c: f64,
    /// At or above it, pause (≥ `limit_c`).
    pub pause_c: f64,
    /// Back at or below it, all threads again (< `limit_c`).
    pub resume_c: f64,
    /// Threads while throttled; `None`: half of all, at least one.
    pub throttle_threads: Option<usize>,
    /// The sensors that count: thermal-zone `type`s and battery names; empty: all.
    pub sensors: Vec<String>,
}

/// Daily hours without training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Start, minutes after midnight (local at `utc_offset_minutes`).
    pub start: u16,
    /// End (exclusive), minutes after midnight; before `start` when the span crosses midnight.
    pub end: u16,
    /// The offset of the local time from UTC, minutes.
    pub utc_offset_minutes: i32,
}

impl QuietHours {
    /// Minutes after local midnight at `unix_seconds`.
    pub fn minute_of_day(&self, unix_seconds: u64) -> u16 {
        let local = unix_seconds as i64 + i64::from(self.utc_offset_minutes) * 60;
        (local.rem_euclid(86_400) / 60) as u16
    }

    /// Whether `unix_seconds` falls inside.
    pub fn contains(&self, unix_seconds: u64) -> bool {
        let m = self.minute_of_day(unix_seconds);
        if self.start <= self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl std::fmt::Display for QuietHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let o = self.utc_offset_minutes;
        let sign = if o < 0 { '-' } else { '+' };
        let o = o.unsigned_abs();
        write!(f, "{}-{} UTC{sign}{:02}:{:02}", hm(self.start), hm(self.end), o / 60, o % 60)
    }
}

/// What the user asked for. The default asks for nothing: training always runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Pause on battery below this percentage.
    pub min_battery: Option<i64>,
    /// Pause unless on external power.
    pub charging_only: bool,
    /// Throttle and pause when hot.
    pub thermal: Option<ThermalPolicy>,
    /// Pause during these hours.
    pub quiet_hours: Option<QuietHours>,
}

impl Policy {
    /// Whether any rule is set.
    pub fn is_active(&self) -> bool {
        self.min_battery.is_some()
            || self.charging_only
            || self.thermal.is_some()
            || self.quiet_hours.is_some()
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Train the next step on this many threads.
    Run {
        /// Threads.
        threads: usize,
    },
    /// Do not train now.
    Pause,
}

/// A decision, the reason for it, and the state it was taken in.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Why, in words (every rule that acted, `; `-separated).
    pub reason: String,
    /// Whether it differs from the previous decision (its action, or the rules behind it).
    pub changed: bool,
    /// The lowest battery level, percent.
    pub battery_percent: Option<i64>,
    /// Where the power comes from.
    pub power: PowerSource,
    /// The hottest counted sensor (when there is a thermal rule): name and °C.
    pub hottest: Option<(String, f64)>,
}

/// Why a decision is what it is; decisions with the same action and causes are the same
/// decision (their reasons differ only in the readings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Quiet,
    Battery,
    ChargingOnly,
    ThermalPause,
    ThermalThrottle,
    Unenforced(&'static str),
}

/// The thermal state, with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heat {
    Normal,
    Throttled,
    Paused,
}

/// Turns device states into decisions, remembering what hysteresis needs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    policy: Policy,
    max_threads: usize,
    heat: Heat,
    battery_paused: bool,
    last: Option<(Action, Vec<Cause>)>,
}

impl Scheduler {
    /// A scheduler of `policy` for a run of `max_threads` threads.
    pub fn new(policy: Policy, max_threads: usize) -> Scheduler {
        Scheduler {
            policy,
            max_threads: max_threads.max(1),
            heat: Heat::Normal,
            battery_paused: false,
            last: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Threads while throttled.
    pub fn throttle_threads(&self) -> usize {
        let asked = self.policy.thermal.as_ref().and_then(|t| t.throttle_threads);
        asked.unwrap_or(self.max_threads / 2).clamp(1, self.max_threads)
    }

    /// The decision for `state` at wall-clock `unix_seconds`.
    pub fn decide(&mut self, state: &DeviceState, unix_seconds: u64) -> Decision {
        let mut causes = Vec::new();
        let mut reasons = Vec::new();
        let power = state.power_source();
        let percent = state.battery_percent();
        let thermal = self.policy.thermal.clone();
        let hottest = thermal.as_ref().and_then(|t| state.hottest(&t.sensors));

        if let Some(quiet) = self.policy.quiet_hours
            && quiet.contains(unix_seconds)
        {
            let m = quiet.minute_of_day(unix_seconds);
            causes.push(Cause::Quiet);
            reasons.push(format!("quiet hours {quiet} (now {:02}:{:02})", m / 60, m % 60));
        }

        if let Some(min) = self.policy.min_battery {
            match (power, percent) {
                (PowerSource::External, _) => self.battery_paused = false,
                (_, None) => {
                    self.battery_paused = false;
                    causes.push(Cause::Unenforced("min_battery"));
                    reasons.push("minimum battery not enforced: no readable capacity".into());
                }
                (_, Some(p)) => {
                    let resume_at = min + BATTERY_RESUME_MARGIN;
                    let unknown = if power == PowerSource::Unknown {
                        ", charging state unknown"
                    } else {
                        ", not charging"
                    };
                    if p < min {
                        self.battery_paused = true;
                        reasons.push(format!("battery {p}% below the minimum {min}%{unknown}"));
                    } else if self.battery_paused && p < resume_at {
                        reasons.push(format!(
                            "battery {p}% not back to {resume_at}% (minimum {min}% + \
                             {BATTERY_RESUME_MARGIN}){unknown}"
                        ));
                    } else {
                        self.battery_paused = false;
                    }
                    if self.battery_paused {
                        causes.push(Cause::Battery);
                    }
                }
            }
        }

        if self.policy.charging_only {
            match power {
                PowerSource::External => {}
                PowerSource::Battery => {
                    causes.push(Cause::ChargingOnly);
                    reasons.push("charging only, and the device runs on its battery".into());
                }
                PowerSource::Unknown => {
                    causes.push(Cause::Unenforced("charging_only"));
                    reasons.push(
                        "charging-only not enforced: the charging state is unreadable".into(),
                    );
                }
            }
        }

        let before = self.heat;
        if let Some(t) = &thermal {
            match &hottest {
                None => {
                    self.heat = Heat::Normal;
                    causes.push(Cause::Unenforced("thermal"));
                    reasons.push("thermal limit not enforced: no readable temperature".into());
                }
                Some((sensor, c)) => {
                    let c = *c;
                    self.heat = match self.heat {
                        _ if c >= t.pause_c => Heat::Paused,
                        _ if c <= t.resume_c => Heat::Normal,
                        Heat::Paused if c >= t.limit_c => Heat::Paused,
                        Heat::Normal if c < t.limit_c => Heat::Normal,
                        _ => Heat::Throttled,
                    };
                    let at = format!("{c:.1} °C ({sensor})");
                    match self.heat {
                        Heat::Paused => {
                            causes.push(Cause::ThermalPause);
                            reasons.push(if c >= t.pause_c {
                                format!(
                                    "temperature {at} at or above the pause level {:.1} °C",
                                    t.pause_c
                                )
                            } else {
                                format!(
                                    "temperature {at} not yet below the limit {:.1} °C",
                                    t.limit_c
                                )
                            });
                        }
                        Heat::Throttled => {
                            causes.push(Cause::ThermalThrottle);
                            let threads = self.throttle_threads();
                            reasons.push(if c >= t.limit_c {
                                format!(
                                    "temperature {at} at or above the limit {:.1} °C: {threads} \
                                     of {} threads",
                                    t.limit_c, self.max_threads
                                )
                            } else {
                                format!(
                                    "temperature {at} not yet down to {:.1} °C: {threads} of {} \
                                     threads",
                                    t.resume_c, self.max_threads
                                )
                            });
                        }
                        Heat::Normal if before != Heat::Normal => reasons.push(format!(
                            "temperature {at} at or below {:.1} °C: all {} threads",
                            t.resume_c, self.max_threads
                        )),
                        Heat::Normal => {}
                    }
                }
            }
        }

        let pause = causes.iter().any(|c| {
            matches!(c, Cause::Quiet | Cause::Battery | Cause::ChargingOnly | Cause::ThermalPause)
        });
        let action = if pause {
            Action::Pause
        } else if self.heat == Heat::Throttled {
            Action::Run { threads: self.throttle_threads() }
        } else {
            Action::Run { threads: self.max_threads }
        };
        let summary = summary(percent, power, hottest.as_ref());
        let reason = if reasons.is_empty() {
            format!("conditions allow training ({summary})")
        } else {
            format!("{} ({summary})", reasons.join("; "))
        };
        let key = (action, causes);
        let changed = self.last.as_ref() != Some(&key);
        self.last = Some(key);
        Decision { action, reason, changed, battery_percent: percent, power, hottest }
    }
}

/// `battery 80%, on external power, hottest 41.0 °C (cpu)`: what was read.
fn summary(percent: Option<i64>, power: PowerSource, hottest: Option<&(String, f64)>) -> String {
    let mut parts = Vec::new();
    if let Some(p) = percent {
        parts.push(format!("battery {p}%"));
    }
    parts.push(match power {
        PowerSource::External => "on external power".to_string(),
        PowerSource::Battery => "on battery".to_string(),
        PowerSource::Unknown => "power source unknown".to_string(),
    });
    if let Some((sensor, c)) = hottest {
        parts.push(format!("hottest {c:.1} °C ({sensor})"));
    }
    parts.join(", ")
}
