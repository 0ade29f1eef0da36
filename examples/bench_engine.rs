//! Engine overhead benchmark (not a test): prints
//!   1. the time to rerun a fully cached 100-stage pipeline (load + plan + run),
//!   2. the time to `plan` 1,000 stage instances,
//!   3. file fingerprinting throughput on a 1 GiB file.
//!
//! Run: cargo run --release --example bench_engine

use saepipe::exec::plan::{Selection, VerifyPolicy, make_plan};
use saepipe::exec::scheduler::{RunOptions, run};
use saepipe::pipeline::{LoadOptions, load};
use saepipe_cache::Cache;
use std::io::Write;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(&dir.path().join("cache"))?;
    let opts = RunOptions { jobs: 2, keep_going: false, quiet: true, isolate: false, slurm: None };
    let ops = saepipe::ops::registry();

    // 1. 100 stages: ten chains of ten.
    let mut yaml = String::from("version: 1\nname: bench100\nstages:\n");
    for c in 0..10 {
        for s in 0..10 {
            yaml.push_str(&format!(
                "  s{c}_{s}:\n    op: debug_shards\n    seed: {c}\n    shards: 2\n    shard_bytes: 256\n"
            ));
            if s > 0 {
                yaml.push_str(&format!("    inputs: [s{c}_{}]\n", s - 1));
            }
        }
    }
    let f100 = dir.path().join("p100.yaml");
    std::fs::write(&f100, &yaml)?;
    let p = load(&ops, &f100, &LoadOptions::default())?;
    let plan = make_plan(&p, &cache, &Selection::default(), VerifyPolicy::Auto)?;
    run(&p, &cache, &plan, &opts)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = load(&ops, &f100, &LoadOptions::default())?;
        let plan = make_plan(&p, &cache, &Selection::default(), VerifyPolicy::Auto)?;
        let report = run(&p, &cache, &plan, &opts)?;
        assert!(report.stages.iter().all(|s| s.status == "hit"));
        times.push(t.elapsed().as_secs_f64());
    }
    println!("cached rerun of 100 stages: {:.3} s (median of 5; target < 0.5 s)", median(times));

    // 2. plan of 1,000 instances.
    let items: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let yaml = format!(
        "version: 1\nname: bench1000\nstages:\n  s:\n    op: debug_shards\n    foreach: [{}]\n    seed: ${{item}}\n",
        items.join(", ")
    );
    let f1000 = dir.path().join("p1000.yaml");
    std::fs::write(&f1000, yaml)?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let p = load(&ops, &f1000, &LoadOptions::default())?;
        let plan = make_plan(&p, &cache, &Selection::default(), VerifyPolicy::Auto)?;
        assert_eq!(plan.items.len(), 1000);
        times.push(t.elapsed().as_secs_f64());
    }
    println!("plan of 1,000 stage instances: {:.3} s (median of 3; target < 1 s)", median(times));

    // 3. fingerprinting.
    let big = dir.path().join("big.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for _ in 0..1024 {
        f.write_all(&block)?;
    }
    f.flush()?;
    drop(f);
    let t = Instant::now();
    cache.fingerprint_file(&big)?;
    let secs = t.elapsed().as_secs_f64();
    println!("fingerprint of a 1 GiB file: {:.2} GB/s (page cache warm; target >= 1 GB/s)", 1.073741824 / secs);
    let t = Instant::now();
    cache.fingerprint_file(&big)?;
    println!("second fingerprint of the same file (memoized): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
