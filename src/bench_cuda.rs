//! `gantry bench conv --device cuda`: every rung of the CUDA conv ladder on the DCGAN layer set
//! and the SRResNet 3x3 layer, forward, backward-data, backward-weight and the three together,
//! each against a baseline measured in the same process: cuDNN at the rung's precision when
//! built with the `cudnn` feature (`src/bench_cudnn.rs`), the direct rung otherwise.
//!
//! Times are CUDA-event free wall times around a device synchronise, median of repeated calls
//! (each call includes the tensor-core rungs' packs: their layout change is part of their cost).
//! Peaks are the dense figures of the H100/H200 for the rung's precision (FP32 without tensor
//! cores, TF32, BF16/FP16 with them); other GPUs report no peak fraction.

use crate::bench::{filled, median_ms, standard_layers, Row};
use gantry::kernels::conv::cuda::{CudaConv, TcType};
use gantry::kernels::cuda_rt::{Gpu, Result};

/// Dense peak TFLOP/s of `gpu` for `rung`'s arithmetic (NVIDIA's datasheet figures), if known.
pub fn peak_tflops(gpu: &Gpu, rung: CudaConv) -> Option<f64> {
    let name = gpu.name();
    if !(name.contains("H100") || name.contains("H200")) {
        return None;
    }
    let pcie = name.contains("PCIe");
    // (FP32, TF32, BF16/FP16) dense, SXM then PCIe.
    let (f32_, tf32, half) = if pcie {
        (51.2, 378.0, 756.0)
    } else {
        (66.9, 494.7, 989.4)
    };
    Some(match rung.tensor_core() {
        None => f32_,
        Some(TcType::Tf32) => tf32,
        Some(TcType::Bf16 | TcType::F16) => half,
    })
}

/// The rows for every supported rung and every standard layer at `batch` (or those whose name
/// contains `filter`).
pub fn conv(gpu: &Gpu, batch: usize, filter: Option<&str>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    #[cfg(feature = "cudnn")]
    let cudnn = crate::bench_cudnn::handle(gpu)?;
    for l in standard_layers(batch) {
        if filter.is_some_and(|f| !l.name.contains(f)) {
            continue;
        }
        let g = &l.geom;
        let x = gpu.upload_f32(&filled(g.input_len()))?;
        let w = gpu.upload_f32(&filled(g.weight_len()))?;
        let dy = gpu.upload_f32(&filled(g.output_len_total()))?;
        // One pass of `rung`, its outputs recycled; errors surface after the timing.
        let run = |rung: CudaConv, pass: usize| -> Result<()> {
            // A transposed layer's forward is the conv's backward-data and vice versa.
            let pass = match (l.transposed, pass) {
                (true, 0) => 1,
                (true, 1) => 0,
                (_, p) => p,
            };
            let out = match pass {
                0 => rung.forward(gpu, &x, &w, None, g)?,
                1 => rung.backward_data(gpu, &dy, &w, g)?,
                _ => rung.backward_weight(gpu, &x, &dy, g)?,
            };
            gpu.recycle(out);
            Ok(())
        };
        let time = |rung: CudaConv, passes: &[usize]| -> Result<f64> {
            let mut failed = None;
            let ms = median_ms(5, || {
                for &p in passes {
                    if let Err(e) = run(rung, p) {
                        failed = Some(e);
                    }
                }
                if let Err(e) = gpu.synchronize() {
                    failed = Some(e);
                }
            });
            failed.map_or(Ok(ms), Err)
        };
        let pass_sets: [(&str, &[usize], f64); 4] = [
            ("fwd", &[0], 1.0),
            ("bwd_data", &[1], 1.0),
            ("bwd_weight", &[2], 1.0),
            ("fwd_bwd", &[0, 1, 2], 3.0),
        ];
        for (pass, passes, mult) in pass_sets {
            let direct = time(CudaConv::Direct, passes)?;
            for rung in CudaConv::ALL {
                if !rung.supported(gpu) {
                    continue;
                }
                let ms = if rung == CudaConv::Direct {
                    direct
                } else {
                    time(rung, passes)?
                };
                #[cfg(not(feature = "cudnn"))]
                let (baseline, base) = ("direct", direct);
                #[cfg(feature = "cudnn")]
                let (baseline, base) = {
                    let mut sum = 0.0;
                    for &p in passes {
                        // The pass as the layer runs it (see `run`).
                        let p = match (l.transposed, p) {
                            (true, 0) => 1,
                            (true, 1) => 0,
                            (_, p) => p,
                        };
                        sum += crate::bench_cudnn::time_pass(&cudnn, gpu, g, rung, p)?;
                    }
                    ("cudnn", sum)
                };
                rows.push(Row {
                    bench: "conv-cuda",
                    layer: format!("{} [{}]", l.name, rung.name()),
                    pass,
                    threads: 0,
                    ms,
                    flops: g.flops() * mult,
                    // Row works in GFLOP/s.
                    peak_gflops: peak_tflops(gpu, rung).map_or(f64::NAN, |t| t * 1e3),
                    baseline,
                    baseline_ms: base,
                });
            }
        }
        for b in [x, w, dy] {
            gpu.recycle(b);
        }
    }
    Ok(rows)
}
