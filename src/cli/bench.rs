use super::common::{backend, load_program, set_threads};
use super::*;
use geonetc::jit::{Blocking, ConvAlgorithm, JitOptions, OptLevel};
use geonetc::runtime::bench;

/// The JIT's knobs as given on the command line.
#[derive(Debug)]
pub struct Tuning {
    pub profile: bool,
    pub jit_opt: String,
    pub corr_block: Option<String>,
    pub gradw_block: Option<String>,
    pub conv: String,
}

impl Tuning {
    fn options(&self) -> Result<JitOptions, String> {
        let defaults = JitOptions::default();
        let blocking =
            |arg: &Option<String>, default: Blocking| arg.as_deref().map_or(Ok(default), Blocking::parse);
        Ok(JitOptions {
            opt_level: OptLevel::parse(&self.jit_opt)?,
            corr_blocking: blocking(&self.corr_block, defaults.corr_blocking)?,
            gradw_blocking: blocking(&self.gradw_block, defaults.gradw_blocking)?,
            conv: ConvAlgorithm::parse(&self.conv)?,
            profile: self.profile,
            ..defaults
        })
    }
}

#[derive(Debug)]
pub struct BenchArgs {
    pub file: PathBuf,
    pub batch: usize,
    pub steps: usize,
    pub backend: BackendChoice,
    pub threads: Option<usize>,
    pub format: Format,
    pub tuning: Tuning,
}

pub fn run(args: BenchArgs) -> ExitCode {
    let (program, _) = match load_program(&args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.batch == 0 {
        return fail("--batch must be at least 1");
    }
    if let Err(code) = set_threads(args.threads) {
        return code;
    }
    let options = match args.tuning.options() {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let r = match bench::bench(&program, args.batch, args.steps, backend(args.backend), &options) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_else(|_| "{}".into())),
        Format::Human => {
            println!(
                "{} on {} ({} threads), batch {}, {} steps",
                r.model, r.backend, r.threads, r.batch, r.steps
            );
            println!("  compile      {:9.1} ms", r.compile_ms);
            println!(
                "  forward      {:9.1} ms median {:9.1} ms min  {:8.1} samples/s  {:6.1} GFLOP/s",
                r.forward_ms_median, r.forward_ms_min, r.samples_per_s_forward, r.gflops_forward
            );
            println!(
                "  train step   {:9.1} ms median {:9.1} ms min  {:8.1} samples/s  {:6.1} GFLOP/s",
                r.train_step_ms_median, r.train_step_ms_min, r.samples_per_s_train, r.gflops_train
            );
            if let Some(p) = &r.profile {
                println!("{p}");
            } else if args.tuning.profile {
                println!("(--profile times the JIT's steps; the interpreter has none)");
            }
        }
    }
    ExitCode::SUCCESS
}
