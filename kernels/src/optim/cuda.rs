//! CUDA optimizer steps (`optim.cu`): Adam over every parameter in one launch, and SGD.

use super::{AdamStep, SgdStep};
use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, n64, ptr_or_null, Gpu, Result, Source, BLOCK};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, ValidAsZeroBits};

pub const SOURCE: Source = Source {
    name: "optim",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("optim.cu")
    ),
};

/// One parameter of [`adam_step_fused`], as `optim.cu`'s `struct AdamSegment`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdamSegment {
    param: u64,
    grad: u64,
    moment_offset: u64,
    len: u64,
    neg_step: f32,
    bc2_sqrt: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    eps: f32,
    weight_decay: f32,
    pad: f32,
}

// SAFETY: `repr(C)`, integers and floats only, laid out as `struct AdamSegment` in `optim.cu`.
unsafe impl DeviceRepr for AdamSegment {}
// SAFETY: all-zero bits are a valid value of every field (null pointers, zeros).
unsafe impl ValidAsZeroBits for AdamSegment {}

/// The device-side table of [`adam_step_fused`]: one [`AdamSegment`] per stepped parameter.
///
/// It lives as long as its optimizer. A step captured into a CUDA graph bakes in the address
/// of the table it launched with, so a capture takes that buffer for the graph (`captured`):
/// before each replay the host rewrites it with the next step's constants
/// ([`AdamTable::restep`]), and an eager step taken meanwhile (a batch of another size) gets a
/// buffer of its own, leaving the graph's rows (its parameter and gradient addresses) intact.
#[derive(Default)]
pub struct AdamTable {
    host: Vec<AdamSegment>,
    dev: Option<CudaSlice<AdamSegment>>,
    /// The longest segment, for the launch's grid.
    longest: usize,
    /// The rows and buffer of the last captured step.
    captured: Option<(Vec<AdamSegment>, CudaSlice<AdamSegment>)>,
}

impl std::fmt::Debug for AdamTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdamTable({} segments)", self.host.len())
    }
}

impl AdamSegment {
    /// Sets the constants of one step: the bias corrections fold into `neg_step` and
    /// `bc2_sqrt`, computed in f64 on the host exactly as the CPU step does.
    fn set_step(&mut self, h: &AdamStep) {
        self.neg_step = -h.step_size() as f32;
        self.bc2_sqrt = h.bias_correction2_sqrt() as f32;
        self.one_minus_b1 = (1.0 - h.beta1) as f32;
        self.b2 = h.beta2 as f32;
        self.one_minus_b2 = (1.0 - h.beta2) as f32;
        self.eps = h.eps as f32;
        self.weight_decay = h.weight_decay as f32;
    }
}

impl AdamTable {
    /// Writes the host table to the device, outside any graph being captured (see
    /// [`Gpu::write_outside_graph`]). The device buffer is allocated on first use and again
    /// only when the table grows.
    fn upload(&mut self, gpu: &Gpu) -> Result<()> {
        let n = self.host.len();
        if self.dev.as_ref().is_none_or(|d| d.len() < n) {
            self.dev = Some(gpu.zeros::<AdamSegment>(n)?);
        }
        gpu.write_outside_graph(&self.host, self.dev.as_mut().expect("allocated above"))
    }

    /// Rewrites the per-step constants of the captured step's table (one [`AdamStep`] per
    /// segment, in the captured order) on the device, for a replay.
    pub fn restep(&mut self, gpu: &Gpu, steps: &[AdamStep]) -> Result<()> {
        let Some((rows, dev)) = &mut self.captured else {
            return Err(crate::cuda_rt::CudaError(
                "Adam table: no captured step to replay".into(),
            ));
        };
        if steps.len() != rows.len() {
            return Err(crate::cuda_rt::CudaError(format!(
                "Adam table: {} steps for {} captured segments",
                steps.len(),
                rows.len()
            )));
        }
        for (s, h) in rows.iter_mut().zip(steps) {
            s.set_step(h);
        }
        gpu.write(rows, dev)
    }
}

/// One Adam step for every parameter at once: parameter `i` (`params[i]`, `len` values) with
/// gradient `grads[i]` keeps its moments at `moment_offsets[i]..` of the flat `m` and `v`.
/// The per-parameter constants go to the device in `table`, which the caller keeps.
pub fn adam_step_fused(
    gpu: &Gpu,
    table: &mut AdamTable,
    params: &mut [&mut CudaSlice<f32>],
    grads: &[&CudaSlice<f32>],
    (m, v): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
    segments: &[(usize, usize, AdamStep)],
) -> Result<()> {
    let stream = gpu.stream();
    table.host.clear();
    table.longest = 0;
    for ((p, g), &(offset, len, h)) in params.iter_mut().zip(grads).zip(segments) {
        table.longest = table.longest.max(len);
        let mut s = AdamSegment {
            param: p.device_ptr(stream).0,
            grad: g.device_ptr(stream).0,
            moment_offset: offset as u64,
            len: len as u64,
            ..Default::default()
        };
        s.set_step(&h);
        table.host.push(s);
    }
    if table.host.is_empty() || table.longest == 0 {
        return Ok(());
    }
    table.upload(gpu)?;
    if gpu.is_capturing() {
        // The graph keeps this buffer; the next eager step allocates another.
        let dev = table.dev.take().expect("uploaded above");
        table.captured = Some((table.host.clone(), dev));
    }
    let cfg = LaunchConfig {
        grid_dim: (
            grid_1d(table.longest).grid_dim.0.min(1024),
            table.host.len() as u32,
            1,
        ),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // The eager buffer, or during a capture the one just handed to the graph.
    let dev = table
        .dev
        .as_ref()
        .or(table.captured.as_ref().map(|(_, d)| d))
        .expect("uploaded above");
    cuda_launch!(gpu, SOURCE, "adam_fused", cfg, [dev, m, v])
}

/// One SGD step in place.
pub fn sgd_step(
    gpu: &Gpu,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    buf: Option<&mut CudaSlice<f32>>,
    h: &SgdStep,
    n: usize,
) -> Result<()> {
    let b = ptr_or_null(gpu, buf.as_deref());
    let (neg_lr, wd, mu, keep) = (
        -h.lr as f32,
        h.weight_decay as f32,
        h.momentum as f32,
        (1.0 - h.dampening) as f32,
    );
    cuda_launch!(
        gpu,
        SOURCE,
        "sgd",
        grid_1d(n),
        [
            p,
            g,
            &b,
            &neg_lr,
            &wd,
            &mu,
            &keep,
            &i32::from(h.nesterov),
            &i32::from(h.first),
            &n64(n)
        ]
    )
}
