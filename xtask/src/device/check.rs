//! Is this the device the profile describes? Before the run: the features and CPU parts of
//! the device's `/proc/cpuinfo` and the memory of `/proc/meminfo`; after it: the features, SVE
//! vector length and pinning `mft-bench` itself saw. A mismatch is a warning (the numbers
//! would not be the profile's), printed and kept in the stored result.

use std::collections::BTreeSet;

use super::json::Value;
use super::profile::Profile;

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// Processors listed.
    pub processors: usize,
    /// Features every processor lists (`Features` on Arm, `flags` on x86).
    pub features: BTreeSet<String>,
    /// The `CPU part` values seen.
    pub parts: BTreeSet<String>,
    /// The first `model name` (x86, some arm64 kernels) or `Hardware` line.
    pub model_name: Option<String>,
}

/// Parses `/proc/cpuinfo` (one block per processor).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut processors = 0;
    let mut features: Option<BTreeSet<String>> = None;
    let mut parts = BTreeSet::new();
    let mut model_name = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        match key.trim() {
            "processor" => processors += 1,
            "Features" | "flags" => {
                let these: BTreeSet<String> = value.split_whitespace().map(String::from).collect();
                features = Some(match features {
                    None => these,
                    Some(all) => all.intersection(&these).cloned().collect(),
                });
            }
            "CPU part" => {
                parts.insert(value.trim().to_lowercase());
            }
            "model name" | "Hardware" if model_name.is_none() => {
                model_name = Some(value.trim().to_string());
            }
            _ => {}
        }
    }
    CpuInfo { processors, features: features.unwrap_or_default(), parts, model_name }
}

/// `MemTotal` of `/proc/meminfo`, bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let kb = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Warnings from the device's `/proc/cpuinfo` and `/proc/meminfo` against `profile`.
pub fn device_warnings(
    profile: &Profile,
    cpuinfo: &Result<CpuInfo, String>,
    mem: Option<u64>,
) -> Vec<String> {
    let name = profile.name;
    let mut warnings = Vec::new();
    match cpuinfo {
        Err(why) if !profile.features.is_empty() || !profile.cpu_parts.is_empty() => {
            warnings.push(format!(
                "could not read the device's /proc/cpuinfo ({why}): its ISA is unchecked"
            ));
        }
        Err(_) => {}
        Ok(info) => {
            let missing: Vec<&str> =
                profile.features.iter().copied().filter(|f| !info.features.contains(*f)).collect();
            if !missing.is_empty() {
                warnings.push(format!(
                    "the device's /proc/cpuinfo lacks {} that a {name} has: this is not a {name}, \
                     or its kernel hides them; the results are not a {name}'s",
                    missing.join(", ")
                ));
            }
            let extra: Vec<&str> =
                profile.absent.iter().copied().filter(|f| info.features.contains(*f)).collect();
            if !extra.is_empty() {
                warnings.push(format!(
                    "the device's /proc/cpuinfo lists {}, which a {name} does not have: this is \
                     probably another device",
                    extra.join(", ")
                ));
            }
            let known: BTreeSet<&str> = profile.cpu_parts.iter().map(|(part, _)| *part).collect();
            if !known.is_empty() {
                let seen: BTreeSet<&str> = info.parts.iter().map(String::as_str).collect();
                if seen != known {
                    let names =
                        |set: &BTreeSet<&str>| set.iter().copied().collect::<Vec<_>>().join(" ");
                    warnings.push(format!(
                        "the device's CPU parts are [{}], a {name}'s are [{}] ({})",
                        names(&seen),
                        names(&known),
                        profile
                            .cpu_parts
                            .iter()
                            .map(|(p, n)| format!("{p} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    }
    if let (Some(expected), Some(found)) = (profile.memory_bytes, mem) {
        // The kernel reserves some memory: MemTotal reads a little under the marketed size.
        let ratio = found as f64 / expected as f64;
        if !(0.8..=1.05).contains(&ratio) {
            warnings.push(format!(
                "the device has {:.1} GiB of memory (MemTotal), a {name} {:.1} GiB",
                found as f64 / (1u64 << 30) as f64,
                expected as f64 / (1u64 << 30) as f64
            ));
        }
    }
    warnings
}

/// Warnings from what `mft-bench` saw on the device (`machine` and `pinning` of its document).
pub fn runtime_warnings(profile: &Profile, doc: &Value) -> Vec<String> {
    let name = profile.name;
    let mut warnings = Vec::new();
    let machine = doc.get("machine");
    let features: BTreeSet<&str> = machine
        .and_then(|m| m.get("features"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let missing: Vec<&str> =
        profile.features.iter().copied().filter(|f| !features.contains(f)).collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "mft-bench did not detect {} on the device, which a {name} has",
            missing.join(", ")
        ));
    }
    let sve_bits =
        machine.and_then(|m| m.get("sve_bits")).and_then(Value::as_f64).map(|b| b as usize);
    if profile.sve_bits.is_some() && sve_bits != profile.sve_bits {
        warnings.push(format!(
            "mft-bench found SVE at {} bits, a {name} has {} bits",
            sve_bits.map_or("no".into(), |b| b.to_string()),
            profile.sve_bits.map_or("no".into(), |b| b.to_string())
        ));
    }
    let pinning = doc.get("pinning");
    if !profile.cpus.is_empty()
        && pinning.and_then(|p| p.get("applied")).and_then(Value::as_bool) != Some(true)
    {
        let why = pinning.and_then(|p| p.get("error")).and_then(Value::as_str).unwrap_or("unknown");
        warnings
            .push(format!("the benchmark was not pinned to cores {}: {why}", profile.cpu_list()));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::json::parse;

    /// Two blocks in the layout of an arm64 kernel's /proc/cpuinfo (written for this test).
    const PIXEL_LIKE: &str = "processor\t: 0\nBogoMIPS\t: 49.15\nFeatures\t: fp asimd evtstrm aes \
        pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 \
        sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 \
        sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd46\n\
        CPU revision\t: 1\n\nprocessor\t: 8\nFeatures\t: fp asimd aes asimddp sve sve2 i8mm bf16 \
        fphp asimdhp\nCPU part\t: 0xD4E\n";

    #[test]
    fn cpuinfo_features_are_those_of_every_core() {
        let info = parse_cpuinfo(PIXEL_LIKE);
        assert_eq!(info.processors, 2);
        assert!(info.features.contains("sve2") && info.features.contains("asimddp"));
        assert!(!info.features.contains("sha512"), "only core 0 lists it");
        assert_eq!(info.parts, ["0xd46", "0xd4e"].map(String::from).into());
        assert_eq!(
            parse_mem_total("MemTotal:        7823484 kB\nMemFree: 1 kB\n"),
            Some(7823484 * 1024)
        );
    }

    #[test]
    fn a_device_without_the_profiles_isa_is_warned_about() {
        let pixel = Profile::find("pixel8").unwrap();
        let info = Ok(parse_cpuinfo(PIXEL_LIKE));
        let w = device_warnings(pixel, &info, Some(7_823_484 * 1024));
        // Parts: the A715 (0xd4d) is missing from this two-core sample.
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("0xd4d"), "{w:?}");

        let neon_only =
            Ok(parse_cpuinfo("processor : 0\nFeatures : fp asimd asimddp\nCPU part : 0xd4e\n"));
        let w = device_warnings(pixel, &neon_only, Some(3 << 30));
        assert!(w.iter().any(|w| w.contains("lacks i8mm, bf16, sve, sve2")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("3.0 GiB")), "{w:?}");

        let s23 = Profile::find("galaxy-s23").unwrap();
        let w = device_warnings(s23, &info, None);
        assert!(w.iter().any(|w| w.contains("lists sve")), "{w:?}");

        let host = Profile::find("host").unwrap();
        assert!(device_warnings(host, &Err("no".into()), None).is_empty());
        assert_eq!(device_warnings(pixel, &Err("denied".into()), None).len(), 1);
    }

    #[test]
    fn what_the_benchmark_saw_is_checked_too() {
        let pixel = Profile::find("pixel8").unwrap();
        let good = parse(
            r#"{"machine": {"features": ["asimd", "asimddp", "i8mm", "bf16", "sve", "sve2"], "sve_bits": 128},
                "pinning": {"applied": true, "error": null}}"#,
        )
        .unwrap();
        assert!(runtime_warnings(pixel, &good).is_empty());
        let bad = parse(
            r#"{"machine": {"features": ["asimd", "sve"], "sve_bits": 256},
                "pinning": {"applied": false, "error": "Invalid argument"}}"#,
        )
        .unwrap();
        let w = runtime_warnings(pixel, &bad);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("asimddp, i8mm, bf16, sve2"));
        assert!(w[1].contains("256 bits"));
        assert!(w[2].contains("Invalid argument"));
    }
}
