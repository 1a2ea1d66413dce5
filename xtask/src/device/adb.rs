//! The `adb` client of `cargo xtask bench --device`: finding adb, choosing the device, and
//! `push`, `shell` and `pull` to it, each failure one line that says what to do.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// One line of `adb devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub serial: String,
    /// `device` when usable; `unauthorized`, `offline`, `no permissions…`, `recovery`, ….
    pub state: String,
}

/// Parses `adb devices`: after the `List of devices attached` header, one `SERIAL<TAB>STATE`
/// line per device; the daemon's `* daemon started` chatter and blank lines are skipped.
pub fn parse_devices(text: &str) -> Vec<Attached> {
    text.lines()
        .filter(|line| !line.starts_with('*') && !line.starts_with("List of devices"))
        .filter_map(|line| {
            let (serial, state) = line.split_once('\t')?;
            let serial = serial.trim();
            (!serial.is_empty())
                .then(|| Attached { serial: serial.into(), state: state.trim().into() })
        })
        .collect()
}

/// The device to use: `--serial` when given, else the only one attached; it must be ready.
pub fn select(attached: &[Attached], serial: Option<&str>) -> Result<String, String> {
    let listed = || {
        attached
            .iter()
            .map(|a| format!("{} ({})", a.serial, a.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let device = match serial {
        Some(serial) => attached.iter().find(|a| a.serial == serial).ok_or_else(|| {
            if attached.is_empty() {
                format!("device {serial} is not attached: `adb devices` lists no device")
            } else {
                format!("device {serial} is not attached; `adb devices` lists: {}", listed())
            }
        })?,
        None => match attached {
            [] => {
                return Err("no device attached (`adb devices` lists none): connect the phone by \
                            USB with USB debugging on (Settings > Developer options), or pair it \
                            for wireless debugging (`adb pair`, `adb connect HOST:PORT`)"
                    .into());
            }
            [one] => one,
            _ => {
                return Err(format!(
                    "several devices attached: {}; choose one with --serial SERIAL",
                    listed()
                ));
            }
        },
    };
    match device.state.as_str() {
        "device" => Ok(device.serial.clone()),
        "unauthorized" => Err(format!(
            "device {} is unauthorized: unlock it and accept the \"Allow USB debugging?\" \
             prompt (if none shows, revoke USB debugging authorizations in Developer options \
             and reconnect), then run again",
            device.serial
        )),
        "offline" => Err(format!(
            "device {} is offline: reconnect it, or restart adb with `adb kill-server`",
            device.serial
        )),
        other => Err(format!("device {} is not ready (adb says `{other}`)", device.serial)),
    }
}

/// What a command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `adb` with a PATH and environment of its own (the fake adb's, in the pipeline test).
#[derive(Debug, Clone)]
pub struct Adb {
    path: Option<OsString>,
    envs: Vec<(String, OsString)>,
    serial: Option<String>,
}

impl Adb {
    /// adb from `path` (`None`: this process's PATH), with extra environment variables.
    pub fn new(path: Option<OsString>, envs: Vec<(String, OsString)>) -> Adb {
        Adb { path, envs, serial: None }
    }

    /// The same adb, talking to the device `serial` (`adb -s SERIAL`).
    pub fn with_serial(&self, serial: &str) -> Adb {
        Adb { serial: Some(serial.into()), ..self.clone() }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("adb");
        if let Some(path) = &self.path {
            command.env("PATH", path);
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(serial) = &self.serial {
            command.args(["-s", serial]);
        }
        command
    }

    /// Runs `adb ARGS`, capturing what it prints.
    pub fn output(&self, args: &[&str]) -> Result<Output, String> {
        let out =
            self.command().args(args).stdin(Stdio::null()).output().map_err(|e| spawn_error(&e))?;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `adb ARGS`, which must succeed; the error quotes adb's own words.
    fn checked(&self, args: &[&str]) -> Result<Output, String> {
        let out = self.output(args)?;
        if out.ok {
            Ok(out)
        } else {
            let said = format!("{}{}", out.stderr.trim(), out.stdout.trim());
            Err(format!("`adb {}` failed: {}", self.shown(args), one_line(&said)))
        }
    }

    fn shown(&self, args: &[&str]) -> String {
        let serial = self.serial.as_ref().map(|s| format!("-s {s} ")).unwrap_or_default();
        format!("{serial}{}", args.join(" "))
    }

    /// Checks that adb runs at all.
    pub fn version(&self) -> Result<String, String> {
        let out = self.checked(&["version"])?;
        Ok(out.stdout.lines().next().unwrap_or_default().trim().to_string())
    }

    /// The attached devices.
    pub fn devices(&self) -> Result<Vec<Attached>, String> {
        Ok(parse_devices(&self.checked(&["devices"])?.stdout))
    }

    /// `adb shell COMMAND`, captured; `Err` when it cannot run or fails.
    pub fn shell(&self, command: &str) -> Result<String, String> {
        self.checked(&["shell", command]).map(|out| out.stdout)
    }

    /// `adb shell COMMAND` with its output shown as it comes (the benchmark's progress), all
    /// on stderr: an adb without the shell protocol merges the device's stderr into stdout,
    /// and stdout is kept for `--json`.
    pub fn shell_streamed(&self, command: &str) -> Result<(), String> {
        let status = self
            .command()
            .args(["shell", command])
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .status()
            .map_err(|e| spawn_error(&e))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`adb {}` failed ({status})", self.shown(&["shell", command])))
        }
    }

    /// `adb push LOCAL REMOTE`.
    pub fn push(&self, local: &Path, remote: &str) -> Result<(), String> {
        let local = local.to_string_lossy();
        self.checked(&["push", &local, remote]).map(drop)
    }

    /// `adb pull REMOTE LOCAL`.
    pub fn pull(&self, remote: &str, local: &Path) -> Result<(), String> {
        let local = local.to_string_lossy();
        self.checked(&["pull", remote, &local]).map(drop)
    }
}

fn spawn_error(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "adb is not on PATH: install Android's platform-tools \
         (https://developer.android.com/tools/releases/platform-tools, or `apt-get install adb`) \
         and put its directory on PATH"
            .into()
    } else {
        format!("could not run adb: {e}")
    }
}

/// Several lines as one.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(list: &[(&str, &str)]) -> Vec<Attached> {
        list.iter()
            .map(|(s, st)| Attached { serial: s.to_string(), state: st.to_string() })
            .collect()
    }

    #[test]
    fn devices_output_is_parsed() {
        let text = "* daemon not running; starting now at tcp:5037\n* daemon started successfully\n\
                    List of devices attached\n36121FDH2000AB\tdevice\n192.168.1.7:37411\tunauthorized\n\n";
        assert_eq!(
            parse_devices(text),
            attached(&[("36121FDH2000AB", "device"), ("192.168.1.7:37411", "unauthorized")])
        );
        assert!(parse_devices("List of devices attached\n\n").is_empty());
    }

    #[test]
    fn the_device_is_chosen_or_the_reason_given() {
        let one = attached(&[("A", "device")]);
        assert_eq!(select(&one, None).unwrap(), "A");
        assert_eq!(select(&one, Some("A")).unwrap(), "A");
        let none = select(&[], None).unwrap_err();
        assert!(none.contains("no device attached"), "{none}");
        let two = attached(&[("A", "device"), ("B", "device")]);
        let several = select(&two, None).unwrap_err();
        assert!(several.contains("several devices") && several.contains("--serial"), "{several}");
        assert_eq!(select(&two, Some("B")).unwrap(), "B");
        let missing = select(&two, Some("C")).unwrap_err();
        assert!(
            missing.contains("C is not attached") && missing.contains("A (device)"),
            "{missing}"
        );
        let locked = select(&attached(&[("A", "unauthorized")]), None).unwrap_err();
        assert!(
            locked.contains("unauthorized") && locked.contains("Allow USB debugging"),
            "{locked}"
        );
        let offline = select(&attached(&[("A", "offline")]), Some("A")).unwrap_err();
        assert!(offline.contains("offline"), "{offline}");
    }
}
