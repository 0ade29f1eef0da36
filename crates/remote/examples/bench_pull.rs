//! Pull throughput from an S3-compatible server: publishes a synthetic
//! activation-store-shaped artifact (several large shards) in a scratch cache,
//! pushes it, then pulls it into fresh caches and prints one `RESULT` line per
//! pull with MB/s. Driven by scripts/bench/remote_pull.sh, which runs boto3's
//! download of the same objects on the same server for comparison.
//!
//!   bench_pull --url s3://bucket/prefix --endpoint http://127.0.0.1:PORT \
//!              [--mb 1024] [--shards 8] [--repeats 3] [--keys-out FILE]

use saepipe_cache::{Cache, Key, ManifestDraft};
use saepipe_remote::{Remote, no_progress};
use std::io::Write;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url").expect("--url s3://bucket/prefix");
    let endpoint = arg(&args, "--endpoint");
    let mb: usize = arg(&args, "--mb").map(|v| v.parse().unwrap()).unwrap_or(1024);
    let shards: usize = arg(&args, "--shards").map(|v| v.parse().unwrap()).unwrap_or(8);
    let repeats: usize = arg(&args, "--repeats").map(|v| v.parse().unwrap()).unwrap_or(3);
    let mut options = vec![("region", "us-east-1"), ("access_key_id", "bench"), ("secret_access_key", "bench")];
    if let Some(e) = endpoint.as_deref() {
        options.push(("endpoint", e));
    }
    let remote = Remote::open_with_options(&url, &options).expect("opening the remote");

    let scratch = tempfile::tempdir().unwrap();
    let src = Cache::open(&scratch.path().join("src")).unwrap();
    let mut h = blake3::Hasher::new();
    h.update(format!("bench_pull {mb} {shards}").as_bytes());
    let key = Key::from_hasher(h);
    let staging = src.begin(&key).unwrap();
    let shard_bytes = (mb << 20) / shards;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for s in 0..shards {
        // Incompressible bytes, like f32 activations.
        let data: Vec<u8> = (0..shard_bytes / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::write(staging.dir().join(format!("shard-{s:05}.parquet")), data).unwrap();
    }
    let manifest = staging
        .commit(ManifestDraft { op: "bench".into(), op_version: 1, stage: "bench".into(), ..Default::default() })
        .unwrap();
    let t = Instant::now();
    let pushed = remote.push(&src, &key, &no_progress).expect("push");
    let push_s = t.elapsed().as_secs_f64();
    println!(
        "RESULT op=push bytes={} seconds={push_s:.3} mb_per_s={:.1} uploaded_files={}",
        manifest.total_bytes,
        pushed.uploaded_bytes as f64 / 1e6 / push_s,
        pushed.uploaded_files
    );
    if let Some(path) = arg(&args, "--keys-out") {
        // The blob object names, for the boto3 side to download the same objects.
        let mut f = std::fs::File::create(path).unwrap();
        for file in &manifest.files {
            writeln!(f, "blobs/{}/{} {}", &file.blake3[..2], file.blake3, file.size).unwrap();
        }
    }
    for r in 0..repeats {
        let dst = Cache::open(&scratch.path().join(format!("dst{r}"))).unwrap();
        let t = Instant::now();
        let pulled = remote.pull(&dst, &key, &no_progress).expect("pull");
        let s = t.elapsed().as_secs_f64();
        println!(
            "RESULT op=pull repeat={r} bytes={} seconds={s:.3} mb_per_s={:.1}",
            pulled.downloaded_bytes,
            pulled.downloaded_bytes as f64 / 1e6 / s
        );
    }
}
