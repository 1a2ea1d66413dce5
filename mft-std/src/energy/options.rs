//! The energy settings of a run ([`EnergyOptions`]), from `mft finetune`'s flags and an
//! optional JSON policy file ([`EnergyFlags::resolve`]); a flag overrides the file's field.
//!
//! The policy file is one JSON object; every field is optional, and an unknown field is an
//! error (a misspelt rule must not be silently ignored):
//!
//! ```json
//! {
//!   "power_root": "/",
//!   "min_battery": 30,
//!   "charging_only": false,
//!   "thermal_limit": 45,
//!   "thermal_pause": 50,
//!   "thermal_resume": 40,
//!   "thermal_threads": 1,
//!   "thermal_sensors": ["cpu-thermal", "battery"],
//!   "quiet_hours": "22:30-07:00",
//!   "utc_offset": "+02:00",
//!   "on_pause": "wait",
//!   "pause_poll": 30
//! }
//! ```
//!
//! Numbers may also be given as strings (`"45"`); a relative `power_root` is taken from the
//! working directory. A bad value is one error naming the flag
//! (`--min-battery 150: …`) or the file and field (`policy.json: min_battery: …`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::policy::{Policy, QuietHours, ThermalPolicy};
use crate::error::{Error, Result};

/// Degrees between `--thermal-limit` and the default pause level above it, and the default
/// resume level below it.
pub const THERMAL_MARGIN_C: f64 = 5.0;
/// Seconds between checks while a paused run waits, unless set.
pub const DEFAULT_POLL_SECONDS: f64 = 30.0;
/// How often the energy meter samples during a step.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// What a paused run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPause {
    /// Save a checkpoint, wait (checking every poll interval) and continue when allowed.
    #[default]
    Wait,
    /// Save a checkpoint and the adapter, and exit with [`super::PAUSED_EXIT_CODE`].
    Exit,
}

/// The energy and thermal settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyOptions {
    /// The directory holding `sys/class/…` (`/` on a device; a fake tree in tests).
    pub power_root: PathBuf,
    /// The rules.
    pub policy: Policy,
    /// What a pause does.
    pub on_pause: OnPause,
    /// Time between checks while paused and waiting.
    pub poll: Duration,
    /// The energy meter's sampling interval during a step (`None`: only at its start and end).
    pub sample_every: Option<Duration>,
}

impl Default for EnergyOptions {
    fn default() -> Self {
        EnergyOptions {
            power_root: PathBuf::from("/"),
            policy: Policy::default(),
            on_pause: OnPause::Wait,
            poll: Duration::from_secs_f64(DEFAULT_POLL_SECONDS),
            sample_every: Some(SAMPLE_EVERY),
        }
    }
}

/// The energy flags of `mft finetune` as typed (checked by [`EnergyFlags::resolve`], so that a
/// bad value is reported in one line naming the flag).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyFlags {
    /// `--policy FILE`.
    pub policy: Option<PathBuf>,
    /// `--power-root DIR`.
    pub power_root: Option<PathBuf>,
    /// `--min-battery PCT`.
    pub min_battery: Option<String>,
    /// `--charging-only`.
    pub charging_only: bool,
    /// `--thermal-limit C`.
    pub thermal_limit: Option<String>,
    /// `--thermal-pause C`.
    pub thermal_pause: Option<String>,
    /// `--thermal-resume C`.
    pub thermal_resume: Option<String>,
    /// `--thermal-threads N`.
    pub thermal_threads: Option<String>,
    /// `--thermal-sensors A,B`.
    pub thermal_sensors: Option<String>,
    /// `--quiet-hours HH:MM-HH:MM`.
    pub quiet_hours: Option<String>,
    /// `--utc-offset ±HH:MM`.
    pub utc_offset: Option<String>,
    /// `--on-pause wait|exit`.
    pub on_pause: Option<String>,
    /// `--pause-poll SECONDS`.
    pub pause_poll: Option<String>,
}

/// A value and where it came from (`--flag VALUE` or `file: field`), for errors.
struct Given {
    text: String,
    origin: String,
}

/// The fields a policy file may hold.
const FIELDS: &[&str] = &[
    "power_root",
    "min_battery",
    "charging_only",
    "thermal_limit",
    "thermal_pause",
    "thermal_resume",
    "thermal_threads",
    "thermal_sensors",
    "quiet_hours",
    "utc_offset",
    "on_pause",
    "pause_poll",
];

impl EnergyFlags {
    /// The settings: the policy file's fields (when `--policy` is given), overridden by the
    /// flags that are given, checked.
    ///
    /// # Errors
    /// [`Error::Policy`] naming the flag, or the file and field, and the problem; an
    /// unreadable or malformed policy file ([`Error::Io`], [`Error::Json`]).
    pub fn resolve(&self) -> Result<EnergyOptions> {
        let file = match &self.policy {
            Some(path) => read_policy_file(path)?,
            None => serde_json::Map::new(),
        };
        let path = self.policy.as_deref().unwrap_or(Path::new(""));
        let from_file = |field: &str| -> Result<Option<Given>> {
            let Some(value) = file.get(field) else { return Ok(None) };
            let origin = format!("{}: {field}", path.display());
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Array(items) if field == "thermal_sensors" => {
                    let names: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
                    names
                        .ok_or_else(|| bad(&origin, "expected a list of sensor names (strings)"))?
                        .join(",")
                }
                other => return Err(bad(&origin, &format!("unexpected value {other}"))),
            };
            Ok(Some(Given { text, origin }))
        };
        let pick = |flag: &str, value: &Option<String>, field: &str| -> Result<Option<Given>> {
            match value {
                Some(text) => {
                    Ok(Some(Given { text: text.clone(), origin: format!("{flag} {text}") }))
                }
                None => from_file(field),
            }
        };

        let mut options = EnergyOptions::default();
        if let Some(root) = &self.power_root {
            options.power_root = root.clone();
        } else if let Some(g) = from_file("power_root")? {
            options.power_root = PathBuf::from(g.text);
        }

        let mut policy = Policy::default();
        if let Some(g) = pick("--min-battery", &self.min_battery, "min_battery")? {
            let pct = parse_number(&g, "a battery percentage")?;
            if !(0.0..=100.0).contains(&pct) || pct.fract() != 0.0 {
                return Err(bad(&g.origin, "expected a whole percentage from 0 to 100"));
            }
            policy.min_battery = Some(pct as i64);
        }
        let charging = if self.charging_only {
            Some(Given { text: "true".into(), origin: "--charging-only".into() })
        } else {
            from_file("charging_only")?
        };
        if let Some(g) = charging {
            policy.charging_only = match g.text.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad(&g.origin, "expected true or false")),
            };
        }

        let limit = pick("--thermal-limit", &self.thermal_limit, "thermal_limit")?;
        let pause = pick("--thermal-pause", &self.thermal_pause, "thermal_pause")?;
        let resume = pick("--thermal-resume", &self.thermal_resume, "thermal_resume")?;
        let threads = pick("--thermal-threads", &self.thermal_threads, "thermal_threads")?;
        let sensors = pick("--thermal-sensors", &self.thermal_sensors, "thermal_sensors")?;
        match limit {
            Some(limit) => {
                let limit_c = parse_celsius(&limit)?;
                let pause_c = match &pause {
                    Some(g) => parse_celsius(g)?,
                    None => limit_c + THERMAL_MARGIN_C,
                };
                let resume_c = match &resume {
                    Some(g) => parse_celsius(g)?,
                    None => limit_c - THERMAL_MARGIN_C,
                };
                if let Some(g) = &pause
                    && pause_c < limit_c
                {
                    return Err(bad(
                        &g.origin,
                        &format!("the pause level must not be below the limit {limit_c} °C"),
                    ));
                }
                if let Some(g) = &resume
                    && resume_c >= limit_c
                {
                    return Err(bad(
                        &g.origin,
                        &format!("the resume level must be below the limit {limit_c} °C"),
                    ));
                }
                let throttle_threads = match &threads {
                    Some(g) => {
                        let n = parse_number(g, "a thread count")?;
                        if n < 1.0 || n.fract() != 0.0 {
                            return Err(bad(&g.origin, "expected a whole number of threads ≥ 1"));
                        }
                        Some(n as usize)
                    }
                    None => None,
                };
                let sensors = match sensors {
                    Some(g) => g
                        .text
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                    None => Vec::new(),
                };
                policy.thermal =
                    Some(ThermalPolicy { limit_c, pause_c, resume_c, throttle_threads, sensors });
            }
            None => {
                if let Some(g) = pause.or(resume).or(threads).or(sensors) {
                    return Err(bad(&g.origin, "needs a thermal limit (--thermal-limit)"));
                }
            }
        }

        let offset = pick("--utc-offset", &self.utc_offset, "utc_offset")?;
        let offset_minutes = match &offset {
            Some(g) => parse_offset(&g.text).map_err(|p| bad(&g.origin, &p))?,
            None => 0,
        };
        if let Some(g) = pick("--quiet-hours", &self.quiet_hours, "quiet_hours")? {
            let (start, end) = parse_hours(&g.text).map_err(|p| bad(&g.origin, &p))?;
            policy.quiet_hours =
                Some(QuietHours { start, end, utc_offset_minutes: offset_minutes });
        } else if let Some(g) = offset {
            return Err(bad(&g.origin, "needs quiet hours (--quiet-hours)"));
        }
        options.policy = policy;

        if let Some(g) = pick("--on-pause", &self.on_pause, "on_pause")? {
            options.on_pause = match g.text.as_str() {
                "wait" => OnPause::Wait,
                "exit" => OnPause::Exit,
                _ => return Err(bad(&g.origin, "expected wait or exit")),
            };
        }
        if let Some(g) = pick("--pause-poll", &self.pause_poll, "pause_poll")? {
            let seconds = parse_number(&g, "seconds")?;
            if !(0.001..=86_400.0).contains(&seconds) {
                return Err(bad(&g.origin, "expected seconds from 0.001 to 86400"));
            }
            options.poll = Duration::from_secs_f64(seconds);
        }
        Ok(options)
    }
}

fn bad(origin: &str, problem: &str) -> Error {
    Error::Policy { origin: origin.to_string(), problem: problem.to_string() }
}

/// The policy file as a JSON object of known fields.
fn read_policy_file(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad(&path.display().to_string(), "expected one JSON object of policy fields"));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            &format!("{}: {unknown}", path.display()),
            &format!("unknown field (known: {})", FIELDS.join(", ")),
        ));
    }
    Ok(map)
}

fn parse_number(g: &Given, what: &str) -> Result<f64> {
    g.text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| bad(&g.origin, &format!("expected {what}, a number")))
}

fn parse_celsius(g: &Given) -> Result<f64> {
    let c = parse_number(g, "a temperature in °C")?;
    if !(-40.0..=150.0).contains(&c) {
        return Err(bad(&g.origin, "expected a temperature from -40 to 150 °C"));
    }
    Ok(c)
}

/// `HH:MM` as minutes after midnight.
fn parse_hm(text: &str) -> std::result::Result<u16, String> {
    let problem = || format!("{text:?} is not a time of day HH:MM (00:00 to 23:59)");
    let (h, m) = text.trim().split_once(':').ok_or_else(problem)?;
    let (h, m) =
        (h.parse::<u16>().map_err(|_| problem())?, m.parse::<u16>().map_err(|_| problem())?);
    if h > 23 || m > 59 || text.trim().len() != 5 {
        return Err(problem());
    }
    Ok(h * 60 + m)
}

/// `HH:MM-HH:MM` as (start, end) minutes; the span may cross midnight, and may not be empty.
fn parse_hours(text: &str) -> std::result::Result<(u16, u16), String> {
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| "expected HH:MM-HH:MM (e.g. 22:00-07:00)".to_string())?;
    let (start, end) = (parse_hm(start)?, parse_hm(end)?);
    if start == end {
        return Err("the span is empty (start equals end)".into());
    }
    Ok((start, end))
}

/// `+HH:MM`, `-HH:MM` (or `Z`) as minutes east of UTC.
fn parse_offset(text: &str) -> std::result::Result<i32, String> {
    let problem = || "expected an offset from UTC: +HH:MM or -HH:MM (e.g. +02:00)".to_string();
    if text == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(problem()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(problem)?;
    let (h, m) =
        (h.parse::<i32>().map_err(|_| problem())?, m.parse::<i32>().map_err(|_| problem())?);
    if h > 14 || m > 59 || h < 0 || m < 0 {
        return Err(problem());
    }
    Ok(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_offsets() {
        assert_eq!(parse_hours("22:00-07:30"), Ok((22 * 60, 7 * 60 + 30)));
        assert!(parse_hours("22:00").is_err());
        assert!(parse_hours("24:00-01:00").is_err());
        assert!(parse_hours("7:00-08:00").is_err());
        assert!(parse_hours("08:00-08:00").is_err());
        assert_eq!(parse_offset("+02:00"), Ok(120));
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert_eq!(parse_offset("Z"), Ok(0));
        assert!(parse_offset("0200").is_err());
    }
}
