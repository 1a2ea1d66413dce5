//! The table `cargo xtask bench --device` prints: every figure of a checked `mft-bench/1`
//! document, and its change against the previous stored run of the same device.

use std::fmt::Write;

use super::json::Value;

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One figure of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Stable across runs: what the comparison matches on.
    pub key: String,
    /// For people.
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub better: Better,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// The figures of a (checked) document.
pub fn metrics(doc: &Value) -> Vec<Metric> {
    let mut out = Vec::new();
    let rows =
        doc.get("kernels").and_then(|k| k.get("rows")).and_then(Value::as_array).unwrap_or(&[]);
    for row in rows {
        let (Some(gflops), Some(threads)) = (num(row, "gflops"), num(row, "threads")) else {
            continue;
        };
        let name = text(row, "name");
        let shape = match (num(row, "m"), num(row, "n"), num(row, "k")) {
            (Some(m), Some(n), Some(k)) => format!(" {m}×{n}×{k}"),
            _ => String::new(),
        };
        let label = if name == "fma_peak" {
            "FMA peak".to_string()
        } else {
            format!("GEMM {}", &name[5.min(name.len())..])
        };
        out.push(Metric {
            key: format!("kernels/{name}{shape}/{threads}t"),
            label: format!(
                "{label}{shape}, {threads} thread{}",
                if threads == 1.0 { "" } else { "s" }
            ),
            value: gflops,
            unit: "GFLOP/s",
            better: Better::Higher,
        });
    }
    let train = doc.get("train").and_then(Value::as_array).unwrap_or(&[]);
    for row in train {
        let (model, mode) = (text(row, "model"), text(row, "mode"));
        let shape = format!(
            "{}×{}, {} threads",
            num(row, "batch").unwrap_or(0.0),
            num(row, "seq").unwrap_or(0.0),
            num(row, "threads").unwrap_or(0.0)
        );
        let key = format!("train/{model}/{mode}/{shape}");
        let mode_name = if mode == "lora" { "LoRA" } else { "full FT" };
        let mut push = |what: &str, label: String, value: Option<f64>, unit, better| {
            if let Some(value) = value {
                out.push(Metric { key: format!("{key}/{what}"), label, value, unit, better });
            }
        };
        push(
            "step",
            format!("{model} {mode_name} step ({shape})"),
            num(row, "median_step_s"),
            "s",
            Better::Lower,
        );
        push(
            "tokens",
            format!("{model} {mode_name} tokens/s"),
            num(row, "tokens_per_s"),
            "tok/s",
            Better::Higher,
        );
        push(
            "rss",
            format!("{model} {mode_name} peak RSS"),
            num(row, "peak_rss_bytes").map(|b| b / 1e6),
            "MB",
            Better::Lower,
        );
        let energy = row.get("energy").and_then(|e| num(e, "joules_per_token"));
        push(
            "energy",
            format!("{model} {mode_name} energy"),
            energy.map(|j| j * 1e3),
            "mJ/tok",
            Better::Lower,
        );
    }
    if let Some(rss) = num(doc, "peak_rss_bytes") {
        out.push(Metric {
            key: "peak_rss".into(),
            label: "peak RSS of the whole run".into(),
            value: rss / 1e6,
            unit: "MB",
            better: Better::Lower,
        });
    }
    out
}

/// A value to four significant digits.
fn show(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = (3 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{value:.decimals$}")
}

/// The change from `before` to `now`, and whether it is better.
fn change(now: f64, before: f64, better: Better) -> String {
    if before == 0.0 {
        return "n/a".into();
    }
    let pct = 100.0 * (now - before) / before;
    let verdict = match (pct.abs() < 2.0, (pct > 0.0) == (better == Better::Higher)) {
        (true, _) => "",
        (false, true) => " better",
        (false, false) => " worse",
    };
    format!("{pct:+.1}%{verdict}")
}

/// The table of `doc`, with the change against `previous` (its stored file named) where both
/// have a figure.
pub fn table(doc: &Value, previous: Option<(&Value, &str)>) -> String {
    let now = metrics(doc);
    let before = previous.map(|(p, _)| metrics(p)).unwrap_or_default();
    let device = doc.get("device");
    let mut out = String::new();
    let profile = text(doc, "profile");
    let serial = device.map_or("?", |d| text(d, "serial"));
    let model =
        device.and_then(|d| d.get("model")).and_then(Value::as_str).unwrap_or("model unknown");
    let machine = doc.get("machine");
    let isa = machine.map_or("?", |m| text(m, "isa"));
    let sve =
        machine.and_then(|m| num(m, "sve_bits")).map(|b| format!(" ({b}-bit)")).unwrap_or_default();
    let quick =
        if doc.get("quick").and_then(Value::as_bool) == Some(true) { ", quick" } else { "" };
    let _ = writeln!(
        out,
        "mft-bench on {profile} (serial {serial}, {model}): kernels {isa}{sve}{quick}"
    );
    match previous {
        Some((_, name)) => {
            let _ = writeln!(out, "change against the previous run: {name}");
        }
        None => {
            let _ =
                writeln!(out, "no previous run of this device with these settings to compare with");
        }
    }
    let width = now.iter().map(|m| m.label.chars().count()).max().unwrap_or(10).max(6);
    let _ = writeln!(out, "{:<width$}  {:>16}  {:>16}  change", "figure", "this run", "previous");
    for m in &now {
        let this = format!("{} {}", show(m.value), m.unit);
        let (prev, delta) = match before.iter().find(|b| b.key == m.key) {
            Some(b) => {
                (format!("{} {}", show(b.value), b.unit), change(m.value, b.value, m.better))
            }
            None => ("-".into(), String::new()),
        };
        let _ = writeln!(out, "{:<width$}  {this:>16}  {prev:>16}  {delta}", m.label);
    }
    // What has no number: said in words.
    for row in doc.get("train").and_then(Value::as_array).unwrap_or(&[]) {
        if let Some(reason) =
            row.get("energy").and_then(|e| e.get("unavailable")).and_then(Value::as_str)
        {
            let _ = writeln!(
                out,
                "energy of {} {}: not measured: {reason}",
                text(row, "model"),
                text(row, "mode")
            );
        }
    }
    if let Some(thermal) = doc.get("thermal") {
        match (num(thermal, "hottest_before_c"), num(thermal, "hottest_after_c")) {
            (Some(a), Some(b)) => {
                let _ = writeln!(out, "hottest sensor: {a:.1} °C before, {b:.1} °C after");
            }
            _ => {
                let why = thermal.get("unavailable").and_then(Value::as_str).unwrap_or("not read");
                let _ = writeln!(out, "temperatures: not available: {why}");
            }
        }
    }
    if let Some(status) = device.and_then(|d| d.get("android_thermal_status")) {
        match (num(status, "before"), num(status, "after")) {
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    out,
                    "Android thermal status: {a} before, {b} after (0 none … 6 shutdown)"
                );
            }
            _ => {
                let why = status.get("unavailable").and_then(Value::as_str).unwrap_or("not read");
                let _ = writeln!(out, "Android thermal status: not available: {why}");
            }
        }
    }
    if let Some(battery) = doc.get("battery") {
        let level = |list: &str| {
            battery
                .get(list)
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|b| num(b, "capacity_percent"))
        };
        match (level("before"), level("after")) {
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    out,
                    "battery: {a}% before, {b}% after, on {} power",
                    text(battery, "power_source")
                );
            }
            _ => {
                let why =
                    battery.get("unavailable").and_then(Value::as_str).unwrap_or("no level read");
                let _ = writeln!(out, "battery: not available: {why}");
            }
        }
    }
    for warning in device.and_then(|d| d.get("warnings")).and_then(Value::as_array).unwrap_or(&[]) {
        let _ = writeln!(out, "warning: {}", warning.as_str().unwrap_or("?"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::json::parse;

    fn doc(gflops: f64, step: f64) -> Value {
        parse(&format!(
            r#"{{"profile": "pixel8", "quick": false, "machine": {{"isa": "sve", "sve_bits": 128}},
               "device": {{"serial": "ABC", "model": "Pixel 8", "warnings": ["not pinned"],
                          "android_thermal_status": {{"before": 0, "after": 1, "unavailable": null}}}},
               "kernels": {{"rows": [{{"name": "gemm mlp.c_fc fwd", "m": 512, "n": 3072, "k": 768,
                                       "threads": 5, "gflops": {gflops}}}]}},
               "train": [{{"model": "gpt2", "mode": "lora", "batch": 4, "seq": 128, "threads": 5,
                          "median_step_s": {step}, "tokens_per_s": {}, "peak_rss_bytes": 8.1e8,
                          "energy": {{"joules_per_token": null, "unavailable": "on external power"}}}}],
               "peak_rss_bytes": 9e8,
               "thermal": {{"hottest_before_c": 35.0, "hottest_after_c": 48.25}},
               "battery": {{"power_source": "external", "before": [{{"capacity_percent": 80}}],
                           "after": [{{"capacity_percent": 79}}]}}}}"#,
            512.0 / step
        ))
        .unwrap()
    }

    #[test]
    fn the_table_shows_each_figure_and_its_change() {
        let now = doc(60.0, 2.0);
        let before = doc(50.0, 2.02);
        let table = table(&now, Some((&before, "1780000000-ABC.json")));
        let line = |needle: &str| {
            table
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle}: {table}"))
        };
        assert!(
            line("GEMM mlp.c_fc fwd 512×3072×768, 5 threads").contains("+20.0% better"),
            "{table}"
        );
        let step = line("gpt2 LoRA step (4×128, 5 threads)");
        assert!(
            step.contains("2.000 s") && step.contains("-1.0%") && !step.contains("worse"),
            "{step}"
        );
        assert!(line("gpt2 LoRA tokens/s").contains("256.0 tok/s"));
        assert!(line("energy of gpt2 lora").contains("on external power"));
        assert!(
            line("hottest sensor").contains("48.2 °C after")
                || line("hottest sensor").contains("48.3 °C after")
        );
        assert!(line("Android thermal status").contains("0 before, 1 after"));
        assert!(line("battery").contains("80% before, 79% after"));
        assert!(line("warning").contains("not pinned"));
        assert!(line("previous run").contains("1780000000-ABC.json"));
        let alone = super::table(&now, None);
        assert!(alone.contains("no previous run"), "{alone}");
        assert_eq!(change(90.0, 100.0, Better::Higher), "-10.0% worse");
        assert_eq!(change(90.0, 100.0, Better::Lower), "-10.0% better");
    }
}
