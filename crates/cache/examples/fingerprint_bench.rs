//! Fingerprint throughput on a large file.
//!
//! ```text
//! cargo run --release -p saepipe-cache --example fingerprint_bench [-- SIZE_GB [DIR]]
//! ```
//!
//! Writes a SIZE_GB (default 2) file of pseudo-random bytes into DIR (default the
//! system temp dir), then times: `fingerprint_file` with a cold memo, three times
//! (a full hash: mmap + all cores; the file is likely in the page cache, so this
//! measures hashing, not the disk), the call with a warm memo, and a
//! single-threaded streaming blake3 for comparison.

use saepipe_cache::Cache;
use std::io::{Read, Write};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let gb: f64 = args.next().map(|s| s.parse().expect("SIZE_GB must be a number")).unwrap_or(2.0);
    let dir = args.next().map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&dir).expect("creating a work directory");
    let path = work.path().join("big.bin");
    let bytes = (gb * 1e9) as u64;

    let t = Instant::now();
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&path).unwrap());
        let mut block = vec![0u8; 1 << 22];
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut written = 0u64;
        while written < bytes {
            for chunk in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            let n = (bytes - written).min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            written += n as u64;
        }
        // Flushed to disk so write-back does not compete with the timed reads.
        f.into_inner().unwrap().sync_all().unwrap();
    }
    println!("wrote {:.2} GB to {} in {:.1} s", bytes as f64 / 1e9, path.display(), t.elapsed().as_secs_f64());

    let mut h = String::new();
    for run in 0..3 {
        // A fresh cache each run, so the memo is cold.
        let cache = Cache::open(&work.path().join(format!("cache{run}"))).unwrap();
        let t = Instant::now();
        h = cache.fingerprint_file(&path).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "fingerprint_file, cold memo: {:.3} s, {:.2} GB/s ({} threads)  {}",
            s,
            bytes as f64 / 1e9 / s,
            rayon::current_num_threads(),
            &h[..16]
        );
    }
    let cache = Cache::open(&work.path().join("cache0")).unwrap();

    let t = Instant::now();
    let h2 = cache.fingerprint_file(&path).unwrap();
    println!("fingerprint_file, memo hit:  {:.1} us", t.elapsed().as_secs_f64() * 1e6);
    assert_eq!(h, h2);
    assert_eq!(cache.stats.files_hashed(), 0);

    let t = Instant::now();
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let s = t.elapsed().as_secs_f64();
    assert_eq!(hasher.finalize().to_hex().as_str(), h);
    println!("reference: read() + single-threaded blake3: {:.3} s, {:.2} GB/s", s, bytes as f64 / 1e9 / s);
}
