//! `mft finetune --device cuda` end to end, on whatever this machine is.
//!
//! Built without the `cuda` feature, asking for CUDA is one line of error naming the flag and
//! the rebuild, a non-zero exit, and nothing written. Built with it, on a machine without the
//! NVIDIA driver or cuBLAS, the run prints one notice (`cuda: <reason>; running on the CPU`) and
//! continues on the CPU, writing an adapter byte-identical to `--device cpu`'s. (On a GPU
//! machine the tiny fixture's products are all below the offload threshold, so the adapter is
//! still byte-identical, and the log names the device instead of a notice.)
//!
//! Host-only, like `cli.rs`: the test spawns the `mft` binary.
#![cfg(not(target_arch = "aarch64"))]

mod run_mft;

use std::process::{Command, Output};

use run_mft::{finetune_args, fixture, ids_file, stderr};

fn mft(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mft")).args(args).output().expect("mft runs")
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_one_line_naming_the_flag_and_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let out = dir.path().join("run");
    let run = mft(&finetune_args(&fixture(), &data, &out, &["--steps", "2", "--device", "cuda"]));
    let err = stderr(&run);
    assert!(!run.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--device cuda") && err.contains("--features cuda"), "{err}");
    assert!(!out.join("adapter_model.safetensors").exists(), "nothing trained");
    // The demo refuses it too, before any work.
    let demo_out = dir.path().join("demo").display().to_string();
    let args = ["finetune", "--device", "cuda", "--out", &demo_out].map(String::from);
    let demo = mft(&args);
    let err = stderr(&demo);
    assert!(!demo.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("--features cuda"), "{err}");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_falls_back_to_the_cpu_with_one_notice_and_the_same_adapter() {
    use mft_std::mft_kernels::cuda::libraries_present;

    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let adapter = |device: &str| {
        let out = dir.path().join(device);
        let flags = ["--steps", "4", "--lr", "0.01", "--device", device, "--quiet"];
        let run = mft(&finetune_args(&fixture(), &data, &out, &flags));
        assert!(run.status.success(), "--device {device}: {}", stderr(&run));
        (std::fs::read(out.join("adapter_model.safetensors")).unwrap(), stderr(&run))
    };
    let (cpu, cpu_err) = adapter("cpu");
    let (cuda, cuda_err) = adapter("cuda");
    assert!(!cpu_err.contains("cuda"), "no notice on the CPU: {cpu_err}");
    let notices: Vec<&str> = cuda_err.lines().filter(|l| l.starts_with("cuda: ")).collect();
    match libraries_present() {
        Err(why) => {
            let expected = format!("cuda: {why}; running on the CPU");
            assert_eq!(notices, [expected.as_str()], "stderr: {cuda_err}");
        }
        // A machine with the driver: either it ran (the log names the device) or the driver
        // refused to start, which is the notice again.
        Ok(()) => assert_eq!(notices.len(), 1, "stderr: {cuda_err}"),
    }
    assert!(cpu == cuda, "the adapters of --device cpu and --device cuda differ");
}
