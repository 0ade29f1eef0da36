//! Activation store throughput and size, per compression.
//!
//!     cargo run -p saepipe-data --release --example bench_store -- [--tokens N] [--d D] [--dir PATH]
//!
//! BENCH_KEEP=1 keeps the stores (e.g. to open them with other Parquet readers).
//!
//! Writes `tokens` rows of one hook of width `d` (synthetic residual-stream-like
//! data: Gaussian values with log-normal per-dimension scales and a few outlier
//! dimensions, as real LM activations have) with each compression, then reads the
//! store back sequentially and shuffled. MB/s count activation payload bytes
//! (tokens × d × dtype bytes); overhead compares bytes on disk with that payload.

use saepipe_data::activations::{Compression, Dtype, HookSpec, Rows, ShardedWriter, StoreMeta, WriterOptions};
use saepipe_data::reader::ActivationReader;
use saepipe_data::rng::SplitMix64;
use std::time::Instant;

fn gaussian(rng: &mut SplitMix64) -> f32 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// CPU seconds (user + system) of this process so far, from /proc (Linux); the
/// machine may be shared, so MB per CPU-second is printed next to wall-clock MB/s.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let tokens: usize = arg("--tokens", "131072").parse().expect("--tokens");
    let d: usize = arg("--d", "2048").parse().expect("--d");
    let base =
        std::path::PathBuf::from(arg("--dir", &std::env::temp_dir().join("saepipe-bench-store").to_string_lossy()));

    // 8192 distinct rows, pushed repeatedly (with their own row indices).
    let pool_rows = 8192.min(tokens);
    let mut rng = SplitMix64::new(42);
    let scales: Vec<f32> = (0..d).map(|j| if j % 509 == 7 { 40.0 } else { (0.6 * gaussian(&mut rng)).exp() }).collect();
    let pool: Vec<f32> = (0..pool_rows * d).map(|i| gaussian(&mut rng) * scales[i % d]).collect();
    let seq: Vec<u64> = (0..pool_rows as u64).map(|r| r / 128).collect();
    let pos: Vec<u32> = (0..pool_rows as u32).map(|r| r % 128).collect();
    let tok: Vec<u32> = (0..pool_rows as u32).map(|r| r.wrapping_mul(2654435761) % 50277).collect();

    println!(
        "tokens {tokens}, d {d}, payload f32 {:.1} MiB; dir {}",
        (tokens * d * 4) as f64 / (1 << 20) as f64,
        base.display()
    );
    println!(
        "{:<6} {:<12} {:>11} {:>13} {:>10} {:>12} {:>10} {:>14} {:>11}",
        "dtype",
        "compression",
        "write MB/s",
        "write MB/cpu-s",
        "read MB/s",
        "read MB/cpu-s",
        "shuf MB/s",
        "disk B/token",
        "vs payload"
    );
    let cases = [
        (Dtype::F32, Compression::None),
        (Dtype::F32, Compression::Lz4),
        (Dtype::F32, Compression::Zstd(1)),
        (Dtype::F32, Compression::SplitZstd(1)),
        (Dtype::F16, Compression::None),
        (Dtype::F16, Compression::SplitZstd(1)),
    ];
    let only = arg("--only", "");
    for (dtype, c) in cases {
        if !only.is_empty() && !only.split(',').any(|o| o == format!("{dtype:?}-{}", c.name())) {
            continue;
        }
        let dir = base.join(format!("{dtype:?}-{}", c.name()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = StoreMeta {
            model: "bench".into(),
            revision: None,
            weight_fingerprint: "-".into(),
            hooks: vec![HookSpec { name: "blocks.0.hook_resid_post".into(), d }],
            dtype,
            processing: serde_json::Value::Null,
            token_artifact: "-".into(),
            context_size: 128,
            extra: serde_json::Value::Null,
        };
        let mut opts = WriterOptions::for_meta(&meta);
        opts.compression = c;
        let payload = (tokens * d * dtype.bytes()) as f64;
        let (t, c0) = (Instant::now(), cpu_seconds());
        let mut w = ShardedWriter::open(&dir.join("partial"), meta, opts).expect("open");
        let mut row = 0usize;
        while row < tokens {
            let n = pool_rows.min(tokens - row);
            let hooks = [&pool[..n * d]];
            w.push(row as u64, &Rows { seq: &seq[..n], pos: &pos[..n], token: &tok[..n], hooks: &hooks })
                .expect("push");
            row += n;
        }
        let info = w.finish(&dir.join("store")).expect("finish");
        let (write_s, write_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let disk: u64 = info.shards.iter().map(|s| s.bytes).sum();

        let r = ActivationReader::open(&dir.join("store"), &["blocks.0.hook_resid_post"]).expect("reader");
        let (t, c0) = (Instant::now(), cpu_seconds());
        let mut n = 0;
        for b in r.batches(4096) {
            n += b.expect("batch").rows;
        }
        assert_eq!(n, tokens);
        let (read_s, read_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let r = r.shuffled(1, 65536);
        let t = Instant::now();
        let mut n = 0;
        for b in r.batches(4096) {
            n += b.expect("batch").rows;
        }
        assert_eq!(n, tokens);
        let shuf_s = t.elapsed().as_secs_f64();
        println!(
            "{:<6} {:<12} {:>11.0} {:>13.0} {:>10.0} {:>12.0} {:>10.0} {:>14.1} {:>10.2}%",
            format!("{dtype:?}"),
            c.name(),
            payload / write_s / 1e6,
            payload / write_cpu / 1e6,
            payload / read_s / 1e6,
            payload / read_cpu / 1e6,
            payload / shuf_s / 1e6,
            disk as f64 / tokens as f64,
            (disk as f64 / payload - 1.0) * 100.0
        );
        if std::env::var_os("BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
