//! The `mft-bench/1` document, checked field by field before it is stored or shown: a result
//! with a missing row, a NaN, a zero step time, a loss that a random model cannot have or an
//! energy figure without its unit fails the run with the field's path and the problem.

use super::json::Value;

/// The layout `mft-bench` writes.
pub const SCHEMA: &str = "mft-bench/1";

/// What the run asked for, so the document can be held to it.
#[derive(Debug, Clone)]
pub struct Expect {
    pub profile: String,
    pub suite: String,
    pub quick: bool,
    pub threads: Option<usize>,
}

/// Checks `doc` against the layout and `expect`; the error names the first bad field.
pub fn validate(doc: &Value, expect: &Expect) -> Result<(), String> {
    let root = Field { value: Some(doc), path: String::new() };
    root.object()?;
    let schema = root.at("schema").string()?;
    if schema != SCHEMA {
        return Err(format!("schema: `{schema}`, expected `{SCHEMA}`"));
    }
    root.at("profile").equals_str(&expect.profile)?;
    root.at("suite").equals_str(&expect.suite)?;
    root.at("power_root").string()?;
    if root.at("quick").boolean()? != expect.quick {
        return Err(format!("quick: {}, expected {}", !expect.quick, expect.quick));
    }
    root.at("started_unix_s").count()?;
    root.at("duration_s").positive()?;
    let threads = root.at("threads").count()?;
    if let Some(want) = expect.threads
        && threads != want
    {
        return Err(format!("threads: {threads}, expected {want}"));
    }

    let machine = root.at("machine");
    machine.at("arch").string()?;
    machine.at("isa").string()?;
    machine.at("features").strings()?;
    machine.at("cpus").count()?;
    machine.at("sve_bits").nullable(Field::count)?;
    machine.at("mem_total_bytes").nullable(Field::count)?;
    let pinning = root.at("pinning");
    pinning.at("applied").boolean()?;
    pinning.at("error").nullable(Field::string)?;

    let kernels = matches!(expect.suite.as_str(), "kernels" | "all");
    let train = matches!(expect.suite.as_str(), "train" | "all");
    if kernels {
        check_kernels(&root.at("kernels"), threads)?;
    } else {
        root.at("kernels").null()?;
    }
    let rows = root.at("train").array()?;
    if train {
        let modes: Vec<String> = (0..rows.len())
            .map(|i| root.at("train").index(i).at("mode").string().map(String::from))
            .collect::<Result<_, _>>()?;
        if modes != ["lora", "full"] {
            return Err(format!("train: modes {modes:?}, expected [\"lora\", \"full\"]"));
        }
        for i in 0..rows.len() {
            check_train_row(&root.at("train").index(i))?;
        }
    } else if !rows.is_empty() {
        return Err("train: rows in a run without the train suite".into());
    }
    let rss = root.at("peak_rss_bytes").count()?;
    if rss == 0 {
        return Err("peak_rss_bytes: 0 (the benchmark could not read /proc/self/status)".into());
    }
    for i in 0..rows.len() {
        let row = root.at("train").index(i).at("peak_rss_bytes");
        if row.count()? > rss {
            return Err(format!("peak_rss_bytes: {rss}, less than {}", row.path));
        }
    }
    check_unavailable(&root.at("battery"), "before")?;
    root.at("battery").at("power_source").string()?;
    check_thermal(&root.at("thermal"))?;
    root.at("notes").strings()?;
    Ok(())
}

fn check_kernels(kernels: &Field<'_>, threads: usize) -> Result<(), String> {
    kernels.at("gemm_isa").string()?;
    kernels.at("peak_isa").string()?;
    let rows = kernels.at("rows").array()?;
    let mut peaks = Vec::new();
    let mut gemms = Vec::new();
    for i in 0..rows.len() {
        let row = kernels.at("rows").index(i);
        let name = row.at("name").string()?;
        let t = row.at("threads").count()?;
        if t == 0 {
            return Err(format!("{}.threads: 0", row.path));
        }
        row.at("gflops").positive()?;
        row.at("runs").count()?;
        if name == "fma_peak" {
            peaks.push(t);
            continue;
        }
        if !name.starts_with("gemm ") {
            return Err(format!("{}.name: `{name}` is neither fma_peak nor a gemm row", row.path));
        }
        for dim in ["m", "n", "k"] {
            if row.at(dim).count()? == 0 {
                return Err(format!("{}.{dim}: 0", row.path));
            }
        }
        row.at("of_peak").positive()?;
        let error = row.at("max_rel_error").number()?;
        if !(0.0..=1e-3).contains(&error) {
            return Err(format!("{}.max_rel_error: {error} is not within [0, 1e-3]", row.path));
        }
        gemms.push(t);
    }
    let mut wanted = vec![1];
    if threads > 1 {
        wanted.push(threads);
    }
    for t in wanted {
        if !peaks.contains(&t) {
            return Err(format!("{}.rows: no fma_peak row on {t} thread(s)", kernels.path));
        }
        if !gemms.contains(&t) {
            return Err(format!("{}.rows: no gemm row on {t} thread(s)", kernels.path));
        }
    }
    Ok(())
}

fn check_train_row(row: &Field<'_>) -> Result<(), String> {
    row.at("model").string()?;
    let random = row.at("random_weights").boolean()?;
    let vocab = row.at("config").at("vocab").count()?;
    let batch = row.at("batch").count()?;
    let seq = row.at("seq").count()?;
    row.at("threads").count()?;
    if row.at("trainable_params").count()? == 0 {
        return Err(format!("{}.trainable_params: 0", row.path));
    }
    let steps = row.at("steps").count()?;
    let times = row.at("step_s").array()?;
    if steps == 0 || times.len() != steps {
        return Err(format!("{}.step_s: {} times for {steps} steps", row.path, times.len()));
    }
    let mut sorted = Vec::new();
    for i in 0..times.len() {
        sorted.push(row.at("step_s").index(i).positive()?);
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let reported = row.at("median_step_s").positive()?;
    if !close(reported, median) {
        return Err(format!(
            "{}.median_step_s: {reported}, but the median of step_s is {median}",
            row.path
        ));
    }
    let min = row.at("min_step_s").positive()?;
    if !close(min, sorted[0]) {
        return Err(format!(
            "{}.min_step_s: {min}, but the least of step_s is {}",
            row.path, sorted[0]
        ));
    }
    let rate = row.at("tokens_per_s").positive()?;
    let want = (batch * seq) as f64 / median;
    if !close(rate, want) {
        return Err(format!(
            "{}.tokens_per_s: {rate}, but {batch}×{seq} tokens / {median} s is {want}",
            row.path
        ));
    }
    let first = row.at("loss_first").positive()?;
    row.at("loss_last").positive()?;
    if random {
        // Random weights at initialisation predict nearly uniformly: the loss is about ln(vocab).
        let uniform = (vocab as f64).ln();
        if (first - uniform).abs() > 1.0 {
            return Err(format!(
                "{}.loss_first: {first}, but a random model's first loss is about ln({vocab}) = {uniform:.3}",
                row.path
            ));
        }
    }
    if row.at("peak_rss_bytes").count()? == 0 {
        return Err(format!("{}.peak_rss_bytes: 0", row.path));
    }
    row.at("peak_rss_reset").boolean()?;
    let energy = row.at("energy");
    match energy.at("unavailable").nullable(Field::string)? {
        Some(reason) => {
            if reason.trim().is_empty() {
                return Err(format!("{}.unavailable: an empty reason", energy.path));
            }
            energy.at("joules").null()?;
            energy.at("joules_per_token").null()?;
        }
        None => {
            let joules = energy.at("joules").number()?;
            if joules < 0.0 {
                return Err(format!("{}.joules: {joules} is negative", energy.path));
            }
            energy.at("joules_per_token").number()?;
            energy.at("method").string()?;
        }
    }
    Ok(())
}

/// `unavailable` is a reason exactly when `list` is empty.
fn check_unavailable(object: &Field<'_>, list: &str) -> Result<(), String> {
    let items = object.at(list).array()?.len();
    object.at("after").array()?;
    match object.at("unavailable").nullable(Field::string)? {
        Some(reason) if reason.trim().is_empty() => {
            Err(format!("{}.unavailable: an empty reason", object.path))
        }
        Some(_) => Ok(()),
        None if items == 0 => {
            Err(format!("{}.unavailable: null, but {}.{list} is empty", object.path, object.path))
        }
        None => Ok(()),
    }
}

fn check_thermal(thermal: &Field<'_>) -> Result<(), String> {
    thermal.at("before").array()?;
    thermal.at("after").array()?;
    let hottest = thermal.at("hottest_before_c").nullable(Field::number)?;
    thermal.at("hottest_after_c").nullable(Field::number)?;
    let reason = thermal.at("unavailable").nullable(Field::string)?;
    match (hottest, reason) {
        (Some(t), None) if (-40.0..=150.0).contains(&t) => Ok(()),
        (Some(t), None) => {
            Err(format!("{}.hottest_before_c: {t} °C is no temperature", thermal.path))
        }
        (None, Some(r)) if !r.trim().is_empty() => Ok(()),
        (None, _) => Err(format!("{}: no temperature and no reason why", thermal.path)),
        (Some(_), Some(_)) => {
            Err(format!("{}: a temperature and a reason it is unavailable", thermal.path))
        }
    }
}

/// A field of the document and its path, for messages.
struct Field<'a> {
    value: Option<&'a Value>,
    path: String,
}

impl<'a> Field<'a> {
    fn at(&self, key: &str) -> Field<'a> {
        let path =
            if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) };
        Field { value: self.value.and_then(|v| v.get(key)), path }
    }

    fn index(&self, i: usize) -> Field<'a> {
        let value = self.value.and_then(Value::as_array).and_then(|a| a.get(i));
        Field { value, path: format!("{}[{i}]", self.path) }
    }

    fn get(&self, what: &str) -> Result<&'a Value, String> {
        self.value.ok_or_else(|| format!("{}: missing (expected {what})", self.path))
    }

    fn wrong(&self, what: &str) -> String {
        let found = match self.value {
            Some(v) => v.pretty().trim().chars().take(60).collect::<String>(),
            None => "nothing".into(),
        };
        format!("{}: {found} is not {what}", self.path)
    }

    fn object(&self) -> Result<(), String> {
        match self.get("an object")? {
            Value::Object(_) => Ok(()),
            _ => Err(self.wrong("an object")),
        }
    }

    fn array(&self) -> Result<&'a [Value], String> {
        self.get("an array")?.as_array().ok_or_else(|| self.wrong("an array"))
    }

    fn string(&self) -> Result<&'a str, String> {
        self.get("a string")?.as_str().ok_or_else(|| self.wrong("a string"))
    }

    fn strings(&self) -> Result<(), String> {
        let items = self.array()?;
        for i in 0..items.len() {
            self.index(i).string()?;
        }
        Ok(())
    }

    fn equals_str(&self, want: &str) -> Result<(), String> {
        let got = self.string()?;
        if got == want { Ok(()) } else { Err(format!("{}: `{got}`, expected `{want}`", self.path)) }
    }

    fn boolean(&self) -> Result<bool, String> {
        self.get("true or false")?.as_bool().ok_or_else(|| self.wrong("true or false"))
    }

    fn null(&self) -> Result<(), String> {
        if self.get("null")?.is_null() { Ok(()) } else { Err(self.wrong("null")) }
    }

    fn number(&self) -> Result<f64, String> {
        match self.get("a number")?.as_f64() {
            Some(n) if n.is_finite() => Ok(n),
            _ => Err(self.wrong("a finite number")),
        }
    }

    fn positive(&self) -> Result<f64, String> {
        match self.number()? {
            n if n > 0.0 => Ok(n),
            _ => Err(self.wrong("a positive number")),
        }
    }

    /// A whole number ≥ 0.
    fn count(&self) -> Result<usize, String> {
        match self.number()? {
            n if n >= 0.0 && n.fract() == 0.0 => Ok(n as usize),
            _ => Err(self.wrong("a whole number")),
        }
    }

    /// `None` for null, else what `check` makes of it.
    fn nullable<T>(&self, check: impl Fn(&Self) -> Result<T, String>) -> Result<Option<T>, String> {
        if self.get("a value or null")?.is_null() { Ok(None) } else { check(self).map(Some) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::json::parse;

    /// A complete document in the layout, written by hand for these tests (two threads, both
    /// suites, no battery, one thermal zone).
    const GOOD: &str = r#"{
      "schema": "mft-bench/1", "profile": "qemu", "suite": "all", "power_root": "/", "quick": true,
      "started_unix_s": 1780000000, "duration_s": 12.5, "threads": 2,
      "machine": {"arch": "aarch64", "os": "linux", "isa": "sve", "isas": ["scalar", "neon", "sve"],
                  "sve_bits": 128, "features": ["asimd", "sve", "sve2"], "cpus": 2, "mem_total_bytes": null},
      "pinning": {"cpus": [], "applied": false, "error": null},
      "kernels": {"gemm_isa": "sve", "peak_isa": "neon", "rows": [
        {"name": "fma_peak", "threads": 1, "cpu": null, "gflops": 0.5, "runs": 3},
        {"name": "gemm attn.c_proj fwd", "op": "A·B", "m": 32, "n": 768, "k": 768, "threads": 1,
         "gflops": 0.2, "runs": 3, "of_peak": 0.4, "max_rel_error": 3e-7},
        {"name": "fma_peak", "threads": 2, "cpu": null, "gflops": 0.9, "runs": 3},
        {"name": "gemm attn.c_proj fwd", "op": "A·B", "m": 32, "n": 768, "k": 768, "threads": 2,
         "gflops": 0.3, "runs": 3, "of_peak": 0.33, "max_rel_error": 2e-7}]},
      "train": [
        {"model": "gpt2-tiny", "random_weights": true, "mode": "lora",
         "config": {"family": "gpt2", "vocab": 4096, "hidden": 128, "layers": 2, "heads": 2},
         "batch": 2, "seq": 32, "threads": 2, "trainable_params": 8192, "warmup": 1, "steps": 2,
         "step_s": [1.0, 3.0], "median_step_s": 2.0, "min_step_s": 1.0, "tokens_per_s": 32.0,
         "loss_first": 8.36, "loss_last": 8.35, "peak_rss_bytes": 40000000, "peak_rss_reset": true,
         "energy": {"joules": null, "joules_per_token": null, "unavailable": "no battery"}},
        {"model": "gpt2-tiny", "random_weights": true, "mode": "full",
         "config": {"family": "gpt2", "vocab": 4096, "hidden": 128, "layers": 2, "heads": 2},
         "batch": 2, "seq": 32, "threads": 2, "trainable_params": 953856, "warmup": 1, "steps": 1,
         "step_s": [2.0], "median_step_s": 2.0, "min_step_s": 2.0, "tokens_per_s": 32.0,
         "loss_first": 8.36, "loss_last": 8.1, "peak_rss_bytes": 44000000, "peak_rss_reset": true,
         "energy": {"joules": 4.0, "joules_per_token": 0.0625, "method": "power", "unavailable": null}}],
      "peak_rss_bytes": 44000000,
      "battery": {"power_source": "external", "before": [], "after": [], "unavailable": "no battery"},
      "thermal": {"before": [{"zone": "thermal_zone0", "type": "cpu", "temp_c": 41.0}], "after": [],
                  "hottest_before_c": 41.0, "hottest_after_c": 43.5, "unavailable": null},
      "notes": []
    }"#;

    fn expect() -> Expect {
        Expect { profile: "qemu".into(), suite: "all".into(), quick: true, threads: Some(2) }
    }

    /// `GOOD` with the text `from` replaced by `to` (which must occur).
    fn broken(from: &str, to: &str) -> Value {
        assert!(GOOD.contains(from), "{from}");
        parse(&GOOD.replacen(from, to, 1)).unwrap()
    }

    #[test]
    fn a_complete_document_passes() {
        validate(&parse(GOOD).unwrap(), &expect()).unwrap();
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let cases: [(&str, &str, &str); 19] = [
            (r#""schema": "mft-bench/1""#, r#""schema": "mft-bench/2""#, "schema"),
            (r#""profile": "qemu""#, r#""profile": "pixel8""#, "profile"),
            (r#""threads": 2,"#, r#""threads": 3,"#, "threads: 3"),
            (r#""gflops": 0.2"#, r#""gflops": 0"#, "kernels.rows[1].gflops"),
            (r#""max_rel_error": 3e-7"#, r#""max_rel_error": 0.5"#, "max_rel_error"),
            (
                r#""name": "fma_peak", "threads": 2"#,
                r#""name": "fma_peak", "threads": 1"#,
                "no fma_peak row on 2",
            ),
            (r#""mode": "full""#, r#""mode": "lora""#, "modes"),
            (r#""step_s": [1.0, 3.0]"#, r#""step_s": [1.0]"#, "train[0].step_s: 1 times"),
            (
                r#""median_step_s": 2.0, "min_step_s": 1.0"#,
                r#""median_step_s": 1.5, "min_step_s": 1.0"#,
                "median",
            ),
            (r#""tokens_per_s": 32.0"#, r#""tokens_per_s": 64.0"#, "train[0].tokens_per_s"),
            (
                r#""loss_first": 8.36, "loss_last": 8.35"#,
                r#""loss_first": 0.5, "loss_last": 8.35"#,
                "ln(4096)",
            ),
            (r#""loss_last": 8.1"#, r#""loss_last": null"#, "train[1].loss_last"),
            (r#""joules": 4.0"#, r#""joules": -4.0"#, "negative"),
            (
                r#""unavailable": "no battery"}},"#,
                r#""unavailable": null}},"#,
                "train[0].energy.joules",
            ),
            (
                r#""peak_rss_bytes": 44000000,
      "battery""#,
                r#""peak_rss_bytes": 0,
      "battery""#,
                "peak_rss_bytes: 0",
            ),
            (
                r#""before": [], "after": [], "unavailable": "no battery""#,
                r#""before": [], "after": [], "unavailable": null"#,
                "battery.unavailable",
            ),
            (r#""hottest_before_c": 41.0"#, r#""hottest_before_c": null"#, "thermal"),
            (
                r#""peak_rss_bytes": 40000000"#,
                r#""peak_rss_bytes": 50000000"#,
                "less than train[0].peak_rss_bytes",
            ),
            (r#""features": ["asimd", "sve", "sve2"]"#, r#""features": "sve""#, "machine.features"),
        ];
        for (from, to, named) in cases {
            let e = validate(&broken(from, to), &expect()).unwrap_err();
            assert!(e.contains(named), "{to}: `{e}` does not name {named}");
        }
        let mut missing = parse(GOOD).unwrap();
        if let Value::Object(members) = &mut missing {
            members.retain(|(k, _)| k != "train");
        }
        assert_eq!(
            validate(&missing, &expect()).unwrap_err(),
            "train: missing (expected an array)"
        );
        let kernels_only = Expect { suite: "kernels".into(), ..expect() };
        assert!(validate(&parse(GOOD).unwrap(), &kernels_only).unwrap_err().starts_with("suite"));
    }
}
