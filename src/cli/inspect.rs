use super::Format;
use geonetc::seismic;
use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path, format: Format) -> ExitCode {
    let s = match seismic::inspect(file) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&s).unwrap_or_else(|_| "{}".into())),
        Format::Human => {
            println!("{}", s.file);
            let rev = s.revision.map_or(String::new(), |r| format!(" rev {r}"));
            let endian = s.endianness.map_or(String::new(), |e| format!(", {e:?}-endian"));
            println!("  format       {}{rev}{endian}, samples {}", s.format, s.sample_format);
            if let Some(shape) = &s.shape {
                println!("  shape        {shape:?}");
            }
            println!("  traces       {}", s.traces);
            println!("  samples      {} per trace", s.samples);
            if s.dt_us > 0 {
                println!(
                    "  interval     {} µs ({:.3} s per trace)",
                    s.dt_us,
                    s.dt_us as f64 * s.samples.saturating_sub(1) as f64 / 1e6
                );
            }
            println!("  values       min {:.6}  max {:.6}  rms {:.6}", s.min, s.max, s.rms);
            for w in &s.warnings {
                println!("  warning      {w}");
            }
            if let Some(t) = &s.textual_header {
                println!("  textual header (first lines):");
                for l in t.lines().take(6) {
                    println!("    {l}");
                }
            }
        }
    }
    ExitCode::SUCCESS
}
