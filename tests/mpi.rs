//! Data-parallel training under `mpirun`: N ranks on the same global batches give the weights
//! one process gives (byte for byte), with and without batchnorm, on both backends; `--resume`
//! with another rank count; a rank that dies ends the job and leaves the last checkpoint.
//!
//! Needs Open MPI's `mpirun` and a geonetc built with the cargo feature `mpi`: the binary
//! `GEONETC_MPI_BIN` names, or this build's own when it has the feature. So CI builds only the
//! binary with the feature (`cargo build --features mpi --bin geonetc`) and runs this file from
//! the default test build (`.ci/run`). Skipped, with a note, when either is missing; a plain
//! `cargo test` never builds MPI itself.

mod common;

use common::{s, tmp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The geonetc built with MPI: `GEONETC_MPI_BIN` (a relative path from the package's folder),
/// or this build's when it has the feature.
fn mpi_geonetc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GEONETC_MPI_BIN") {
        return Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(p));
    }
    cfg!(feature = "mpi").then(|| PathBuf::from(env!("CARGO_BIN_EXE_geonetc")))
}

fn mpirun_available() -> bool {
    let found = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: mpirun not found; skipping the MPI tests");
        return false;
    }
    match mpi_geonetc() {
        Some(bin) if bin.is_file() => true,
        Some(bin) => panic!("GEONETC_MPI_BIN names {}, which is not a file", bin.display()),
        None => {
            eprintln!(
                "note: no geonetc with MPI (set GEONETC_MPI_BIN, or test with --features mpi); skipping the MPI tests"
            );
            false
        }
    }
}

fn mpi_bin() -> PathBuf {
    mpi_geonetc().expect("checked by mpirun_available")
}

/// `mpirun -np N geonetc ARGS` as root in a container, one compute thread per rank.
fn mpirun(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    // Waiting ranks yield rather than spin: this machine has fewer cores than ranks.
    c.args(["-np", &np.to_string(), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none"])
        .args(["--mca", "mpi_yield_when_idle", "1"])
        .arg(mpi_bin())
        .args(args)
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// The same binary as the ranks, without a launcher: one process.
fn alone(args: &[&str]) -> Command {
    let mut c = Command::new(mpi_bin());
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small denoiser on synthetic 16×16 sections: 36 training samples in global batches of
/// `batch` (the last one smaller when `batch` does not divide 36), 4 held out.
fn program(dir: &Path, batchnorm: bool, batch: usize) -> PathBuf {
    // No bias before a batchnorm (it would cancel; its gradient is rounding noise, which adam
    // turns into steps of the full learning rate).
    let (norm, nobias) = if batchnorm { (" -> batchnorm", ", bias=false") } else { ("", "") };
    program_with(dir, &format!("conv(4, kernel=3, pad=same{nobias}){norm} -> relu"), batch)
}

/// Two 16-channel convs, each with a batchnorm: on the JIT the second runs Winograd forward and
/// backward (the cost model's pick at 16×16), so its transforms sum both batchnorms' statistics
/// (the second's forward, the first's backward) per tile.
fn program_wide(dir: &Path, batch: usize) -> PathBuf {
    let cbr = "conv(16, kernel=3, pad=same, bias=false) -> batchnorm -> relu";
    program_with(dir, &format!("{cbr} -> {cbr}"), batch)
}

fn program_with(dir: &Path, layers: &str, batch: usize) -> PathBuf {
    let text = format!(
        "model small {{\n    input x: [1, 16, 16]\n    h = x -> {layers}\n    n = h -> conv(1, kernel=3, pad=same)\n    output sub(x, n)\n}}\n\noptimizer adam {{ lr = 1e-2 }}\n\ntrain {{\n    data     = synthetic(shape = [1, 16, 16], count = 40, noise = 0.5, seed = 5)\n    batch    = {batch}\n    epochs   = 2\n    validate = 0.1\n    save     = \"small.safetensors\"\n}}\n"
    );
    let p = dir.join("small.geonet");
    std::fs::write(&p, text).unwrap();
    p
}

fn train(np: Option<usize>, file: &Path, out: &Path, backend: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["run", s(file), "--out", s(out), "--backend", backend, "--threads", "1"];
    args.extend_from_slice(extra);
    let out_dir = out.to_path_buf();
    let run = match np {
        None => alone(&args),
        Some(n) => mpirun(n, &args),
    };
    let printed = ok(run);
    let stdout = String::from_utf8_lossy(&printed.stdout);
    // Rank 0 alone prints the summary.
    assert_eq!(stdout.matches("final epoch").count(), 1, "{stdout}");
    std::fs::read(out_dir.join("small.safetensors")).unwrap()
}

/// Every tensor of a weights file as f64, by name.
fn tensors(bytes: &[u8]) -> Vec<(String, Vec<f64>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut out: Vec<(String, Vec<f64>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let v = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64);
            (name, v.collect())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The largest relative difference between two weights files of the same model: per element,
/// or (`per_tensor`) relative to the largest magnitude of the element's tensor, so that a weight
/// near zero does not turn f32 round-off into a large ratio.
fn max_relative_difference(a: &[u8], b: &[u8], per_tensor: bool) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let scale = va.iter().chain(vb).fold(0.0f64, |m, v| m.max(v.abs()));
        for (x, y) in va.iter().zip(vb) {
            let of = if per_tensor { scale } else { x.abs().max(y.abs()) };
            worst = worst.max((x - y).abs() / of.max(1e-30));
        }
    }
    worst
}

/// Byte-identical weights for 1, 2 and 4 ranks against one process, on both backends, with
/// and without batchnorm. On the JIT this rests on: weight-gradient chunks and batchnorm's
/// moment chunks that never hold two samples (a 1-sample shard of the last batch, 4 samples on
/// 4 ranks, has the chunks one process has); batchnorm's statistics per sample, added in
/// global sample order on every rank as in one process, around the same shift (the running mean);
/// the per-rank loss scale (global batch / shard) a power of two here.
fn same_weights_for_every_rank_count(name: &str, batchnorm: bool, backend: &str) {
    if !mpirun_available() {
        return;
    }
    let dir = tmp("mpi", name);
    let file = program(&dir, batchnorm, 8);
    same_weights_for(name, &dir, &file, backend);
}

fn same_weights_for(name: &str, dir: &Path, file: &Path, backend: &str) {
    let one = train(None, file, &dir.join("alone"), backend, &[]);
    for np in [1, 2, 4] {
        let got = train(Some(np), file, &dir.join(format!("np{np}")), backend, &[]);
        let d = max_relative_difference(&got, &one, false);
        assert!(
            got == one,
            "{name}: the weights of {np} ranks differ from one process's (by {d:e} relative)"
        );
    }
}

/// The same with batchnorm statistics summed in Winograd transforms (their tiles never hold two
/// samples, and the shift is the running mean, the same on every rank).
#[test]
fn ranks_with_batchnorm_summed_in_winograd_transforms_give_the_weights_of_one_process() {
    if !mpirun_available() {
        return;
    }
    let dir = tmp("mpi", "bn-wide-jit");
    let file = program_wide(&dir, 8);
    same_weights_for("bn-wide-jit", &dir, &file, "jit");
}

#[test]
fn ranks_give_the_weights_of_one_process_interp() {
    same_weights_for_every_rank_count("plain-interp", false, "interp");
}

#[test]
fn ranks_give_the_weights_of_one_process_jit() {
    same_weights_for_every_rank_count("plain-jit", false, "jit");
}

#[test]
fn ranks_with_batchnorm_give_the_weights_of_one_process_interp() {
    same_weights_for_every_rank_count("bn-interp", true, "interp");
}

#[test]
fn ranks_with_batchnorm_give_the_weights_of_one_process_jit() {
    same_weights_for_every_rank_count("bn-jit", true, "jit");
}

#[test]
fn uneven_shards_give_the_weights_of_one_process() {
    if !mpirun_available() {
        return;
    }
    // Global batches of 6 on 4 ranks: shards of 2, 2, 1 and 1 samples.
    let dir = tmp("mpi", "uneven");
    let file = program(&dir, true, 6);
    let one = train(None, &file, &dir.join("alone"), "interp", &[]);
    let got = train(Some(4), &file, &dir.join("np4"), "interp", &[]);
    assert!(got == one, "the weights of 4 uneven shards differ from one process's");
}

#[test]
fn resume_works_with_another_rank_count() {
    if !mpirun_available() {
        return;
    }
    let dir = tmp("mpi", "resume");
    let file = program(&dir, true, 8);
    let one = train(None, &file, &dir.join("alone"), "interp", &[]);
    // One epoch on 2 ranks, the second on 4 ranks from its checkpoint.
    let out = dir.join("split");
    train(Some(2), &file, &out, "interp", &["--epochs", "1"]);
    let ckpt = out.join("small.ckpt.safetensors");
    let got = train(Some(4), &file, &out, "interp", &["--resume", s(&ckpt)]);
    assert!(got == one, "1 epoch on 2 ranks + 1 on 4 ranks differs from 2 epochs in one process");
}

#[test]
fn too_few_samples_for_the_ranks_is_refused_before_training() {
    if !mpirun_available() {
        return;
    }
    // 36 training samples in batches of 8: the last batch holds 4, fewer than 5 ranks.
    let dir = tmp("mpi", "too-few");
    let file = program(&dir, false, 8);
    let out = dir.join("out");
    let o = mpirun(5, &["run", s(&file), "--out", s(&out), "--threads", "1"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the smallest global batch holds 4 samples"), "{err}");
    assert!(err.contains("fewer than the 5 ranks"), "{err}");
    assert!(!out.join("small.safetensors").exists());
}

/// The pid of the process whose environment holds both `mark` and `OMPI_COMM_WORLD_RANK=rank`.
fn rank_pid(mark: &str, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let has = |v: &str| vars.contains(&v.as_bytes());
        (has(mark) && has(&want)).then_some(pid)
    })
}

#[test]
fn a_rank_that_dies_ends_the_job_and_leaves_the_last_checkpoint() {
    if !mpirun_available() {
        return;
    }
    let dir = tmp("mpi", "dies");
    let file = program(&dir, false, 8);
    let out = dir.join("out");
    let mark = format!("GEONETC_MPI_TEST={}", dir.display());
    let (key, value) = mark.split_once('=').unwrap();
    let mut job = mpirun(2, &["run", s(&file), "--out", s(&out), "--backend", "interp", "--threads", "1"]);
    job.args(["--epochs", "100000"]).env(key, value).stdout(std::process::Stdio::piped());
    job.stderr(std::process::Stdio::piped());
    let mut child = job.spawn().unwrap();
    let ckpt = out.join("small.ckpt.safetensors");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = rank_pid(&mark, 1).expect("rank 1's process");
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    // The job must end by itself (rank 0 must not wait forever for the dead rank).
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the job still runs 60 s after rank 1 died");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().unwrap();
    assert!(!status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rank 1"), "the launcher names the rank that died: {err}");
    // The last checkpoint is whole: a resume reads it (and has nothing left to do at epoch 1).
    let (code, stdout, stderr) =
        common::geonetc(&["run", s(&file), "--out", s(&out), "--resume", s(&ckpt), "--epochs", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("nothing trained"), "{stdout}");
}
