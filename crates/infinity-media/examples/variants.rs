//! Renders the 1280, 640 and 160 pixel variants of each file given on the
//! command line and prints the outcome and time for each, then the total.
//!
//! Usage: `variants [--out DIR] [--repeat N] FILE...`. With `--out`, the
//! variants are written as `DIR/<file stem>-<size>.<extension>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use infinity_media::{render, Limits};

const SIZES: [u32; 3] = [1280, 640, 160];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut out_dir: Option<PathBuf> = None;
    let mut repeat = 1;
    let mut files = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out_dir = args.next().map(PathBuf::from),
            "--repeat" => repeat = args.next().ok_or("--repeat needs a count")?.parse()?,
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        return Err("usage: variants [--out DIR] [--repeat N] FILE...".into());
    }

    let limits = Limits::default();
    let mut total = Duration::ZERO;
    for path in &files {
        let bytes = std::fs::read(path)?;
        let started = Instant::now();
        let mut outcome = render(&bytes, &limits, &SIZES);
        for _ in 1..repeat {
            outcome = render(&bytes, &limits, &SIZES);
        }
        let elapsed = started.elapsed();
        total += elapsed;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match outcome {
            Ok(rendition) => {
                let sizes: Vec<String> = rendition
                    .variants
                    .iter()
                    .map(|variant| {
                        format!("{}x{}.{}", variant.width, variant.height, variant.extension)
                    })
                    .collect();
                println!("{name}: ok {} in {elapsed:.1?}", sizes.join(" "));
                if let Some(dir) = &out_dir {
                    write_variants(dir, path, &rendition.variants)?;
                }
            }
            Err(error) => println!("{name}: {} {error} in {elapsed:.1?}", error.status()),
        }
    }
    println!(
        "total: {} files x {repeat} in {:.3} s",
        files.len(),
        total.as_secs_f64()
    );
    Ok(())
}

fn write_variants(
    dir: &Path,
    source: &Path,
    variants: &[infinity_media::Variant],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stem = source.file_stem().unwrap_or_default().to_string_lossy();
    for variant in variants {
        let name = format!("{stem}-{}.{}", variant.size, variant.extension);
        std::fs::write(dir.join(name), &variant.bytes)?;
    }
    Ok(())
}
