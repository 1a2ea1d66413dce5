//! Command-line parsing for xtask, by hand to keep xtask free of dependencies.

use crate::cross::QemuCpu;

pub const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                       everything CI checks, in order: fmt, tidy, clippy (host and
                           aarch64), fuzz targets check, host tests, no_std builds,
                           aarch64 tests under qemu
  test [--target host]     the workspace tests on this machine
  test --target aarch64 [--sve-vl 128,256,512] [--neon-only]
                           cross-build the tests for aarch64-unknown-linux-gnu (release) and
                           run them under qemu-aarch64 once per SVE vector length (bits) and
                           once on a NEON-only core; no flags: all four configurations
  nostd                    build mft-core, mft-kernels and mft-models for targets without std
  help                     this text

Arguments after `--` go to the test binaries (a name filter, --nocapture, ...).";

/// A parsed xtask invocation.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Ci,
    Test { target: TestTarget, filter: Vec<String> },
    NoStd,
}

/// Where `cargo xtask test` runs the tests.
#[derive(Debug, PartialEq, Eq)]
pub enum TestTarget {
    Host,
    Aarch64(Vec<QemuCpu>),
}

/// Parse the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let (args, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "ci" => no_more(rest).map(|()| Command::Ci),
        "nostd" => no_more(rest).map(|()| Command::NoStd),
        "test" => parse_test(rest, passthrough),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn no_more(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(format!("unexpected argument `{arg}`")),
    }
}

fn parse_test(rest: &[String], filter: Vec<String>) -> Result<Command, String> {
    let mut target = None;
    let mut sve_bits: Option<Vec<usize>> = None;
    let mut neon_only = false;
    let mut i = 0;
    while i < rest.len() {
        let (flag, inline_value) = match rest[i].split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (rest[i].as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline_value.clone() {
                return Ok(v);
            }
            i += 1;
            rest.get(i).cloned().ok_or_else(|| format!("`{flag}` needs a value"))
        };
        match flag {
            "--target" => target = Some(value()?),
            "--sve-vl" => sve_bits = Some(parse_vector_lengths(&value()?)?),
            "--neon-only" => neon_only = true,
            other => return Err(format!("unexpected argument `{other}` to `test`")),
        }
        i += 1;
    }
    let target = match target.as_deref() {
        None | Some("host") => {
            if sve_bits.is_some() || neon_only {
                return Err("--sve-vl and --neon-only need `--target aarch64`".into());
            }
            TestTarget::Host
        }
        Some("aarch64") => {
            let configs = match (sve_bits, neon_only) {
                (None, false) => QemuCpu::all(),
                (bits, neon) => {
                    let mut configs: Vec<QemuCpu> =
                        bits.unwrap_or_default().into_iter().map(QemuCpu::Sve).collect();
                    if neon {
                        configs.push(QemuCpu::NeonOnly);
                    }
                    configs
                }
            };
            TestTarget::Aarch64(configs)
        }
        Some(other) => return Err(format!("unknown test target `{other}` (host or aarch64)")),
    };
    Ok(Command::Test { target, filter })
}

/// `128,256,512` → bits; each a multiple of 128 from 128 to 2048, as SVE allows.
fn parse_vector_lengths(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|item| {
            let bits: usize =
                item.trim().parse().map_err(|_| format!("--sve-vl: `{item}` is not a number"))?;
            if !bits.is_multiple_of(128) || !(128..=2048).contains(&bits) {
                return Err(format!(
                    "--sve-vl: {bits} is not an SVE vector length (a multiple of 128 from 128 to 2048 bits)"
                ));
            }
            Ok(bits)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn aarch64_without_flags_runs_all_four_configurations() {
        assert_eq!(
            parse_str("test --target aarch64").unwrap(),
            Command::Test {
                target: TestTarget::Aarch64(vec![
                    QemuCpu::Sve(128),
                    QemuCpu::Sve(256),
                    QemuCpu::Sve(512),
                    QemuCpu::NeonOnly
                ]),
                filter: vec![],
            }
        );
    }

    #[test]
    fn flags_select_configurations() {
        assert_eq!(
            parse_str("test --target=aarch64 --sve-vl 256 -- arena --nocapture").unwrap(),
            Command::Test {
                target: TestTarget::Aarch64(vec![QemuCpu::Sve(256)]),
                filter: vec!["arena".into(), "--nocapture".into()],
            }
        );
        assert_eq!(
            parse_str("test --target aarch64 --neon-only --sve-vl=128,2048").unwrap(),
            Command::Test {
                target: TestTarget::Aarch64(vec![
                    QemuCpu::Sve(128),
                    QemuCpu::Sve(2048),
                    QemuCpu::NeonOnly
                ]),
                filter: vec![],
            }
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert!(parse_str("test --target aarch64 --sve-vl 100").unwrap_err().contains("100"));
        assert!(parse_str("test --target aarch64 --sve-vl").unwrap_err().contains("needs a value"));
        assert!(parse_str("test --sve-vl 128").unwrap_err().contains("--target aarch64"));
        assert!(parse_str("test --target riscv").unwrap_err().contains("riscv"));
        assert!(parse_str("bench").unwrap_err().contains("bench"));
        assert!(parse_str("ci now").unwrap_err().contains("now"));
    }

    #[test]
    fn no_command_is_help() {
        assert_eq!(parse_str("").unwrap(), Command::Help);
        assert_eq!(
            parse_str("test").unwrap(),
            Command::Test { target: TestTarget::Host, filter: vec![] }
        );
    }
}
