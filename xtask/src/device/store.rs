//! Stored runs: every checked result of `cargo xtask bench --device NAME` is kept as
//! `TARGET/bench-runs/NAME/<start time>-<serial>.json` (written atomically), and the table
//! compares a run with the latest earlier one of the same device and settings.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::json::{Value, parse};

/// Runs of one device are comparable when these match.
fn settings(doc: &Value) -> (Option<bool>, Vec<String>) {
    let quick = doc.get("quick").and_then(Value::as_bool);
    let mut models: Vec<String> = doc
        .get("train")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(|row| row.get("model").and_then(Value::as_str).map(String::from))
        .collect();
    models.dedup();
    (quick, models)
}

/// The latest stored run in `dir` with `doc`'s settings (its file name and document); files
/// that cannot be read are skipped with a warning.
pub fn previous(dir: &Path, doc: &Value) -> Option<(String, Value)> {
    let want = settings(doc);
    let mut names: Vec<(String, std::time::SystemTime, String)> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            let started = name.split('-').next().unwrap_or_default().to_string();
            (name.ends_with(".json") && !name.starts_with('.')).then_some((started, modified, name))
        })
        .collect();
    // By start time (`<unix seconds>-…`, ten digits until the year 2286), then by when the
    // file was written.
    names.sort();
    for (_, _, name) in names.into_iter().rev() {
        let path = dir.join(&name);
        let stored = fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| parse(&t));
        match stored {
            Ok(stored) if settings(&stored) == want => {
                // A document with a train suite compares with runs that have one; a kernels-only
                // run has no models and matches only kernels-only runs.
                return Some((name, stored));
            }
            Ok(_) => {}
            Err(e) => eprintln!("xtask: warning: skipping the stored run {}: {e}", path.display()),
        }
    }
    None
}

/// Keeps `doc` in `dir` as `<started_unix_s>-<serial>.json`; the path.
pub fn save(dir: &Path, doc: &Value, serial: &str) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let started = doc.get("started_unix_s").and_then(Value::as_f64).unwrap_or(0.0) as u64;
    let clean: String = serial
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let mut path = dir.join(format!("{started:010}-{clean}.json"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("{started:010}-{clean}-{n}.json"));
    }
    write_atomic(&path, doc.pretty().as_bytes())?;
    Ok(path)
}

/// Writes a temporary file beside `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = fs::File::create(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(started: u64, quick: bool, model: &str) -> Value {
        parse(&format!(
            r#"{{"started_unix_s": {started}, "quick": {quick}, "train": [{{"model": "{model}"}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_latest_run_with_the_same_settings_is_the_previous_one() {
        let dir = std::env::temp_dir().join(format!("xtask-store-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(previous(&dir, &run(5, false, "gpt2")).is_none());
        let first = save(&dir, &run(1_780_000_000, false, "gpt2"), "ABC:1").unwrap();
        save(&dir, &run(1_780_000_100, true, "gpt2"), "ABC:1").unwrap();
        let second = save(&dir, &run(1_780_000_000, false, "gpt2"), "ABC:1").unwrap();
        assert_eq!(second.file_name().unwrap(), "1780000000-ABC_1-2.json");
        // Two runs that started in the same second: the one written last is the later.
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options().write(true).open(&first).unwrap().set_modified(an_hour_ago).unwrap();
        fs::write(dir.join("1790000000-broken.json"), "{").unwrap();
        let (name, doc) = previous(&dir, &run(1_780_000_200, false, "gpt2")).unwrap();
        assert_eq!(name, "1780000000-ABC_1-2.json");
        assert_eq!(doc.get("quick").and_then(Value::as_bool), Some(false));
        let (name, _) = previous(&dir, &run(1_780_000_200, true, "gpt2")).unwrap();
        assert_eq!(name, "1780000100-ABC_1.json");
        assert!(previous(&dir, &run(1_780_000_200, true, "demo")).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
