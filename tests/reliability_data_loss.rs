//! Issue 15, data loss: every output goes through one atomic writer that writes through
//! symlinks, keeps the mode, refuses devices, fifos and hard-linked files, and cleans the temp
//! files of killed runs; no output replaces an input; `infer` writes the format the output's
//! extension names; interruption exits 130 with a checkpoint, SIGTERM included; `--out` is
//! locked.

use geonetc::output::{self, write_atomically};
use geonetc::seismic::segy::{Kind, SeismicFile};
use ndarray::{ArrayD, IxDyn};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{geonetc, s};

fn tmp(name: &str) -> PathBuf {
    common::tmp("rel-loss", name)
}

/// A 2-D model that passes its input through unchanged (weights from `init`, no file needed).
const IDENTITY_2D: &str = "model id {\n    input x: [1, 8, 8]\n    y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}\n";

/// A little-endian Seismic Unix file of `traces` traces of `samples` IEEE samples, dt 4 ms.
fn write_su(path: &Path, traces: usize, samples: usize) -> Vec<f32> {
    let mut bytes = vec![];
    let mut values = vec![];
    for t in 0..traces {
        let mut h = [0u8; 240];
        h[0..4].copy_from_slice(&(t as i32 + 1).to_le_bytes());
        h[20..24].copy_from_slice(&(1000 + t as i32).to_le_bytes()); // cdp
        h[114..116].copy_from_slice(&(samples as u16).to_le_bytes());
        h[116..118].copy_from_slice(&4000u16.to_le_bytes());
        bytes.extend_from_slice(&h);
        for k in 0..samples {
            let v = ((t * 7 + k * 3) % 11) as f32 - 5.0 + 0.25;
            values.push(v);
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
    values
}

#[test]
fn atomic_writes_go_through_symlinks_and_keep_the_mode() {
    let d = tmp("symlink");
    let real = d.join("real.txt");
    std::fs::write(&real, "old").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = d.join("link.txt");
    std::os::unix::fs::symlink("real.txt", &link).unwrap();
    write_atomically(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
    assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);

    // The same through `fmt`, a command that rewrites its input.
    let src = d.join("m.geonet");
    std::fs::write(&src, "model m {\ninput x: [1, 8]\ny = x -> relu\noutput y\n}\n").unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let src_link = d.join("m_link.geonet");
    std::os::unix::fs::symlink(&src, &src_link).unwrap();
    let (code, _, err) = geonetc(&["fmt", s(&src_link)]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(&src_link).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&src).unwrap().contains("    input x: [1, 8]"));
    assert_eq!(std::fs::metadata(&src).unwrap().permissions().mode() & 0o777, 0o640);
}

#[test]
fn devices_fifos_directories_and_hard_links_are_refused() {
    let d = tmp("special");
    let err = write_atomically(Path::new("/dev/null"), b"x").unwrap_err();
    assert!(err.contains("/dev"), "{err}");
    let fifo = d.join("pipe");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: mkfifo on a fresh path in our own temp folder.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = write_atomically(&fifo, b"x").unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo_like());
    let err = write_atomically(&d, b"x").unwrap_err();
    assert!(err.contains("is a directory"), "{err}");

    let a = d.join("a.npy");
    std::fs::write(&a, "old").unwrap();
    std::fs::hard_link(&a, d.join("b.npy")).unwrap();
    let err = write_atomically(&a, b"new").unwrap_err();
    assert!(err.contains("hard link"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("b.npy")).unwrap(), "old");

    // The command line says it in one line, exit 2, before running anything.
    let prog = d.join("id.geonet");
    std::fs::write(&prog, IDENTITY_2D).unwrap();
    let x = d.join("x.npy");
    ndarray_npy::write_npy(&x, &ArrayD::<f32>::ones(IxDyn(&[1, 8, 8]))).unwrap();
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&x), "--output", "/dev/null.npy"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn temp_files_of_dead_writers_are_removed_and_nothing_else() {
    let d = tmp("stale");
    // A process id that is certainly gone: a child we started and waited for.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = d.join(format!(".model.safetensors.{dead}-0.geonetc.tmp"));
    let live = d.join(format!(".model.safetensors.{}-7.geonetc.tmp", std::process::id()));
    let foreign = d.join(".notes.tmp");
    for p in [&stale, &live, &foreign] {
        std::fs::write(p, "x").unwrap();
    }
    write_atomically(&d.join("model.safetensors"), b"weights").unwrap();
    assert!(!stale.exists(), "the dead writer's temp file is still there");
    assert!(live.exists() && foreign.exists());
    // Our own temp files never stay behind.
    let ours: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(&format!(".{}-", std::process::id())))
        .filter(|e| e.path() != live)
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[test]
fn no_output_replaces_an_input() {
    let d = tmp("inputs");
    let prog = d.join("id.geonet");
    std::fs::write(&prog, IDENTITY_2D).unwrap();
    let x = d.join("x.npy");
    ndarray_npy::write_npy(&x, &ArrayD::<f32>::ones(IxDyn(&[1, 8, 8]))).unwrap();
    let before = std::fs::read(&x).unwrap();
    // The input itself, through another spelling, and through a hard link (same inode).
    let alias = d.join(".").join("x.npy");
    let linked = d.join("x_link.npy");
    std::fs::hard_link(&x, &linked).unwrap();
    for out in [&x, &alias, &linked] {
        let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&x), "--output", s(out)]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("refusing to overwrite an input"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(std::fs::read(&x).unwrap(), before);
    // The program (the extension check comes first, so name it .npy through a symlink).
    let prog_npy = d.join("prog.npy");
    std::os::unix::fs::symlink(&prog, &prog_npy).unwrap();
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&x), "--output", s(&prog_npy)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the program"), "{err}");
    // The plot may not replace the input either.
    let (code, _, err) =
        geonetc(&["infer", s(&prog), "--input", s(&x), "--output", s(&d.join("y.npy")), "--plot", s(&x)]);
    assert_eq!(code, 2, "{err}");
    assert!(!d.join("y.npy").exists());
    assert_eq!(std::fs::read(&x).unwrap(), before);

    // `save =` naming the training data or the program itself.
    let t = d.join("t.npy");
    ndarray_npy::write_npy(&x, &ArrayD::<f32>::ones(IxDyn(&[4, 1, 8]))).unwrap();
    ndarray_npy::write_npy(&t, &ArrayD::<f32>::ones(IxDyn(&[4, 1, 8]))).unwrap();
    let data = std::fs::read(&t).unwrap();
    for save in ["t.npy", "train.geonet"] {
        let train = d.join("train.geonet");
        std::fs::write(
            &train,
            format!(
                "model m {{\n    input x: [1, 8]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}}\ntrain {{\n    data   = npy(input = \"x.npy\", target = \"t.npy\")\n    epochs = 1\n    save   = \"{save}\"\n}}\n"
            ),
        )
        .unwrap();
        let program_text = std::fs::read(&train).unwrap();
        let (code, _, err) = geonetc(&["run", s(&train), "--backend", "interp"]);
        assert_eq!(code, 2, "save = {save}: {err}");
        assert!(err.contains("refusing to overwrite an input"), "{err}");
        assert_eq!(std::fs::read(&t).unwrap(), data);
        assert_eq!(std::fs::read(&train).unwrap(), program_text);
    }
}

#[test]
fn infer_writes_the_format_the_output_extension_names() {
    let d = tmp("formats");
    let prog = d.join("id.geonet");
    std::fs::write(&prog, IDENTITY_2D).unwrap();
    let su = d.join("in.su");
    let values = write_su(&su, 12, 20);
    // SU → SEG-Y: a valid SEG-Y file, same samples, trace headers kept.
    let sgy = d.join("out.sgy");
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&su), "--output", s(&sgy)]);
    assert_eq!(code, 0, "{err}");
    let f = SeismicFile::open(&sgy).unwrap();
    assert_eq!(f.kind, Kind::Segy);
    assert_eq!((f.traces(), f.samples, f.dt_us), (12, 20, 4000));
    let got: Vec<f32> = f.section().expect("section").iter().copied().collect();
    assert_eq!(got, values);
    assert_eq!(f.trace_header(3).unwrap().cdp, 1003);
    // SEG-Y → SU: back again, readable as SU.
    let back = d.join("back.su");
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&sgy), "--output", s(&back)]);
    assert_eq!(code, 0, "{err}");
    let f = SeismicFile::open(&back).unwrap();
    assert_eq!(f.kind, Kind::Su);
    assert_eq!((f.traces(), f.samples), (12, 20));
    assert_eq!(f.section().expect("section").iter().copied().collect::<Vec<f32>>(), values);
    // SU → .npy: the section as [time, traces].
    let npy = d.join("out.npy");
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&su), "--output", s(&npy)]);
    assert_eq!(code, 0, "{err}");
    let a: ArrayD<f32> = ndarray_npy::read_npy(&npy).unwrap();
    assert_eq!(a.shape(), &[20, 12]);
    assert_eq!(a[[5, 2]], values[2 * 20 + 5]);
    // An extension that names no format: refused before anything runs.
    let (code, _, err) = geonetc(&["infer", s(&prog), "--input", s(&su), "--output", s(&d.join("out.dat"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(".sgy") && !d.join("out.dat").exists(), "{err}");
}

const LONG_RUN: &str = "model m {
    input t: [1, 32]
    y = t -> conv(2, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)
    output y
}
optimizer adam { lr = 1e-3 }
train {
    data   = synthetic(count = 64, noise = 0.5, seed = 1)
    batch  = 4
    epochs = 1000000
    save   = \"m.safetensors\"
}
";

fn spawn_run(prog: &Path, out: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["run", s(prog), "--out", s(out), "--backend", "interp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the run has written its first checkpoint (so it is past start-up).
fn wait_for(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn sigterm_saves_a_checkpoint_exits_130_and_out_is_locked() {
    let d = tmp("signals");
    let prog = d.join("m.geonet");
    std::fs::write(&prog, LONG_RUN).unwrap();
    let out = d.join("out");
    let child = spawn_run(&prog, &out);
    wait_for(&out.join("m.ckpt.safetensors"));
    // A second run into the same folder fails at once, naming the first one.
    let (code, _, err) = geonetc(&["run", s(&prog), "--out", s(&out), "--backend", "interp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("pid {}", child.id())), "{err}");
    // SIGTERM, as batch schedulers send it: a checkpoint, exit 130.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: checkpoint saved"), "{err}");
    let listing: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!listing.iter().any(|n| n.ends_with(".tmp")), "{listing:?}");
    // The checkpoint resumes (the lock was released with the process).
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains("wrote ") && stdout.contains("m.ckpt.safetensors"), "{stdout}");
    assert!(output::DirLock::acquire(&out).is_ok());
}
