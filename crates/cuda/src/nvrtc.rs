//! Finding libnvrtc and compiling the kernel sources with it, with an on-disk
//! cache keyed by source hash + GPU architecture + NVRTC version.
//!
//! cudarc loads `libnvrtc.so[.12]` by name through the dynamic loader. When the
//! library is elsewhere (a pip wheel's `nvidia/cuda_nvrtc/lib`, `$CUDA_HOME/lib64`)
//! we load it first by absolute path with RTLD_GLOBAL, so cudarc's by-name load
//! finds the already-loaded copy by its soname.

use crate::error::{CudaError, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Kernel sources, embedded at build time. Each is compiled with `common.cuh` prepended.
pub const KERNEL_FILES: &[(&str, &str)] =
    &[("sae.cu", include_str!("../../../kernels/sae.cu")), ("lm.cu", include_str!("../../../kernels/lm.cu"))];
const COMMON: &str = include_str!("../../../kernels/common.cuh");

const SONAMES: &[&str] = &["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so.11"];

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("SAEPIPE_NVRTC_LIB") {
        out.push(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(h) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&h).join("lib64"));
            dirs.push(PathBuf::from(&h).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    // pip wheels (nvidia-cuda-nvrtc-cu12) inside an active virtualenv.
    if let Some(v) = std::env::var_os("VIRTUAL_ENV")
        && let Ok(rd) = std::fs::read_dir(PathBuf::from(v).join("lib"))
    {
        for py in rd.flatten() {
            dirs.push(py.path().join("site-packages/nvidia/cuda_nvrtc/lib"));
        }
    }
    for d in dirs {
        for s in SONAMES {
            out.push(d.join(s));
        }
    }
    out
}

static NVRTC: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// Makes libnvrtc loadable; returns where it was found.
pub fn ensure_nvrtc() -> Result<String> {
    NVRTC
        .get_or_init(|| {
            for name in SONAMES {
                // SAFETY: loading a shared library runs its initializers; libnvrtc's are benign.
                if unsafe { libloading::Library::new(name) }.is_ok() {
                    return Ok(name.to_string());
                }
            }
            let cands = candidates();
            for p in &cands {
                if p.exists() {
                    // SAFETY: as above; RTLD_GLOBAL so later by-name loads resolve to this copy.
                    let lib = unsafe {
                        libloading::os::unix::Library::open(
                            Some(p),
                            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                        )
                    };
                    if let Ok(lib) = lib {
                        std::mem::forget(lib); // keep it loaded for the process lifetime
                        return Ok(p.display().to_string());
                    }
                }
            }
            Err(cands.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
        })
        .clone()
        .map_err(|searched| CudaError::NvrtcMissing { searched })
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes; the library is loaded (ensure_nvrtc).
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::Driver(format!("nvrtcVersion failed: {rc:?}")));
    }
    Ok((major, minor))
}

/// Full source of a kernel file as compiled (common helpers prepended).
pub fn full_source(file: &str) -> Option<String> {
    KERNEL_FILES.iter().find(|(f, _)| *f == file).map(|(_, src)| format!("{COMMON}\n#line 1 \"{file}\"\n{src}"))
}

/// Compiles a kernel file to PTX for `arch` (e.g. "compute_90"), using the disk
/// cache in `cache_dir` when given.
pub fn compile(file: &str, arch: &'static str, cache_dir: Option<&Path>) -> Result<String> {
    let src = full_source(file).ok_or_else(|| CudaError::Shape(format!("no kernel file {file}")))?;
    ensure_nvrtc()?;
    let (maj, min) = nvrtc_version()?;
    let mut h = blake3::Hasher::new();
    h.update(src.as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("nvrtc {maj}.{min}").as_bytes());
    let cached = cache_dir.map(|d| d.join(format!("{}-{arch}.ptx", &h.finalize().to_hex()[..24])));
    if let Some(p) = &cached
        && let Ok(ptx) = std::fs::read_to_string(p)
    {
        return Ok(ptx);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into(), "-default-device".into()],
        name: Some(file.to_string()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, opts).map_err(|e| CudaError::Compile {
        file: file.into(),
        arch: arch.into(),
        log: format!("{e:?}"),
    })?;
    let text = ptx.to_src();
    if let Some(p) = cached {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &text).is_ok() {
            let _ = std::fs::rename(&tmp, &p);
        }
    }
    Ok(text)
}
