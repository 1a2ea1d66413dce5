//! The machine `mft-bench` runs on: what the CPU offers (as Linux names its features in
//! `/proc/cpuinfo`, detected at run time), pinning to the profile's cores, peak RSS (VmHWM),
//! and the battery and thermal zones read through `mft_std::energy`'s sysfs reader.
//!
//! What cannot be read is said, never made up: a missing battery or thermal zone gives `null`
//! and the reason.

use std::path::Path;
use std::sync::Arc;

use mft_kernels::{Isa, sve_vector_bits};
use mft_std::energy::{DeviceReader, DeviceState};
use serde_json::{Value, json};

/// The CPU features the kernels (and the device profiles) care about, by their Linux names,
/// as this process detects them.
pub fn features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        let table: [(&str, bool); 12] = [
            ("asimd", has!("neon")),
            ("fphp", has!("fp16")),
            ("asimddp", has!("dotprod")),
            ("asimdrdm", has!("rdm")),
            ("asimdfhm", has!("fhm")),
            ("atomics", has!("lse")),
            ("crc32", has!("crc")),
            ("aes", has!("aes")),
            ("i8mm", has!("i8mm")),
            ("bf16", has!("bf16")),
            ("sve", has!("sve")),
            ("sve2", has!("sve2")),
        ];
        found.extend(table.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let table: [(&str, bool); 5] = [
            ("sse4_2", has!("sse4.2")),
            ("avx", has!("avx")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx512f", has!("avx512f")),
        ];
        found.extend(table.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    found
}

/// `MemTotal` of `/proc/meminfo`, bytes.
fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

/// The `machine` object of the document.
pub fn describe() -> Value {
    json!({
        "arch": std::env::consts::ARCH,
        "os": std::env::consts::OS,
        "isa": Isa::best().name(),
        "isas": Isa::supported().map(Isa::name).collect::<Vec<_>>(),
        "sve_bits": sve_vector_bits(),
        "features": features(),
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "mem_total_bytes": mem_total_bytes(),
    })
}

/// The process's peak resident set (VmHWM), bytes; 0 where `/proc` is not there.
pub fn peak_rss() -> u64 {
    mft_std::progress::peak_rss_bytes()
}

/// Resets VmHWM to the current RSS (`5` into `/proc/self/clear_refs`), so that the next
/// [`peak_rss`] is the peak of what runs from here; false where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Where the process runs.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// The cores asked for (empty: none).
    pub cpus: Vec<usize>,
    /// Whether the process runs on exactly those cores.
    pub applied: bool,
    /// Why pinning failed.
    pub error: Option<String>,
}

impl Pinning {
    /// The `pinning` object of the document.
    pub fn json(&self) -> Value {
        json!({ "cpus": self.cpus, "applied": self.applied, "error": self.error })
    }
}

/// Pins the calling thread, and every thread it starts later, to `cpus`.
pub fn pin(cpus: &[usize]) -> Pinning {
    if cpus.is_empty() {
        return Pinning { cpus: Vec::new(), applied: false, error: None };
    }
    match set_affinity(cpus) {
        Ok(()) => Pinning { cpus: cpus.to_vec(), applied: true, error: None },
        Err(e) => Pinning {
            cpus: cpus.to_vec(),
            applied: false,
            error: Some(format!("could not pin to cores {cpus:?}: {e}")),
        },
    }
}

/// Sets the calling thread's CPU affinity.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn set_affinity(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is a plain bit array for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus {
        if cpu >= capacity {
            return Err(format!("core {cpu} is beyond the {capacity} a CPU set holds"));
        }
        // SAFETY: `cpu` is below the set's capacity (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().to_string()) }
}

/// Sets the calling thread's CPU affinity: not on this OS.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn set_affinity(_cpus: &[usize]) -> Result<(), String> {
    Err("pinning is implemented for Linux and Android only".into())
}

/// The battery and the thermal zones, read through `mft_std::energy`'s sysfs reader.
pub struct Sensors {
    reader: Arc<DeviceReader>,
}

impl Sensors {
    /// A reader of `root/sys` (`/` on a device; a copy or a fake tree for tests).
    pub fn new(root: &Path) -> Sensors {
        Sensors { reader: Arc::new(DeviceReader::new(root)) }
    }

    /// The reader, for energy meters.
    pub fn reader(&self) -> Arc<DeviceReader> {
        Arc::clone(&self.reader)
    }

    /// The batteries, chargers and thermal zones now.
    pub fn snapshot(&self) -> DeviceState {
        self.reader.read(true)
    }

    /// The `battery` object: each battery's readings before and after, the power source, or
    /// `null` readings with the reason.
    pub fn battery_json(&self, before: &DeviceState, after: &DeviceState) -> Value {
        let batteries = |state: &DeviceState| -> Value {
            state
                .batteries()
                .map(|b| {
                    json!({
                        "name": b.name, "status": b.status, "capacity_percent": b.capacity,
                        "voltage_uv": b.voltage_uv, "current_ua": b.current_ua,
                        "power_uw": b.power_uw, "charge_counter_uah": b.charge_counter_uah,
                        "temp_c": b.temp_c,
                    })
                })
                .collect::<Vec<_>>()
                .into()
        };
        let unavailable = if before.batteries().next().is_none() {
            Value::from(format!(
                "no battery under {}",
                self.reader.root().join("sys/class/power_supply").display()
            ))
        } else {
            Value::Null
        };
        json!({
            "power_source": after.power_source().name(),
            "before": batteries(before),
            "after": batteries(after),
            "unavailable": unavailable,
        })
    }

    /// The `thermal` object: every zone before and after, and the hottest of each.
    pub fn thermal_json(&self, before: &DeviceState, after: &DeviceState) -> Value {
        let zones = |state: &DeviceState| -> Value {
            state
                .zones
                .iter()
                .map(|z| json!({ "zone": z.name, "type": z.kind, "temp_c": z.temp_c }))
                .collect::<Vec<_>>()
                .into()
        };
        let hottest = |state: &DeviceState| state.hottest(&[]).map(|(_, t)| t);
        let unavailable = if hottest(before).is_none() {
            Value::from(format!(
                "no readable thermal zone under {}",
                self.reader.root().join("sys/class/thermal").display()
            ))
        } else {
            Value::Null
        };
        json!({
            "before": zones(before),
            "after": zones(after),
            "hottest_before_c": hottest(before),
            "hottest_after_c": hottest(after),
            "unavailable": unavailable,
        })
    }

    /// What the reader could not read, one line per directory.
    pub fn notes(&self) -> Vec<String> {
        self.reader.take_notes()
    }
}
