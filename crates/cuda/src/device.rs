//! Device selection: `--device auto|cpu|cuda[:N]`.

use crate::error::{CudaError, Result};

/// A device as asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU when there is one, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// A device that exists on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl DeviceSpec {
    /// `auto`, `cpu`, `cuda` (= `cuda:0`, also `gpu`) or `cuda:N`.
    pub fn parse(s: &str) -> Result<DeviceSpec> {
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| CudaError::BadDevice(other.to_string())),
        }
    }

    /// Auto picks CUDA when a driver and a GPU are present; an explicit `cuda`
    /// without them is an error that says what is missing.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(match gpu_count() {
                Ok(n) if n > 0 => Device::Cuda(0),
                _ => Device::Cpu,
            }),
            DeviceSpec::Cuda(i) => {
                let spec = format!("cuda:{i}");
                let n = gpu_count().map_err(|reason| CudaError::Unavailable { spec: spec.clone(), reason })?;
                if i < n {
                    Ok(Device::Cuda(i))
                } else {
                    Err(CudaError::Unavailable { spec, reason: format!("this machine has {n} CUDA device(s)") })
                }
            }
        }
    }
}

/// Number of CUDA devices, or why none can be used. Probed once per process:
/// the scheduler asks for every ready stage with a `device` parameter.
pub fn gpu_count() -> std::result::Result<usize, String> {
    static COUNT: std::sync::OnceLock<std::result::Result<usize, String>> = std::sync::OnceLock::new();
    COUNT
        .get_or_init(|| {
            // Probe for the driver library before cudarc, whose loader panics when it is absent.
            let found = ["libcuda.so.1", "libcuda.so"].iter().any(|n| unsafe { libloading::Library::new(n) }.is_ok());
            if !found {
                return Err("no NVIDIA driver (libcuda.so) was found on this machine".into());
            }
            cudarc::driver::CudaContext::device_count()
                .map(|n| n.max(0) as usize)
                .map_err(|e| format!("the CUDA driver reports: {e}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse_specs() {
        assert_eq!(DeviceSpec::parse("auto").unwrap(), DeviceSpec::Auto);
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert!(DeviceSpec::parse("tpu").unwrap_err().to_string().contains("expected auto, cpu, cuda or cuda:N"));
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), Device::Cpu);
    }
}
