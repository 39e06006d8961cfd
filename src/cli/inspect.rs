use super::Format;
use geonetc::seismic;
use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path, format: Format, options: seismic::geometry::GeometryOptions) -> ExitCode {
    let s = match seismic::inspect_with(file, options, 64 << 20) {
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
            if let Some(g) = &s.geometry {
                print_geometry(g);
            }
            if let Some(g) = &s.gathers {
                println!(
                    "  gathers      {} by field record (byte 9), {} by CDP (byte 21)",
                    g.field_record, g.cdp
                );
            }
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

fn print_geometry(g: &seismic::geometry::Geometry) {
    use seismic::geometry::{Layout, Sorting};
    let axis =
        |name: &str, field: seismic::geometry::HeaderField, r: &Option<seismic::geometry::AxisRange>| {
            if let Some(r) = r {
                println!(
                    "  {name:<12} {}..{} step {} ({} values, {} present; byte {}, {} bytes)",
                    r.first, r.last, r.step, r.count, r.distinct, field.byte, field.width
                );
            }
        };
    let layout = match g.layout {
        Layout::Line => "2-D line",
        Layout::Volume => "3-D volume",
        Layout::Irregular => "not a regular volume",
    };
    let sorting = match g.sorting {
        Sorting::InlineMajor => "inline-major",
        Sorting::CrosslineMajor => "crossline-major",
        Sorting::Unsorted => "unsorted",
    };
    println!("  geometry     {layout}, {sorting}");
    axis("inlines", g.inline_field, &g.inlines);
    axis("crosslines", g.crossline_field, &g.crosslines);
    if g.layout == Layout::Volume {
        let first: Vec<String> = g.missing_first.iter().map(|[i, x]| format!("{i}/{x}")).collect();
        let more = if g.missing > first.len() { ", ..." } else { "" };
        match g.missing {
            0 => println!("  missing      none"),
            n => println!("  missing      {n} traces (inline/crossline {}{more})", first.join(", ")),
        }
    }
    if g.dead > 0 {
        let first: Vec<String> = g.dead_first.iter().map(usize::to_string).collect();
        let more = if g.dead > first.len() { ", ..." } else { "" };
        println!("  dead         {} traces (trace id code 2: traces {}{more})", g.dead, first.join(", "));
    }
}
