//! The device's power and thermal state, read from Linux (and Android) sysfs under a root
//! directory that tests point at a fake tree:
//!
//! - `ROOT/sys/class/power_supply/<name>/`: `type` (`Battery`, `Mains`, `USB`, `Wireless`, …),
//!   `online` (0/1, chargers), `status` (`Charging`, `Discharging`, `Full`, `Not charging`),
//!   `capacity` (%), `voltage_now` (µV), `current_now` (µA), `power_now` (µW, some laptops),
//!   `charge_counter` (µAh, Android), `temp` (tenths of °C);
//! - `ROOT/sys/class/thermal/thermal_zone<N>/`: `type` (the sensor's name) and `temp` (m°C).
//!
//! Nothing here is required: a node that is missing or cannot be read (Android apps are often
//! denied some) reads as `None`, and the reader notes it once (see
//! [`DeviceReader::take_notes`]), never again for the same file. The units are the kernel's
//! ABI; a device that reports other units (some report mA for `current_now`) is read wrongly,
//! as every tool that trusts the ABI does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temperatures outside this range (°C) are sensor faults (unplugged probes read −273 °C or
/// 0 m°C on some boards), not heat: they are ignored and noted.
const PLAUSIBLE_C: std::ops::RangeInclusive<f64> = -40.0..=150.0;

/// One entry of `/sys/class/power_supply`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PowerSupply {
    /// The directory's name (`battery`, `BAT0`, `usb`, `ac`, …).
    pub name: String,
    /// `type`.
    pub kind: Option<String>,
    /// `online`: whether a charger supplies power.
    pub online: Option<bool>,
    /// `status`.
    pub status: Option<String>,
    /// `capacity`, percent.
    pub capacity: Option<i64>,
    /// `voltage_now`, µV.
    pub voltage_uv: Option<i64>,
    /// `current_now`, µA (sign convention varies by device; see [`DeviceState::battery_reading`]).
    pub current_ua: Option<i64>,
    /// `power_now`, µW.
    pub power_uw: Option<i64>,
    /// `charge_counter`, µAh.
    pub charge_counter_uah: Option<i64>,
    /// `temp`, °C (sysfs holds tenths).
    pub temp_c: Option<f64>,
}

impl PowerSupply {
    /// Whether this is a battery: its `type` says so, or (no `type`) it has a capacity.
    pub fn is_battery(&self) -> bool {
        match &self.kind {
            Some(kind) => kind == "Battery",
            None => self.capacity.is_some(),
        }
    }
}

/// One `/sys/class/thermal/thermal_zone<N>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThermalZone {
    /// The directory's name (`thermal_zone3`).
    pub name: String,
    /// `type`: the sensor (`cpu-thermal`, `x86_pkg_temp`, `battery`, …).
    pub kind: Option<String>,
    /// `temp`, °C (sysfs holds m°C).
    pub temp_c: Option<f64>,
}

/// Where the device's power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerSource {
    /// A charger (or there is no battery at all: mains-powered).
    External,
    /// The battery, with no charger.
    Battery,
    /// The readable nodes do not tell.
    Unknown,
}

impl PowerSource {
    /// `external`, `battery` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            PowerSource::External => "external",
            PowerSource::Battery => "battery",
            PowerSource::Unknown => "unknown",
        }
    }
}

/// What the battery delivers at one instant, for the energy meter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatteryReading {
    /// Power drawn from the batteries, W (`power_now`, or `voltage_now` × |`current_now`|),
    /// when readable for every battery.
    pub watts: Option<f64>,
    /// Voltage, V (the mean over batteries), when readable.
    pub volts: Option<f64>,
    /// Sum of `charge_counter`, µAh, when readable for every battery.
    pub charge_uah: Option<i64>,
}

/// A snapshot of the device's power supplies and thermal zones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    /// Every power supply, in name order.
    pub supplies: Vec<PowerSupply>,
    /// Every thermal zone read (none when thermal zones were not asked for), in name order.
    pub zones: Vec<ThermalZone>,
}

impl DeviceState {
    /// The batteries.
    pub fn batteries(&self) -> impl Iterator<Item = &PowerSupply> {
        self.supplies.iter().filter(|s| s.is_battery())
    }

    /// The lowest battery capacity, percent; `None` without a readable one.
    pub fn battery_percent(&self) -> Option<i64> {
        self.batteries().filter_map(|b| b.capacity).min()
    }

    /// Where the power comes from: a charger that is online, or a battery charging or full,
    /// means external power; a battery discharging (or every charger offline) means battery;
    /// no battery at all means mains power (a desktop, a board on a supply).
    pub fn power_source(&self) -> PowerSource {
        let chargers: Vec<&PowerSupply> =
            self.supplies.iter().filter(|s| !s.is_battery()).collect();
        if self.batteries().next().is_none() {
            return PowerSource::External;
        }
        if chargers.iter().any(|c| c.online == Some(true)) {
            return PowerSource::External;
        }
        let statuses: Vec<&str> = self.batteries().filter_map(|b| b.status.as_deref()).collect();
        if statuses.iter().any(|s| *s == "Charging" || *s == "Full") {
            return PowerSource::External;
        }
        if statuses.contains(&"Discharging")
            || (!chargers.is_empty() && chargers.iter().all(|c| c.online == Some(false)))
        {
            return PowerSource::Battery;
        }
        PowerSource::Unknown
    }

    /// The hottest plausible sensor, `(name, °C)`: the thermal zones whose `type` is in
    /// `sensors` and the batteries whose name is (every one of both when `sensors` is empty).
    pub fn hottest(&self, sensors: &[String]) -> Option<(String, f64)> {
        let wanted = |name: &str| sensors.is_empty() || sensors.iter().any(|s| s == name);
        let zones = self.zones.iter().filter_map(|z| {
            let kind = z.kind.as_deref().unwrap_or(&z.name);
            (wanted(kind)).then_some((kind.to_string(), z.temp_c?))
        });
        let batteries =
            self.batteries().filter_map(|b| wanted(&b.name).then_some((b.name.clone(), b.temp_c?)));
        zones.chain(batteries).fold(None, |best: Option<(String, f64)>, (name, t)| match best {
            Some((_, b)) if b >= t => best,
            _ => Some((name, t)),
        })
    }

    /// What the batteries deliver now, for measuring energy; `Err` says why it cannot be
    /// measured.
    ///
    /// The battery's own flow is the device's consumption only while the device runs on it:
    /// on external power the charger feeds the device and the battery, and nothing readable
    /// here separates the two, so energy is unavailable then (and when the power source is
    /// unknown). While discharging, `current_now` is taken as a magnitude, because its sign
    /// differs between devices (many Android kernels report discharge as negative, laptops
    /// as positive).
    ///
    /// # Errors
    /// A message naming the reason: no battery, external or unknown power, no readable node.
    pub fn battery_reading(&self) -> Result<BatteryReading, String> {
        let batteries: Vec<&PowerSupply> = self.batteries().collect();
        if batteries.is_empty() {
            return Err("no battery (energy is read from the battery)".into());
        }
        match self.power_source() {
            PowerSource::Battery => {}
            PowerSource::External => {
                return Err("on external power: the battery's flow is not the device's \
                            consumption"
                    .into());
            }
            PowerSource::Unknown => {
                return Err("cannot tell whether the device runs on its battery".into());
            }
        }
        let watts: Option<f64> = batteries
            .iter()
            .map(|b| match (b.power_uw, b.voltage_uv, b.current_ua) {
                (Some(p), _, _) => Some(p.unsigned_abs() as f64 / 1e6),
                (None, Some(v), Some(i)) => {
                    Some(v.unsigned_abs() as f64 * i.unsigned_abs() as f64 / 1e12)
                }
                _ => None,
            })
            .sum();
        let volts: Option<Vec<f64>> =
            batteries.iter().map(|b| b.voltage_uv.map(|v| v as f64 / 1e6)).collect();
        let volts = volts.map(|v| v.iter().sum::<f64>() / v.len() as f64);
        let charge_uah = batteries.iter().map(|b| b.charge_counter_uah).sum();
        Ok(BatteryReading { watts, volts, charge_uah })
    }
}

/// Reads [`DeviceState`]s under a root directory, noting each missing or unreadable node once.
#[derive(Debug)]
pub struct DeviceReader {
    root: PathBuf,
    noted: Mutex<Notes>,
}

#[derive(Debug, Default)]
struct Notes {
    /// Files (or directories) already noted.
    seen: BTreeSet<PathBuf>,
    /// Lines not yet taken.
    pending: Vec<String>,
}

impl DeviceReader {
    /// A reader of `root/sys/class/…` (`root` is `/` on a device).
    pub fn new(root: impl Into<PathBuf>) -> DeviceReader {
        DeviceReader { root: root.into(), noted: Mutex::new(Notes::default()) }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The power supplies, and the thermal zones when `thermal` is set.
    pub fn read(&self, thermal: bool) -> DeviceState {
        let mut problems = Vec::new();
        let supplies_dir = self.root.join("sys/class/power_supply");
        let supplies = entries(&supplies_dir, "", &mut problems)
            .into_iter()
            .map(|(name, dir)| read_supply(name, &dir, &mut problems))
            .collect();
        let zones = if thermal {
            let dir = self.root.join("sys/class/thermal");
            entries(&dir, "thermal_zone", &mut problems)
                .into_iter()
                .map(|(name, dir)| read_zone(name, &dir, &mut problems))
                .collect()
        } else {
            Vec::new()
        };
        self.note(problems);
        DeviceState { supplies, zones }
    }

    /// The lines noted since the last call: each names a directory and its missing or
    /// unreadable nodes, once per node for the reader's life.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.noted.lock().unwrap_or_else(|e| e.into_inner()).pending)
    }

    /// Records the problems not seen before, one line per directory.
    fn note(&self, problems: Vec<Problem>) {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_dir: Vec<(PathBuf, Vec<String>)> = Vec::new();
        for p in problems {
            let key = match &p.node {
                Some(node) => p.dir.join(node),
                None => p.dir.clone(),
            };
            if !noted.seen.insert(key) {
                continue;
            }
            let what = match &p.node {
                Some(node) => format!("{node} {}", p.what),
                None => p.what,
            };
            match by_dir.iter_mut().find(|(d, _)| *d == p.dir) {
                Some((_, list)) => list.push(what),
                None => by_dir.push((p.dir, vec![what])),
            }
        }
        for (dir, list) in by_dir {
            noted.pending.push(format!("{}: {}", dir.display(), list.join(", ")));
        }
    }
}

/// A node (or, `node: None`, a directory) that could not be used.
struct Problem {
    dir: PathBuf,
    node: Option<String>,
    what: String,
}

type Problems = Vec<Problem>;

/// The subdirectories of `dir` whose names start with `prefix`, sorted; a missing or empty
/// `dir` is a problem.
fn entries(dir: &Path, prefix: &str, problems: &mut Problems) -> Vec<(String, PathBuf)> {
    let dir_problem = |what: String| Problem { dir: dir.to_path_buf(), node: None, what };
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) => {
            problems.push(dir_problem(format!("not readable ({e})")));
            return Vec::new();
        }
    };
    let mut found: Vec<(String, PathBuf)> = listing
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name.starts_with(prefix))
        .collect();
    found.sort();
    if found.is_empty() {
        let what = if prefix.is_empty() { "power supply" } else { "thermal zone" };
        problems.push(dir_problem(format!("no {what} here")));
    }
    found
}

fn read_supply(name: String, dir: &Path, problems: &mut Problems) -> PowerSupply {
    let kind = text(dir, "type", true, problems);
    let mut supply = PowerSupply { name, kind, ..PowerSupply::default() };
    // Which nodes matter (and are noted when missing) depends on the kind.
    let battery = match &supply.kind {
        Some(kind) => kind == "Battery",
        None => dir.join("capacity").exists(),
    };
    if battery {
        supply.status = text(dir, "status", true, problems);
        supply.capacity = int(dir, "capacity", true, problems);
        supply.voltage_uv = int(dir, "voltage_now", true, problems);
        // power_now stands in for current_now on some laptops; charge_counter is Android's.
        supply.power_uw = int(dir, "power_now", false, problems);
        supply.current_ua = int(dir, "current_now", supply.power_uw.is_none(), problems);
        supply.charge_counter_uah = int(dir, "charge_counter", false, problems);
        let temp = int(dir, "temp", false, problems).map(|t| t as f64 / 10.0);
        supply.temp_c = temp.and_then(|t| plausible(dir, "temp", t, problems));
    } else {
        supply.online = int(dir, "online", true, problems).map(|v| v != 0);
    }
    supply
}

fn read_zone(name: String, dir: &Path, problems: &mut Problems) -> ThermalZone {
    let kind = text(dir, "type", true, problems);
    let temp = int(dir, "temp", true, problems).map(|t| t as f64 / 1000.0);
    let temp_c = temp.and_then(|t| plausible(dir, "temp", t, problems));
    ThermalZone { name, kind, temp_c }
}

/// `dir/node`'s trimmed text; a missing file is a problem only when `needed`, an unreadable
/// one always.
fn text(dir: &Path, node: &str, needed: bool, problems: &mut Problems) -> Option<String> {
    let problem = |what: String| Problem { dir: dir.to_path_buf(), node: Some(node.into()), what };
    match std::fs::read_to_string(dir.join(node)) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if needed {
                problems.push(problem("missing".into()));
            }
            None
        }
        Err(e) => {
            problems.push(problem(format!("unreadable ({e})")));
            None
        }
    }
}

/// `dir/node` as an integer (as [`text`]); other text is a problem.
fn int(dir: &Path, node: &str, needed: bool, problems: &mut Problems) -> Option<i64> {
    let text = text(dir, node, needed, problems)?;
    match text.parse::<i64>() {
        Ok(v) => Some(v),
        Err(_) => {
            let what = format!("unreadable (not an integer: {text:?})");
            problems.push(Problem { dir: dir.to_path_buf(), node: Some(node.into()), what });
            None
        }
    }
}

/// `celsius` when it is a plausible temperature; otherwise a problem and `None`.
fn plausible(dir: &Path, node: &str, celsius: f64, problems: &mut Problems) -> Option<f64> {
    if PLAUSIBLE_C.contains(&celsius) {
        return Some(celsius);
    }
    let what = format!("ignored (implausible {celsius} °C)");
    problems.push(Problem { dir: dir.to_path_buf(), node: Some(node.into()), what });
    None
}
