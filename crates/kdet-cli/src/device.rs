//! `--device`: where a command computes.
//!
//! - `cpu` (the default): burn's pure-Rust `flex` backend, always built in.
//! - `gpu` / `gpu:N`: burn's Vulkan backend (wgpu, SPIR-V kernels), compiled in only with
//!   `cargo build --release -p kdet-cli --features vulkan`. `gpu` takes the adapter wgpu
//!   ranks best (a discrete GPU first; `CUBECL_WGPU_DEFAULT_DEVICE=Cpu` picks a software
//!   Vulkan driver such as Mesa's lavapipe instead), `gpu:N` the N-th discrete GPU.
//!
//! A GPU is opened and probed with one small tensor before any work, so that a build
//! without the backend, a machine without a Vulkan driver or a wrong index is one clear
//! error instead of a panic deep inside the first convolution.
//!
//! burn's CUDA backend is not offered: its build script downloads an LLVM bundle, which
//! the registries-only network here cannot reach (docs/gpu.md).

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;

/// The `--device` option, flattened into the arguments of every command that computes.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArg {
    /// Where to compute: `cpu` (burn's flex backend), `gpu` (the best Vulkan adapter) or
    /// `gpu:N` (the N-th discrete GPU). GPUs need a build with
    /// `-p kdet-cli --features vulkan`.
    #[arg(long = "device", value_name = "cpu|gpu[:N]", default_value = "cpu")]
    pub choice: DeviceChoice,
}

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// burn's `flex` backend on the CPU.
    #[default]
    Cpu,
    /// A GPU through the Vulkan backend: `None` is wgpu's best adapter, `Some(n)` the n-th
    /// discrete GPU.
    Gpu(Option<usize>),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu(None)),
            _ => match s.strip_prefix("gpu:") {
                Some(n) => n.parse::<usize>().map(|n| Self::Gpu(Some(n))).map_err(|_| {
                    format!(
                        "`{s}`: the GPU index after `gpu:` must be a number (gpu:0, gpu:1, ...)"
                    )
                }),
                None => Err(format!("`{s}`: expected `cpu`, `gpu` or `gpu:N`")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Gpu(None) => write!(f, "gpu"),
            Self::Gpu(Some(n)) => write!(f, "gpu:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The backend's name, as benchmark reports record it.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Cpu => "flex",
            Self::Gpu(_) => "vulkan",
        }
    }

    /// The plain (inference, teacher) device, opened and probed.
    pub fn plain(&self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Gpu(index) => gpu(*index, *self),
        }
    }

    /// The training device: [`Self::plain`] with autodiff.
    pub fn autodiff(&self) -> Result<Device> {
        Ok(self.plain()?.autodiff())
    }
}

#[cfg(not(feature = "vulkan"))]
fn gpu(_index: Option<usize>, choice: DeviceChoice) -> Result<Device> {
    bail!(
        "--device {choice}: this kdet was built without a GPU backend; rebuild it with `cargo build --release -p kdet-cli --features vulkan` (docs/gpu.md), or use --device cpu"
    )
}

#[cfg(feature = "vulkan")]
fn gpu(index: Option<usize>, choice: DeviceChoice) -> Result<Device> {
    use burn::tensor::{DeviceKind, Tensor};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    let kind = index.map_or(DeviceKind::DefaultDevice, DeviceKind::DiscreteGpu);
    // wgpu panics when it finds no adapter (on the runtime's own thread, whose death the
    // caller sees as a bare `RecvError`); the probe turns that into an error. The panics
    // of every thread are collected instead of printed while it runs; the first says why.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let hook = std::panic::take_hook();
    let sink = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut v) = sink.lock() {
            v.push(info.to_string());
        }
    }));
    let probe = catch_unwind(AssertUnwindSafe(|| {
        let device = Device::vulkan(kind);
        let sum: f32 = Tensor::<1>::ones([4], &device).sum().into_scalar();
        (device, sum)
    }));
    std::panic::set_hook(hook);
    match probe {
        Ok((device, sum)) if sum == 4.0 => Ok(device),
        Ok((_, sum)) => bail!("--device {choice}: the Vulkan device computed 1+1+1+1 = {sum}"),
        Err(_) => {
            let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
            let why = seen.first().map_or("no reason given", String::as_str);
            bail!(
                "--device {choice}: no Vulkan device could be opened ({why}); check that a Vulkan driver is installed (`vulkaninfo --summary`; docs/gpu.md)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_gpu_and_indices() {
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("gpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Gpu(None)));
        assert_eq!(
            "gpu:3".parse::<DeviceChoice>(),
            Ok(DeviceChoice::Gpu(Some(3)))
        );
        for bad in ["cuda", "gpu:", "gpu:x", "GPU", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        for c in [
            DeviceChoice::Cpu,
            DeviceChoice::Gpu(None),
            DeviceChoice::Gpu(Some(2)),
        ] {
            assert_eq!(c.to_string().parse::<DeviceChoice>(), Ok(c));
        }
    }

    #[test]
    fn cpu_is_flex_and_trains_with_autodiff() {
        let c = DeviceChoice::Cpu;
        assert_eq!(c.backend(), "flex");
        assert!(!c.plain().unwrap().is_autodiff());
        assert!(c.autodiff().unwrap().is_autodiff());
    }

    #[cfg(not(feature = "vulkan"))]
    #[test]
    fn gpu_without_the_backend_says_how_to_build_it() {
        let err = DeviceChoice::Gpu(Some(0)).plain().unwrap_err().to_string();
        assert!(err.contains("--device gpu:0"), "{err}");
        assert!(err.contains("--features vulkan"), "{err}");
    }
}
