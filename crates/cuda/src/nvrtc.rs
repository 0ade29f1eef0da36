//! Finding libnvrtc and compiling the kernel sources with it, with an on-disk
//! cache keyed by source hash + GPU architecture + NVRTC version.
//!
//! cudarc loads `libnvrtc.so[.12]` by name through the dynamic loader. When the
//! library is elsewhere (a pip wheel's `nvidia/cuda_nvrtc/lib`, `$CUDA_HOME/lib64`)
//! we load it first by absolute path with RTLD_GLOBAL, so cudarc's by-name load
//! finds the already-loaded copy by its soname.
//!
//! Each kernel file includes what it needs (`#include "common.cuh"`), so it
//! compiles on its own with nvcc or clangd from the `kernels/` folder; NVRTC
//! gets the headers by name ([`HEADERS`]), since it has no file system to search.

use crate::error::{CudaError, Result};
use cudarc::nvrtc::{result, sys};
use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Kernel sources, embedded at build time: (file name, source).
pub const KERNEL_FILES: &[(&str, &str)] =
    &[("sae.cu", include_str!("../../../kernels/sae.cu")), ("lm.cu", include_str!("../../../kernels/lm.cu"))];

/// Headers the kernel files include, by the name they include them with.
pub const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../../../kernels/common.cuh"))];

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

/// Source of a kernel file as embedded.
pub fn source(file: &str) -> Option<&'static str> {
    KERNEL_FILES.iter().find(|(f, _)| *f == file).map(|(_, src)| *src)
}

/// Compiles a kernel file to PTX for `arch` (e.g. "compute_90"), using the disk
/// cache in `cache_dir` when given.
pub fn compile(file: &str, arch: &'static str, cache_dir: Option<&Path>) -> Result<String> {
    let src = source(file).ok_or_else(|| CudaError::Shape(format!("no kernel file {file}")))?;
    ensure_nvrtc()?;
    let (maj, min) = nvrtc_version()?;
    let mut h = blake3::Hasher::new();
    h.update(src.as_bytes());
    for (name, text) in HEADERS {
        h.update(name.as_bytes());
        h.update(text.as_bytes());
    }
    h.update(arch.as_bytes());
    h.update(format!("nvrtc {maj}.{min}").as_bytes());
    let cached = cache_dir.map(|d| d.join(format!("{}-{arch}.ptx", &h.finalize().to_hex()[..24])));
    if let Some(p) = &cached
        && let Ok(ptx) = std::fs::read_to_string(p)
    {
        return Ok(ptx);
    }
    let options = [format!("--gpu-architecture={arch}"), "--std=c++17".into(), "-default-device".into()];
    let text = compile_source(file, src, &options).map_err(|log| CudaError::Compile {
        file: file.into(),
        arch: arch.into(),
        log,
    })?;
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

/// An NVRTC program, destroyed when dropped.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// NVRTC's text buffers end with a NUL.
fn text(buf: Vec<c_char>) -> String {
    let bytes: Vec<u8> = buf.into_iter().take_while(|&c| c != 0).map(|c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles one translation unit with [`HEADERS`] available to `#include`;
/// the error is NVRTC's log.
fn compile_source(file: &str, src: &str, options: &[String]) -> std::result::Result<String, String> {
    let c = |s: &str| CString::new(s).map_err(|_| format!("{file}: a NUL byte in a source or option"));
    let (src_c, name_c) = (c(src)?, c(file)?);
    let header_src: Vec<CString> = HEADERS.iter().map(|(_, t)| c(t)).collect::<std::result::Result<_, _>>()?;
    let header_names: Vec<CString> = HEADERS.iter().map(|(n, _)| c(n)).collect::<std::result::Result<_, _>>()?;
    let header_ptrs: Vec<*const c_char> = header_src.iter().map(|s| s.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string alive for this call;
    // the header arrays both hold HEADERS.len() entries.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src_c.as_ptr(),
            name_c.as_ptr(),
            HEADERS.len() as i32,
            header_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    }
    .result()
    .map_err(|e| format!("nvrtcCreateProgram: {e:?}"))?;
    let prog = Program(prog);
    // SAFETY: `prog` is a live program (created above, destroyed on drop).
    if let Err(e) = unsafe { result::compile_program(prog.0, options) } {
        // SAFETY: as above.
        let log = unsafe { result::get_program_log(prog.0) }.map(text).unwrap_or_default();
        return Err(format!("{e:?} with options {options:?}\n{log}"));
    }
    // SAFETY: as above, after a successful compile.
    let ptx = unsafe { result::get_ptx(prog.0) }.map_err(|e| format!("nvrtcGetPTX: {e:?}"))?;
    Ok(text(ptx))
}
