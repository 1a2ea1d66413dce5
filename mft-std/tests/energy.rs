//! The energy and thermal scheduler against fake sysfs trees whose files the tests rewrite
//! between decisions: a battery draining below the minimum and a charger plugged and
//! unplugged, temperatures rising past the limit (fewer threads, then a pause) and falling
//! back (hysteresis), quiet hours, missing and unreadable nodes (noted once), the energy of
//! known voltages and currents (exact), energy that cannot be measured, the policy file and
//! flags; and end to end, `mft finetune` pausing (exit and wait) and resuming to the very
//! adapter an uninterrupted run writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mft_std::energy::{
    Action, Clock, DeviceReader, EnergyFlags, EnergyOptions, EnergySession, Gate, ManualClock,
    Method, OnPause, Policy, PowerSource, QuietHours, Scheduler, StepEnergy, ThermalPolicy,
};

/// A fake `ROOT/sys/class` tree.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree { dir: tempfile::tempdir().unwrap() }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join("sys/class").join(rel)
    }

    /// Writes `rel` (under sys/class) atomically, so a reader never sees it half-written.
    fn set(&self, rel: &str, value: impl std::fmt::Display) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let temp = path.with_extension("tmp-write");
        std::fs::write(&temp, format!("{value}\n")).unwrap();
        std::fs::rename(&temp, &path).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    /// A battery at `capacity` % with `status`, 4 V and 0.5 A out (reported negative, as many
    /// Android kernels do).
    fn battery(&self, capacity: i64, status: &str) {
        self.set("power_supply/battery/type", "Battery");
        self.set("power_supply/battery/capacity", capacity);
        self.set("power_supply/battery/status", status);
        self.set("power_supply/battery/voltage_now", 4_000_000);
        self.set("power_supply/battery/current_now", -500_000);
    }

    /// The USB charger, plugged in or not (the battery's status follows).
    fn charger(&self, online: bool) {
        self.set("power_supply/usb/type", "USB");
        self.set("power_supply/usb/online", u8::from(online));
        if self.path("power_supply/battery/status").exists() {
            self.set(
                "power_supply/battery/status",
                if online { "Charging" } else { "Discharging" },
            );
        }
    }

    /// Thermal zone `n` of sensor `kind` at `celsius`.
    fn zone(&self, n: usize, kind: &str, celsius: f64) {
        self.set(&format!("thermal/thermal_zone{n}/type"), kind);
        self.set(&format!("thermal/thermal_zone{n}/temp"), (celsius * 1000.0).round() as i64);
    }
}

fn decide(s: &mut Scheduler, tree: &Tree, thermal: bool) -> mft_std::energy::Decision {
    let state = DeviceReader::new(tree.root()).read(thermal);
    s.decide(&state, 12 * 3600)
}

#[test]
fn battery_draining_pauses_and_a_charger_resumes() {
    let tree = Tree::new();
    tree.battery(25, "Discharging");
    tree.charger(false);
    let policy = Policy { min_battery: Some(20), ..Policy::default() };
    let mut s = Scheduler::new(policy, 4);

    let d = decide(&mut s, &tree, false);
    assert_eq!((d.action, d.changed), (Action::Run { threads: 4 }, true), "{}", d.reason);
    assert_eq!((d.battery_percent, d.power), (Some(25), PowerSource::Battery));
    tree.set("power_supply/battery/capacity", 20);
    let d = decide(&mut s, &tree, false);
    assert_eq!((d.action, d.changed), (Action::Run { threads: 4 }, false), "{}", d.reason);

    tree.set("power_supply/battery/capacity", 19);
    let d = decide(&mut s, &tree, false);
    assert_eq!((d.action, d.changed), (Action::Pause, true));
    assert!(d.reason.contains("battery 19% below the minimum 20%, not charging"), "{}", d.reason);
    // Back at the minimum without a charger (the reading bounced): still paused.
    tree.set("power_supply/battery/capacity", 20);
    let d = decide(&mut s, &tree, false);
    assert_eq!((d.action, d.changed), (Action::Pause, false));
    assert!(d.reason.contains("not back to 22%"), "{}", d.reason);

    tree.charger(true);
    let d = decide(&mut s, &tree, false);
    assert_eq!((d.action, d.changed), (Action::Run { threads: 4 }, true), "{}", d.reason);
    assert_eq!(d.power, PowerSource::External);
    // Unplugged at 20%: at the minimum, so it runs; below it, it pauses again.
    tree.charger(false);
    assert_eq!(decide(&mut s, &tree, false).action, Action::Run { threads: 4 });
    tree.set("power_supply/battery/capacity", 18);
    assert_eq!(decide(&mut s, &tree, false).action, Action::Pause);
    // The battery alone (no charger readable) resumes at the minimum + 2.
    tree.set("power_supply/battery/capacity", 21);
    assert_eq!(decide(&mut s, &tree, false).action, Action::Pause);
    tree.set("power_supply/battery/capacity", 22);
    let d = decide(&mut s, &tree, false);
    assert_eq!((d.action, d.changed), (Action::Run { threads: 4 }, true), "{}", d.reason);
}

#[test]
fn charging_only_follows_the_charger() {
    let tree = Tree::new();
    tree.battery(90, "Discharging");
    tree.charger(false);
    let mut s = Scheduler::new(Policy { charging_only: true, ..Policy::default() }, 2);
    let d = decide(&mut s, &tree, false);
    assert_eq!(d.action, Action::Pause);
    assert!(d.reason.contains("charging only"), "{}", d.reason);
    tree.charger(true);
    assert_eq!(decide(&mut s, &tree, false).action, Action::Run { threads: 2 });
    // Full on the charger is external power too.
    tree.set("power_supply/battery/status", "Full");
    assert_eq!(decide(&mut s, &tree, false).action, Action::Run { threads: 2 });
    tree.charger(false);
    assert_eq!(decide(&mut s, &tree, false).action, Action::Pause);
    // A machine without a battery runs on mains.
    let desktop = Tree::new();
    desktop.set("power_supply/AC/type", "Mains");
    desktop.set("power_supply/AC/online", 1);
    let mut s = Scheduler::new(Policy { charging_only: true, ..Policy::default() }, 2);
    assert_eq!(decide(&mut s, &desktop, false).action, Action::Run { threads: 2 });
}

#[test]
fn heat_throttles_then_pauses_and_cools_back_with_hysteresis() {
    let tree = Tree::new();
    tree.battery(80, "Charging");
    tree.set("power_supply/battery/temp", 300); // 30.0 °C
    tree.zone(0, "cpu-thermal", 30.0);
    tree.zone(1, "gpu-thermal", 95.0); // not counted: only cpu-thermal and the battery are
    let thermal = ThermalPolicy {
        limit_c: 45.0,
        pause_c: 50.0,
        resume_c: 40.0,
        throttle_threads: None,
        sensors: vec!["cpu-thermal".into(), "battery".into()],
    };
    let policy = Policy { thermal: Some(thermal), ..Policy::default() };
    let mut s = Scheduler::new(policy, 4);
    let mut at = |celsius: f64| {
        tree.zone(0, "cpu-thermal", celsius);
        let d = decide(&mut s, &tree, true);
        (d.action, d.changed, d.reason)
    };
    let run = |threads| Action::Run { threads };
    let (a, changed, _) = at(30.0);
    assert_eq!((a, changed), (run(4), true));
    let (a, changed, reason) = at(45.0);
    assert_eq!((a, changed), (run(2), true));
    assert!(
        reason.contains("45.0 °C (cpu-thermal) at or above the limit 45.0 °C: 2 of 4"),
        "{reason}"
    );
    assert_eq!(at(47.0).0, run(2));
    assert_eq!(at(44.0).0, run(2), "still above the resume level");
    let (a, changed, reason) = at(50.0);
    assert_eq!((a, changed), (Action::Pause, true));
    assert!(reason.contains("at or above the pause level 50.0 °C"), "{reason}");
    assert_eq!(at(46.0).0, Action::Pause, "still at or above the limit");
    let (a, changed, _) = at(43.0);
    assert_eq!((a, changed), (run(2), true));
    let (a, changed, reason) = at(40.0);
    assert_eq!((a, changed), (run(4), true));
    assert!(reason.contains("at or below 40.0 °C: all 4 threads"), "{reason}");
    // The battery's own sensor counts too (60.0 °C).
    tree.set("power_supply/battery/temp", 600);
    let (a, _, reason) = at(30.0);
    assert_eq!(a, Action::Pause);
    assert!(reason.contains("60.0 °C (battery)"), "{reason}");
}

#[test]
fn quiet_hours_span_midnight_at_an_offset() {
    let tree = Tree::new();
    // 22:00-07:00 at UTC+02:00, i.e. 20:00-05:00 UTC.
    let quiet = QuietHours { start: 22 * 60, end: 7 * 60, utc_offset_minutes: 120 };
    let mut s = Scheduler::new(Policy { quiet_hours: Some(quiet), ..Policy::default() }, 1);
    let state = DeviceReader::new(tree.root()).read(false);
    let day = 19_000 * 86_400;
    let utc = |h: u64, m: u64| day + h * 3600 + m * 60;
    assert_eq!(s.decide(&state, utc(19, 59)).action, Action::Run { threads: 1 });
    let d = s.decide(&state, utc(20, 0));
    assert_eq!(d.action, Action::Pause);
    assert!(d.reason.contains("quiet hours 22:00-07:00 UTC+02:00 (now 22:00)"), "{}", d.reason);
    assert_eq!(s.decide(&state, utc(23, 30)).action, Action::Pause);
    assert_eq!(s.decide(&state, utc(4, 59)).action, Action::Pause);
    assert_eq!(s.decide(&state, utc(5, 0)).action, Action::Run { threads: 1 });
}

#[test]
fn missing_and_unreadable_nodes_are_noted_once_and_rules_without_input_not_enforced() {
    let tree = Tree::new();
    tree.set("power_supply/battery/type", "Battery");
    tree.set("power_supply/battery/status", "Discharging");
    tree.set("power_supply/battery/current_now", -500_000);
    // A node that exists but cannot be read (as when an Android app is denied it).
    std::fs::create_dir_all(tree.path("power_supply/battery/voltage_now")).unwrap();
    tree.set("thermal/thermal_zone0/type", "cpu-thermal");
    tree.set("thermal/thermal_zone0/temp", "garbage");
    let reader = DeviceReader::new(tree.root());
    let state = reader.read(true);
    let notes = reader.take_notes();
    let battery_dir = tree.path("power_supply/battery").display().to_string();
    let zone_dir = tree.path("thermal/thermal_zone0").display().to_string();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].starts_with(&battery_dir), "{notes:?}");
    assert!(notes[0].contains("capacity missing"), "{notes:?}");
    assert!(notes[0].contains("voltage_now unreadable"), "{notes:?}");
    assert!(notes[1].starts_with(&zone_dir) && notes[1].contains("temp unreadable"), "{notes:?}");
    assert_eq!(state.battery_percent(), None);
    // Read again: nothing new to say; a node that goes missing later is noted then.
    reader.read(true);
    assert!(reader.take_notes().is_empty());
    tree.remove("power_supply/battery/current_now");
    reader.read(true);
    let later = reader.take_notes();
    assert_eq!(later.len(), 1, "{later:?}");
    assert!(later[0].contains("current_now missing"), "{later:?}");
    reader.read(true);
    assert!(reader.take_notes().is_empty());

    let thermal = ThermalPolicy {
        limit_c: 45.0,
        pause_c: 50.0,
        resume_c: 40.0,
        throttle_threads: None,
        sensors: vec![],
    };
    let policy = Policy { min_battery: Some(50), thermal: Some(thermal), ..Policy::default() };
    let mut s = Scheduler::new(policy, 2);
    let d = s.decide(&state, 0);
    assert_eq!(d.action, Action::Run { threads: 2 });
    assert!(
        d.reason.contains("minimum battery not enforced: no readable capacity"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("thermal limit not enforced"), "{}", d.reason);
}

/// Sessions on a manual clock, sampling only when told.
fn session(tree: &Tree, policy: Policy, on_pause: OnPause, clock: Arc<dyn Clock>) -> EnergySession {
    let options = EnergyOptions {
        power_root: tree.root().to_path_buf(),
        policy,
        on_pause,
        poll: Duration::from_secs(10),
        sample_every: None,
    };
    EnergySession::with_clock(&options, 2, clock)
}

#[test]
fn energy_of_known_voltage_and_current_is_exact() {
    let tree = Tree::new();
    tree.battery(70, "Discharging");
    let clock = Arc::new(ManualClock::new(0));
    let s = session(&tree, Policy::default(), OnPause::Wait, clock.clone());
    // 4 V × 0.5 A = 2 W for 0.25 s, then 4 V × 1 A = 4 W from 0.5 s: trapezoids
    // 0.25·(2+2)/2 + 0.25·(2+4)/2 + 0.5·(4+4)/2 = 0.5 + 0.75 + 2 = 3.25 J.
    s.begin_step();
    clock.advance(Duration::from_millis(250));
    s.sample();
    tree.set("power_supply/battery/current_now", -1_000_000);
    clock.advance(Duration::from_millis(250));
    s.sample();
    clock.advance(Duration::from_millis(500));
    let e = s.finish_step();
    assert_eq!(
        e,
        StepEnergy::Measured { joules: 3.25, seconds: 1.0, method: Method::Power, samples: 4 }
    );
    assert_eq!(e.joules_per_token(26), Some(0.125));
    assert_eq!(e.short(26), "3.25 J/step 125 mJ/tok");
    // The current reported positive (as laptops do) gives the same energy.
    tree.set("power_supply/battery/current_now", 500_000);
    s.begin_step();
    clock.advance(Duration::from_secs(2));
    assert_eq!(s.finish_step().joules(), Some(4.0));

    // Without current_now: the charge counter. 360 µAh = 1.296 C out at 4 V: 5.184 J.
    tree.remove("power_supply/battery/current_now");
    tree.set("power_supply/battery/charge_counter", 3_000_000);
    s.begin_step();
    clock.advance(Duration::from_secs(1));
    tree.set("power_supply/battery/charge_counter", 2_999_640);
    let e = s.finish_step();
    let StepEnergy::Measured { joules, method, .. } = e else { panic!("{e:?}") };
    assert_eq!(method, Method::ChargeCounter);
    assert!((joules - 5.184).abs() < 1e-12, "{joules}");
}

/// The background sampler adds samples during a step (on the real clock).
#[test]
fn the_sampler_thread_samples_during_a_step() {
    let tree = Tree::new();
    tree.battery(70, "Discharging");
    let options = EnergyOptions {
        power_root: tree.root().to_path_buf(),
        sample_every: Some(Duration::from_millis(10)),
        ..EnergyOptions::default()
    };
    let s = EnergySession::new(&options, 1);
    s.begin_step();
    std::thread::sleep(Duration::from_millis(200));
    let e = s.finish_step();
    let StepEnergy::Measured { joules, seconds, method, samples } = e else { panic!("{e:?}") };
    assert_eq!(method, Method::Power);
    assert!(samples >= 5, "{samples} samples in {seconds} s");
    assert!(seconds >= 0.2 && (joules - 2.0 * seconds).abs() < 1e-9, "{joules} J in {seconds} s");
    // Between steps it does not sample: the next step starts afresh.
    std::thread::sleep(Duration::from_millis(50));
    s.begin_step();
    let StepEnergy::Measured { samples, .. } = s.finish_step() else { panic!() };
    assert!(samples <= 3, "{samples}");
}

#[test]
fn energy_is_unavailable_without_a_battery_on_a_charger_or_without_nodes() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
    let unavailable = |s: &EnergySession| {
        s.begin_step();
        match s.finish_step() {
            StepEnergy::Unavailable { reason } => reason,
            measured => panic!("measured {measured:?}"),
        }
    };
    let empty = Tree::new();
    let s = session(&empty, Policy::default(), OnPause::Wait, clock.clone());
    assert!(unavailable(&s).contains("no battery"));

    let tree = Tree::new();
    tree.battery(50, "Discharging");
    tree.charger(true);
    let s = session(&tree, Policy::default(), OnPause::Wait, clock.clone());
    assert!(unavailable(&s).contains("on external power"));
    assert_eq!(s.finish_step().short(10), "energy n/a");

    tree.charger(false);
    tree.remove("power_supply/battery/current_now");
    let s = session(&tree, Policy::default(), OnPause::Wait, clock.clone());
    assert!(unavailable(&s).contains("neither the battery's power"));
    // On battery, but the status is unreadable and there is no charger node: unknown.
    let bare = Tree::new();
    bare.set("power_supply/battery/type", "Battery");
    bare.set("power_supply/battery/capacity", 50);
    let s = session(&bare, Policy::default(), OnPause::Wait, clock);
    assert!(unavailable(&s).contains("cannot tell whether the device runs on its battery"));
}

/// A manual clock whose `sleep` also runs a hook (which rewrites the fake tree).
struct HookClock {
    clock: ManualClock,
    hook: Mutex<Box<dyn FnMut(u32) + Send>>,
    sleeps: Mutex<u32>,
}

impl Clock for HookClock {
    fn now(&self) -> Duration {
        self.clock.now()
    }
    fn unix_seconds(&self) -> u64 {
        self.clock.unix_seconds()
    }
    fn sleep(&self, duration: Duration) {
        self.clock.sleep(duration);
        let mut sleeps = self.sleeps.lock().unwrap();
        *sleeps += 1;
        (self.hook.lock().unwrap())(*sleeps);
    }
}

#[test]
fn waiting_checkpoints_once_and_resumes_when_the_charger_is_plugged() {
    let tree = Arc::new(Tree::new());
    tree.battery(10, "Discharging");
    tree.charger(false);
    let plug = Arc::clone(&tree);
    // The charger is plugged in after 25 s of waiting (the stop flag is checked every 0.1 s).
    let clock = Arc::new(HookClock {
        clock: ManualClock::new(0),
        hook: Mutex::new(Box::new(move |sleeps| {
            if sleeps == 250 {
                plug.charger(true);
            }
        })),
        sleeps: Mutex::new(0),
    });
    let policy = Policy { min_battery: Some(20), ..Policy::default() };
    let mut s = session(&tree, policy.clone(), OnPause::Wait, clock.clone());
    let (mut logged, mut checkpoints) = (Vec::new(), 0);
    let gate = s.gate(
        &AtomicBool::new(false),
        |d| {
            logged.push((d.action, d.reason.clone()));
            Ok(())
        },
        |_| {
            checkpoints += 1;
            Ok(())
        },
    );
    assert_eq!(gate.unwrap(), Gate::Run { threads: 2 });
    assert_eq!(checkpoints, 1);
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[0].0, Action::Pause);
    assert_eq!(logged[1].0, Action::Run { threads: 2 });
    // Polled every 10 s: the charger, plugged at 25 s, is seen at 30 s.
    assert_eq!(clock.now(), Duration::from_secs(30));

    // Exit mode returns at once, without a checkpoint of its own.
    tree.charger(false);
    let mut s = session(&tree, policy.clone(), OnPause::Exit, clock.clone());
    let gate =
        s.gate(&AtomicBool::new(false), |_| Ok(()), |_| panic!("no checkpoint in exit mode"));
    let Gate::Exit { reason } = gate.unwrap() else { panic!("not an exit") };
    assert!(reason.contains("battery 10% below the minimum 20%"), "{reason}");

    // Ctrl-C while waiting stops it.
    let mut s = session(&tree, policy, OnPause::Wait, clock);
    let stop = AtomicBool::new(true);
    assert_eq!(s.gate(&stop, |_| Ok(()), |_| Ok(())).unwrap(), Gate::Stopped);

    // No policy: always all threads, nothing read.
    let mut s =
        session(&Tree::new(), Policy::default(), OnPause::Wait, Arc::new(ManualClock::new(0)));
    assert!(!s.scheduling());
    assert_eq!(
        s.gate(&AtomicBool::new(false), |_| Ok(()), |_| Ok(())).unwrap(),
        Gate::Run { threads: 2 }
    );
}

#[test]
fn flags_override_the_policy_file_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(
        &file,
        r#"{"min_battery": 30, "thermal_limit": "45", "thermal_sensors": ["cpu-thermal"],
            "quiet_hours": "22:00-07:00", "utc_offset": "-05:00", "on_pause": "exit",
            "pause_poll": 2.5, "power_root": "/fake"}"#,
    )
    .unwrap();
    let flags = EnergyFlags {
        policy: Some(file.clone()),
        min_battery: Some("40".into()),
        thermal_resume: Some("38".into()),
        charging_only: true,
        ..EnergyFlags::default()
    };
    let o = flags.resolve().unwrap();
    assert_eq!(o.power_root, PathBuf::from("/fake"));
    assert_eq!(o.policy.min_battery, Some(40));
    assert!(o.policy.charging_only);
    let t = o.policy.thermal.clone().unwrap();
    assert_eq!((t.limit_c, t.pause_c, t.resume_c), (45.0, 50.0, 38.0));
    assert_eq!(t.sensors, vec!["cpu-thermal".to_string()]);
    assert_eq!(
        o.policy.quiet_hours,
        Some(QuietHours { start: 22 * 60, end: 7 * 60, utc_offset_minutes: -300 })
    );
    assert_eq!(o.on_pause, OnPause::Exit);
    assert_eq!(o.poll, Duration::from_millis(2500));
    // Nothing given: no policy, the defaults.
    let none = EnergyFlags::default().resolve().unwrap();
    assert_eq!(none, EnergyOptions::default());
    assert!(!none.policy.is_active());

    let error = |flags: EnergyFlags| flags.resolve().unwrap_err().to_string();
    let flag = |set: fn(&mut EnergyFlags)| {
        let mut f = EnergyFlags::default();
        set(&mut f);
        error(f)
    };
    assert_eq!(
        flag(|f| f.min_battery = Some("150".into())),
        "--min-battery 150: expected a whole percentage from 0 to 100"
    );
    assert_eq!(
        flag(|f| {
            f.thermal_limit = Some("45".into());
            f.thermal_resume = Some("50".into());
        }),
        "--thermal-resume 50: the resume level must be below the limit 45 °C"
    );
    assert_eq!(
        flag(|f| f.thermal_pause = Some("50".into())),
        "--thermal-pause 50: needs a thermal limit (--thermal-limit)"
    );
    assert!(
        flag(|f| f.quiet_hours = Some("25:00-01:00".into()))
            .starts_with("--quiet-hours 25:00-01:00: ")
    );
    assert_eq!(
        flag(|f| f.on_pause = Some("later".into())),
        "--on-pause later: expected wait or exit"
    );
    assert!(
        flag(|f| f.pause_poll = Some("soon".into())).starts_with("--pause-poll soon: expected")
    );

    let with_file = |text: &str| {
        std::fs::write(&file, text).unwrap();
        error(EnergyFlags { policy: Some(file.clone()), ..EnergyFlags::default() })
    };
    let name = file.display().to_string();
    assert_eq!(
        with_file(r#"{"min_batery": 30}"#),
        format!(
            "{name}: min_batery: unknown field (known: power_root, min_battery, charging_only, \
             thermal_limit, thermal_pause, thermal_resume, thermal_threads, thermal_sensors, \
             quiet_hours, utc_offset, on_pause, pause_poll)"
        )
    );
    assert_eq!(
        with_file(r#"{"thermal_limit": 200}"#),
        format!("{name}: thermal_limit: expected a temperature from -40 to 150 °C")
    );
    assert_eq!(
        with_file(r#"{"charging_only": 1}"#),
        format!("{name}: charging_only: expected true or false")
    );
    assert!(with_file("{").starts_with(&format!("{name}: invalid JSON")));
}

#[cfg(not(target_arch = "aarch64"))]
mod run_mft;

/// `mft finetune` end to end on the tiny GPT-2 fixture with a fake tree. Host-only, as
/// tests/cli.rs (the aarch64 run executes tests under qemu, which cannot spawn the binary).
#[cfg(not(target_arch = "aarch64"))]
mod cli {
    use super::Tree;
    use super::run_mft::{finetune_args, fixture, ids_file, stderr};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn mft() -> Command {
        Command::new(env!("CARGO_BIN_EXE_mft"))
    }

    /// `finetune` on the fixture into `out` for `steps`, reading `tree`, plus `extra` flags.
    fn args(dir: &Path, tree: &Tree, out: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
        let data = dir.join("ids.jsonl");
        if !data.exists() {
            ids_file(dir);
        }
        let (steps, root) = (steps.to_string(), tree.root().display().to_string());
        let flags = [&["--lr", "0.01", "--steps", &steps, "--power-root", &root][..], extra];
        finetune_args(&fixture(), &data, out, &flags.concat())
    }

    fn lines(out: &Path, kind: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn adapter(out: &Path) -> Vec<u8> {
        std::fs::read(out.join("adapter_model.safetensors")).unwrap()
    }

    /// The battery drains below the minimum mid-run: the run saves and exits 75; the charger
    /// is plugged, `--resume` finishes, and the adapter is the uninterrupted run's, byte for
    /// byte. Each step's energy (2 W from the fake battery) is in metrics.jsonl.
    #[test]
    fn a_drained_battery_exits_resumably_and_resume_matches_the_uninterrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new();
        tree.battery(80, "Discharging");
        tree.charger(false);
        let out = dir.path().join("paused");
        let policy = ["--min-battery", "20", "--on-pause", "exit", "--quiet"];
        let child = mft()
            .args(args(dir.path(), &tree, &out, 1_000_000, &policy))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("three training steps", || lines(&out, "train").len() >= 3);
        tree.set("power_supply/battery/capacity", 12);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
        let trained = lines(&out, "train");
        let stopped_at = trained.len() as u64;
        assert!((3..1_000_000).contains(&stopped_at));
        let state = std::fs::read_to_string(out.join("checkpoint/trainer_state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["step"].as_u64(), Some(stopped_at));
        let events = lines(&out, "energy");
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (events[0]["action"].as_str(), events[0]["step"].as_u64()),
            (Some("run"), Some(0))
        );
        assert_eq!(events[1]["action"], "pause");
        assert_eq!(events[1]["step"].as_u64(), Some(stopped_at));
        assert_eq!(events[1]["battery_percent"], 12);
        assert!(
            events[1]["reason"].as_str().unwrap().contains("battery 12% below the minimum 20%")
        );
        for t in &trained {
            let tokens = t["tokens"].as_f64().unwrap();
            let (j, per) =
                (t["energy_j"].as_f64().unwrap(), t["energy_j_per_token"].as_f64().unwrap());
            assert_eq!(t["energy_method"], "power", "{t}");
            assert!((t["power_w"].as_f64().unwrap() - 2.0).abs() < 1e-9, "{t}");
            assert!(j > 0.0 && (per - j / tokens).abs() <= 1e-12 * j, "{t}");
            assert_eq!(t["threads"], 1);
        }

        tree.charger(true);
        let resumed = mft()
            .args(args(dir.path(), &tree, &out, stopped_at + 3, &policy))
            .arg("--resume")
            .output()
            .unwrap();
        assert!(resumed.status.success(), "{}", stderr(&resumed));
        // On the charger, the battery's flow is not the device's: energy is unavailable.
        let last = lines(&out, "train").pop().unwrap();
        assert_eq!(last["step"].as_u64(), Some(stopped_at + 3));
        assert!(last["energy_j"].is_null(), "{last}");
        assert!(
            last["energy_unavailable"].as_str().unwrap().contains("on external power"),
            "{last}"
        );

        let straight_out = dir.path().join("straight");
        let straight = mft()
            .args(args(dir.path(), &tree, &straight_out, stopped_at + 3, &["--quiet"]))
            .output()
            .unwrap();
        assert!(straight.status.success(), "{}", stderr(&straight));
        assert!(adapter(&out) == adapter(&straight_out), "the resumed adapter differs");
    }

    /// Hot from the start: the run pauses at step 0 and waits (checkpoint saved); cooled to
    /// between the resume level and the limit, it trains on 1 of 2 threads; cooled below the
    /// resume level, on 2 again. Every decision is in metrics.jsonl and on stderr.
    #[test]
    fn heat_pauses_a_waiting_run_then_throttles_then_restores_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new();
        tree.zone(0, "cpu-thermal", 60.0);
        let out = dir.path().join("hot");
        let mut a = args(
            dir.path(),
            &tree,
            &out,
            1_000_000,
            &["--thermal-limit", "45", "--thermal-resume", "40", "--pause-poll", "0.02", "--json"],
        );
        let i = a.iter().position(|s| s == "--threads").unwrap();
        a[i + 1] = "2".into();
        let child = mft().args(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_for("the pause's checkpoint", || out.join("checkpoint/trainer_state.json").exists());
        assert!(lines(&out, "train").is_empty());
        tree.zone(0, "cpu-thermal", 43.0);
        wait_for("throttled steps", || lines(&out, "train").len() >= 3);
        tree.zone(0, "cpu-thermal", 39.0);
        wait_for("steps on all threads", || {
            lines(&out, "train").iter().filter(|t| t["threads"] == 2).count() >= 2
        });
        let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));

        let events = lines(&out, "energy");
        let seen: Vec<(String, serde_json::Value)> = events
            .iter()
            .map(|e| (e["action"].as_str().unwrap().to_string(), e["threads"].clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("pause".into(), serde_json::Value::Null),
                ("run".into(), 1.into()),
                ("run".into(), 2.into())
            ],
            "{events:?}"
        );
        assert_eq!(events[0]["temp_c"], 60.0);
        assert_eq!(events[0]["sensor"], "cpu-thermal");
        let trained = lines(&out, "train");
        let first_fast = trained.iter().position(|t| t["threads"] == 2).unwrap();
        assert!(first_fast >= 3, "{trained:?}");
        assert!(trained[..first_fast].iter().all(|t| t["threads"] == 1));
        assert!(trained[first_fast..].iter().all(|t| t["threads"] == 2));
        assert_eq!(events[2]["step"].as_u64(), Some(first_fast as u64));
        // No battery in this tree: energy is unavailable, and said so.
        assert!(trained[0]["energy_unavailable"].as_str().unwrap().contains("no battery"));
        let said = stderr(&o);
        assert!(
            said.contains("energy: before step 1: pause: temperature 60.0 °C (cpu-thermal)"),
            "{said}"
        );
        assert!(said.contains("energy: checkpoint saved at step 0; waiting"), "{said}");
        assert!(said.contains(": run on 1 thread: temperature 43.0 °C"), "{said}");
        assert!(said.contains(": run on 2 threads: temperature 39.0 °C"), "{said}");
        // The missing power-supply directory is noted once.
        assert_eq!(said.matches("power_supply: not readable").count(), 1, "{said}");
    }

    /// Paused in wait mode from the first step (battery low), a charger plugged while it
    /// waits: the run completes, with the adapter an unpaused run writes.
    #[test]
    fn a_waiting_run_continues_on_the_charger_and_matches_the_unpaused_run() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new();
        tree.battery(5, "Discharging");
        tree.charger(false);
        let out = dir.path().join("waited");
        let child = mft()
            .args(args(
                dir.path(),
                &tree,
                &out,
                5,
                &["--min-battery", "20", "--pause-poll", "0.02", "--quiet"],
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the pause", || lines(&out, "energy").iter().any(|e| e["action"] == "pause"));
        tree.charger(true);
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(lines(&out, "train").len(), 5);
        let straight_out = dir.path().join("straight");
        let straight =
            mft().args(args(dir.path(), &tree, &straight_out, 5, &["--quiet"])).output().unwrap();
        assert!(straight.status.success(), "{}", stderr(&straight));
        assert!(adapter(&out) == adapter(&straight_out), "the waited run's adapter differs");
    }

    /// Bad energy flags and policy files: one line naming the flag or field, a failure, and
    /// nothing written.
    #[test]
    fn bad_energy_settings_get_one_line_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new();
        let out = dir.path().join("out");
        let policy = dir.path().join("policy.json");
        std::fs::write(&policy, r#"{"thermal_limit": 45, "thermal_pause": 40}"#).unwrap();
        let policy_s = policy.display().to_string();
        let cases: Vec<(Vec<&str>, String)> = vec![
            (vec!["--min-battery", "101"], "--min-battery 101: expected a whole percentage".into()),
            (vec!["--quiet-hours", "22:00"], "--quiet-hours 22:00: expected HH:MM-HH:MM".into()),
            (vec!["--on-pause", "sleep"], "--on-pause sleep: expected wait or exit".into()),
            (vec!["--utc-offset", "+02:00"], "--utc-offset +02:00: needs quiet hours".into()),
            (
                vec!["--policy", &policy_s],
                format!(
                    "{policy_s}: thermal_pause: the pause level must not be below the limit 45 °C"
                ),
            ),
        ];
        for (flags, expected) in cases {
            let o = mft().args(args(dir.path(), &tree, &out, 2, &flags)).output().unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{flags:?}: {err}");
            assert!(err.contains(&expected), "{flags:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: {err}");
            assert!(!out.exists(), "{flags:?} wrote {}", out.display());
        }
    }
}
