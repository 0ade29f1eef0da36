//! Every kernel file must compile with NVRTC for sm_80 (A100) and sm_90 (H100),
//! each as its own translation unit with the headers it includes. Runs without
//! a GPU: only libnvrtc is needed. In CI (`CI` set) a missing NVRTC
//! is a failure — the test command installs it — elsewhere the test says loudly
//! that it skipped.

use saepipe_cuda::nvrtc;

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if let Err(e) = nvrtc::ensure_nvrtc() {
        if std::env::var_os("CI").is_some() || std::env::var_os("SAEPIPE_REQUIRE_GPU").is_some() {
            panic!("CI and GPU checks must compile the kernels, but: {e}");
        }
        eprintln!("SKIPPED every_kernel_compiles_for_sm80_and_sm90: {e}");
        return;
    }
    let (maj, min) = nvrtc::nvrtc_version().unwrap();
    eprintln!("NVRTC {maj}.{min} from {}", nvrtc::ensure_nvrtc().unwrap());
    let cache = tempfile::tempdir().unwrap();
    for (file, src) in nvrtc::KERNEL_FILES {
        let kernels: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("extern \"C\" __global__ void "))
            .map(|l| l.split('(').next().unwrap())
            .collect();
        assert!(!kernels.is_empty(), "{file} declares no kernels");
        for arch in ["compute_80", "compute_90"] {
            let ptx = nvrtc::compile(file, arch, Some(cache.path())).unwrap_or_else(|e| panic!("{e}"));
            let target = format!(".target sm_{}", &arch[8..]);
            assert!(ptx.contains(&target), "{file}: PTX for {arch} lacks `{target}`");
            for k in &kernels {
                assert!(ptx.contains(&format!(".entry {k}(")), "{file}/{arch}: kernel {k} missing from the PTX");
            }
            // Second call is served by the disk cache and returns identical PTX.
            assert_eq!(nvrtc::compile(file, arch, Some(cache.path())).unwrap(), ptx);
        }
        eprintln!("{file}: {} kernels compiled for sm_80 and sm_90", kernels.len());
    }
}

/// Each file includes its headers itself (so nvcc and clangd can compile it
/// from kernels/), and NVRTC is given every header a file includes.
#[test]
fn every_kernel_file_includes_its_headers() {
    for (file, src) in nvrtc::KERNEL_FILES {
        let includes: Vec<&str> = src
            .lines()
            .filter_map(|l| l.trim().strip_prefix("#include"))
            .map(|l| l.trim().trim_matches(|c| c == '"' || c == '<' || c == '>'))
            .collect();
        assert!(includes.contains(&"common.cuh"), "{file} does not include common.cuh");
        for inc in includes {
            assert!(nvrtc::HEADERS.iter().any(|(h, _)| *h == inc), "{file} includes {inc}, which NVRTC is not given");
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_rejected() {
    if nvrtc::ensure_nvrtc().is_err() {
        eprintln!("SKIPPED a_kernel_that_does_not_compile_is_rejected: no NVRTC");
        return;
    }
    let bad = cudarc::nvrtc::compile_ptx("extern \"C\" __global__ void f() { undefined_thing(); }");
    assert!(bad.is_err());
}
