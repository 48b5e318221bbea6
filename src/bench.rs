//! `gantry bench`: kernel timings against a baseline measured in the same process.
//!
//! Every row reports the median time, the achieved GFLOP/s, the fraction of the FMA peak the
//! bench measures itself (a register-only FMA loop on the same threads), and the ratio to the
//! baseline (`baseline_ms / ms`: above 1 means gantry is faster). A convolution's GFLOP/s
//! counts the direct convolution's multiply-adds, whatever algorithm ran: Winograd's rows are
//! an effective rate and may pass 100% of the peak.
//!
//! JSON output (`--json`) is one array of row objects with the keys `bench`, `layer`, `pass`
//! (`fwd` | `fwd_bwd`, and with `bench conv --split` also `bwd_data` | `bwd_weight`),
//! `threads`, `ms`, `gflops`, `peak_gflops`, `peak_fraction`, `baseline`, `baseline_ms`,
//! `baseline_ratio`.

use gantry::kernels::conv::ConvVariant;
use gantry::kernels::gemm::cpu as fast;
use gantry::kernels::gemm::kernels::Isa;
use gantry::kernels::gemm::GemmGeom;
use std::time::Instant;

/// One measured row.
pub struct Row {
    pub bench: &'static str,
    pub layer: String,
    pub pass: &'static str,
    pub threads: usize,
    pub ms: f64,
    pub flops: f64,
    pub peak_gflops: f64,
    pub baseline: &'static str,
    pub baseline_ms: f64,
}

impl Row {
    fn gflops(&self) -> f64 {
        self.flops / (self.ms * 1e6)
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"bench\":\"{}\",\"layer\":\"{}\",\"pass\":\"{}\",\"threads\":{},\"ms\":{:.4},\"gflops\":{:.2},\"peak_gflops\":{},\"peak_fraction\":{},\"baseline\":\"{}\",\"baseline_ms\":{:.4},\"baseline_ratio\":{:.3}}}",
            self.bench,
            self.layer,
            self.pass,
            self.threads,
            self.ms,
            self.gflops(),
            // An unknown peak (a GPU without datasheet figures here) is null.
            json_number(self.peak_gflops, 1),
            json_number(self.gflops() / self.peak_gflops, 4),
            self.baseline,
            self.baseline_ms,
            self.baseline_ms / self.ms
        )
    }

    pub fn table_line(&self) -> String {
        format!(
            "{:<28} {:<10} {:>9.3} ms {:>8.1} GFLOP/s {:>6.1}% of peak   {} {:>9.3} ms  x{:.2}",
            self.layer,
            self.pass,
            self.ms,
            self.gflops(),
            100.0 * self.gflops() / self.peak_gflops,
            self.baseline,
            self.baseline_ms,
            self.baseline_ms / self.ms
        )
    }
}

/// `v` with `decimals` decimals, or `null` when it is not finite (JSON has no NaN).
fn json_number(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".into()
    }
}

/// Median wall time of `f` in milliseconds: one warm-up call, then at least `min_reps` calls
/// and at least 0.3 s of calls.
pub fn median_ms(min_reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_reps || start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Deterministic values in [-0.5, 0.5) for benchmark operands.
pub fn filled(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// GEMM `n × n × n` for each size: gantry's fast GEMM vs ndarray's `dot` (matrixmultiply).
pub fn gemm(sizes: &[usize], threads: usize, peak: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in sizes {
        let g = GemmGeom::new(1, n, n, n);
        let (a, b) = (filled(n * n), filled(n * n));
        let mut c = vec![0f32; n * n];
        let reps = if n >= 2048 { 3 } else { 10 };
        let ms = median_ms(reps, || fast::matmul(&a, &b, &mut c, &g));
        let aa = ndarray::Array2::from_shape_vec((n, n), a.clone()).expect("square");
        let bb = ndarray::Array2::from_shape_vec((n, n), b.clone()).expect("square");
        let baseline_ms = median_ms(reps, || {
            std::hint::black_box(aa.dot(&bb));
        });
        rows.push(Row {
            bench: "gemm",
            layer: format!("gemm {n}x{n}x{n}"),
            pass: "fwd",
            threads,
            ms,
            flops: g.flops(),
            peak_gflops: peak,
            baseline: "ndarray-dot",
            baseline_ms,
        });
    }
    rows
}

/// The measured FMA peak of the best ISA on the current pool's threads.
pub fn peak() -> (Isa, f64) {
    let isa = Isa::best();
    (isa, gantry::kernels::peak::fma_peak_gflops(isa))
}

/// A benchmarked layer: a convolution, or a transposed convolution run as the adjoint of the
/// convolution `geom` (its forward is that conv's backward-data).
pub struct Layer {
    pub name: &'static str,
    pub transposed: bool,
    pub geom: gantry::kernels::conv::Conv2dGeom,
}

#[allow(clippy::too_many_arguments)]
fn layer(
    name: &'static str,
    transposed: bool,
    n: usize,
    c_in: usize,
    hw: usize,
    c_out: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Layer {
    use gantry::kernels::conv::Conv2dGeom;
    // For a transposed layer, (c_in, hw) describe the *convolution* whose adjoint it is:
    // its input is the transposed layer's output.
    let geom = Conv2dGeom {
        n,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride: [s, s],
        pad: [p, p],
        dilation: [1, 1],
        h_out: 0,
        w_out: 0,
    }
    .with_conv_output()
    .expect("benchmark geometry is valid");
    Layer {
        name,
        transposed,
        geom,
    }
}

/// The DCGAN 64×64 layers (nz 100, ngf = ndf = 64) at `batch`, and the SRResNet 3×3 body
/// layer (64→64, 96×96, batch 16).
pub fn standard_layers(batch: usize) -> Vec<Layer> {
    let b = batch;
    vec![
        // Generator: ConvTranspose2d(in, out, 4, stride, pad), named by the transposed layer.
        layer("G1 convT 100->512 1->4", true, b, 512, 4, 100, 4, 1, 0),
        layer("G2 convT 512->256 4->8", true, b, 256, 8, 512, 4, 2, 1),
        layer("G3 convT 256->128 8->16", true, b, 128, 16, 256, 4, 2, 1),
        layer("G4 convT 128->64 16->32", true, b, 64, 32, 128, 4, 2, 1),
        layer("G5 convT 64->3 32->64", true, b, 3, 64, 64, 4, 2, 1),
        layer("D1 conv 3->64 64->32", false, b, 3, 64, 64, 4, 2, 1),
        layer("D2 conv 64->128 32->16", false, b, 64, 32, 128, 4, 2, 1),
        layer("D3 conv 128->256 16->8", false, b, 128, 16, 256, 4, 2, 1),
        layer("D4 conv 256->512 8->4", false, b, 256, 8, 512, 4, 2, 1),
        layer("D5 conv 512->1 4->1", false, b, 512, 4, 1, 4, 1, 0),
        layer("SRResNet conv3x3 64->64 96", false, 16, 64, 96, 64, 3, 1, 1),
    ]
}

/// The three conv kernels, as one implementation of them.
pub struct ConvImpl {
    pub forward: fn(&[f32], &[f32], &mut [f32], &gantry::kernels::conv::Conv2dGeom),
    pub backward_data: fn(&[f32], &[f32], &mut [f32], &gantry::kernels::conv::Conv2dGeom),
    pub backward_weight: fn(&[f32], &[f32], &mut [f32], &gantry::kernels::conv::Conv2dGeom),
}

/// One of gantry's conv rungs (`ConvVariant`), as a [`ConvImpl`].
pub fn gantry_impl(variant: ConvVariant) -> ConvImpl {
    macro_rules! rung {
        ($v:expr) => {
            ConvImpl {
                forward: |x, w, y, g| $v.forward(x, w, None, y, g),
                backward_data: |dy, w, dx, g| $v.backward_data(dy, w, dx, g),
                backward_weight: |x, dy, dw, g| $v.backward_weight(x, dy, dw, g),
            }
        };
    }
    match variant {
        ConvVariant::Reference => rung!(ConvVariant::Reference),
        ConvVariant::Im2colGemm => rung!(ConvVariant::Im2colGemm),
        ConvVariant::ImplicitGemm => rung!(ConvVariant::ImplicitGemm),
        ConvVariant::ImplicitGemmRewrite => rung!(ConvVariant::ImplicitGemmRewrite),
        ConvVariant::ImplicitGemmPortablePack => rung!(ConvVariant::ImplicitGemmPortablePack),
        ConvVariant::Direct => rung!(ConvVariant::Direct),
        ConvVariant::DirectPortable => rung!(ConvVariant::DirectPortable),
        ConvVariant::Winograd => rung!(ConvVariant::Winograd),
        ConvVariant::Narrow => rung!(ConvVariant::Narrow),
        ConvVariant::Auto => rung!(ConvVariant::Auto),
    }
}

/// The baseline: a materialised im2col matrix per image and ndarray's `dot` (matrixmultiply),
/// the approach of most small frameworks.
pub const IM2COL_NDARRAY: ConvImpl = ConvImpl {
    forward: im2col_baseline::forward,
    backward_data: im2col_baseline::backward_data,
    backward_weight: im2col_baseline::backward_weight,
};

mod im2col_baseline {
    use gantry::kernels::conv::im2col::{col2im, im2col};
    use gantry::kernels::conv::Conv2dGeom;
    use ndarray::{Array2, ArrayView2};

    /// Image `b`'s im2col matrix (`K × P`), from the kernels' own im2col rung.
    fn col(x: &[f32], g: &Conv2dGeom, b: usize) -> Array2<f32> {
        let (k, p, img) = (g.c_in * g.kh * g.kw, g.h_out * g.w_out, g.c_in * g.h * g.w);
        let mut c = Array2::<f32>::zeros((k, p));
        im2col(
            &x[b * img..(b + 1) * img],
            g,
            c.as_slice_mut().expect("standard layout"),
        );
        c
    }

    pub fn forward(x: &[f32], w: &[f32], y: &mut [f32], g: &Conv2dGeom) {
        let (k, p) = (g.c_in * g.kh * g.kw, g.h_out * g.w_out);
        let wm = ArrayView2::from_shape((g.c_out, k), w).expect("weight");
        for b in 0..g.n {
            let out = wm.dot(&col(x, g, b));
            y[b * g.c_out * p..(b + 1) * g.c_out * p]
                .copy_from_slice(out.as_slice().expect("standard layout"));
        }
    }

    pub fn backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
        let (k, p, img) = (g.c_in * g.kh * g.kw, g.h_out * g.w_out, g.c_in * g.h * g.w);
        let wt = ArrayView2::from_shape((g.c_out, k), w)
            .expect("weight")
            .reversed_axes();
        dx.fill(0.0);
        for b in 0..g.n {
            let dyb =
                ArrayView2::from_shape((g.c_out, p), &dy[b * g.c_out * p..(b + 1) * g.c_out * p])
                    .expect("dy");
            let dcol = wt.dot(&dyb);
            col2im(
                dcol.as_slice().expect("standard layout"),
                g,
                &mut dx[b * img..(b + 1) * img],
            );
        }
    }

    pub fn backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
        let (k, p) = (g.c_in * g.kh * g.kw, g.h_out * g.w_out);
        let mut acc = Array2::<f32>::zeros((g.c_out, k));
        for b in 0..g.n {
            let dyb =
                ArrayView2::from_shape((g.c_out, p), &dy[b * g.c_out * p..(b + 1) * g.c_out * p])
                    .expect("dy");
            acc += &dyb.dot(&col(x, g, b).t());
        }
        dw.copy_from_slice(acc.as_slice().expect("standard layout"));
    }
}

/// A layer's median times, in ms: each pass alone (`None` unless asked for) and all three in
/// turn. The passes are named by the layer: a transposed layer's forward is the conv's
/// backward-data, its input gradient the conv's forward, its weight gradient the conv's
/// backward-weight with the roles of input and output swapped.
struct LayerTimes {
    fwd: f64,
    bwd_data: Option<f64>,
    bwd_weight: Option<f64>,
    fwd_bwd: f64,
}

fn time_layer(imp: &ConvImpl, l: &Layer, split: bool) -> LayerTimes {
    let g = &l.geom;
    let (x, w, dy) = (
        filled(g.input_len()),
        filled(g.weight_len()),
        filled(g.output_len_total()),
    );
    let (mut y, mut dx, mut dw) = (
        vec![0f32; g.output_len_total()],
        vec![0f32; g.input_len()],
        vec![0f32; g.weight_len()],
    );
    let fwd = |y: &mut [f32], dx: &mut [f32]| {
        if l.transposed {
            (imp.backward_data)(&dy, &w, dx, g)
        } else {
            (imp.forward)(&x, &w, y, g)
        }
    };
    let bwd_data = |y: &mut [f32], dx: &mut [f32]| {
        if l.transposed {
            (imp.forward)(&x, &w, y, g)
        } else {
            (imp.backward_data)(&dy, &w, dx, g)
        }
    };
    let fwd_ms = median_ms(3, || fwd(&mut y, &mut dx));
    let (bwd_data_ms, bwd_weight_ms) = if split {
        (
            Some(median_ms(3, || bwd_data(&mut y, &mut dx))),
            Some(median_ms(3, || (imp.backward_weight)(&x, &dy, &mut dw, g))),
        )
    } else {
        (None, None)
    };
    let all_ms = median_ms(3, || {
        fwd(&mut y, &mut dx);
        bwd_data(&mut y, &mut dx);
        (imp.backward_weight)(&x, &dy, &mut dw, g);
    });
    LayerTimes {
        fwd: fwd_ms,
        bwd_data: bwd_data_ms,
        bwd_weight: bwd_weight_ms,
        fwd_bwd: all_ms,
    }
}

/// Every standard layer (or those whose name contains `layers`), one gantry rung vs the
/// im2col + ndarray baseline; with `split`, each pass also alone.
pub fn conv(
    batch: usize,
    threads: usize,
    peak: f64,
    layers: Option<&str>,
    variant: ConvVariant,
    split: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let imp = gantry_impl(variant);
    for l in standard_layers(batch) {
        if layers.is_some_and(|f| !l.name.contains(f)) {
            continue;
        }
        let ours = time_layer(&imp, &l, split);
        let base = time_layer(&IM2COL_NDARRAY, &l, split);
        let flops = l.geom.flops();
        let passes = [
            ("fwd", Some(ours.fwd), Some(base.fwd), 1.0),
            ("bwd_data", ours.bwd_data, base.bwd_data, 1.0),
            ("bwd_weight", ours.bwd_weight, base.bwd_weight, 1.0),
            ("fwd_bwd", Some(ours.fwd_bwd), Some(base.fwd_bwd), 3.0),
        ];
        for (pass, ms, base_ms, mult) in passes {
            let (Some(ms), Some(baseline_ms)) = (ms, base_ms) else {
                continue;
            };
            rows.push(Row {
                bench: "conv",
                layer: l.name.to_string(),
                pass,
                threads,
                ms,
                flops: flops * mult,
                peak_gflops: peak,
                baseline: "im2col+ndarray",
                baseline_ms,
            });
        }
    }
    rows
}

/// Full DCGAN training steps (D step + G step, Adam included) on random data: the figure to
/// compare with PyTorch's step time (`benches/pytorch_dcgan_step.py`). Returns the JSON object.
/// Runs `step` `warmup` times, then `iters` (≥ 1) timed times; returns the times in ms,
/// sorted. A step reads its losses back (which waits for the device), but the optimizer steps
/// after that are queued: each timing waits for the device before reading the clock.
fn time_steps(
    warmup: usize,
    iters: usize,
    device: gantry::Device,
    mut step: impl FnMut() -> gantry::Result<()>,
) -> gantry::Result<Vec<f64>> {
    let sync = || -> gantry::Result<()> {
        if let gantry::Device::Cuda(i) = device {
            gantry::kernels::cuda_rt::gpu(i)
                .and_then(|g| g.synchronize())
                .map_err(|e| gantry::Error::device("bench", e.0))?;
        }
        Ok(())
    };
    for _ in 0..warmup {
        step()?;
    }
    sync()?;
    let mut ms = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = std::time::Instant::now();
        step()?;
        sync()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

#[allow(clippy::too_many_arguments)]
pub fn dcgan(
    batch: usize,
    image_size: usize,
    threads: usize,
    iters: usize,
    device: gantry::Device,
    precision: gantry::Precision,
    cuda_graph: bool,
    cuda_conv: Option<gantry::kernels::conv::cuda::CudaConv>,
) -> gantry::Result<String> {
    use gantry::gan::dcgan::DcganConfig;
    use gantry::gan::train::{CudaGraphStep, Dcgan, TrainConfig, GRAPH_WARMUP_STEPS};
    use gantry::{DType, Device, Rng, Tensor};
    // A forced conv rung holds for this thread, where the steps run.
    let _rung = cuda_conv.map(gantry::precision::with_cuda_conv);
    let rung = gantry::precision::cuda_conv();
    let config = TrainConfig {
        model: DcganConfig {
            image_size,
            ..DcganConfig::default()
        },
        batch_size: batch,
        device,
        precision,
        ..TrainConfig::default()
    };
    let mut net = Dcgan::new(&config)?;
    let mut rng = Rng::new(0);
    let real = Tensor::rand(
        [batch, 3, image_size, image_size],
        -1.0,
        1.0,
        DType::F32,
        Device::Cpu,
        &mut rng,
    )?
    .to_device(device)?;
    // With a graph: the eager warm-up steps, the capture, and two replays before timing.
    let graphed = cuda_graph && matches!(device, Device::Cuda(_)) && net.scalers.is_none();
    let mut graph = graphed.then(CudaGraphStep::default);
    let warmup = if graphed {
        GRAPH_WARMUP_STEPS as usize + 3
    } else {
        2
    };
    let ms = time_steps(warmup, iters, device, || {
        match &mut graph {
            Some(g) => g.step(&mut net, &real, &mut rng, 0.0),
            None => net.step(&real, &mut rng, 0.0),
        }
        .map(drop)
    })?;
    let median = ms[ms.len() / 2];
    Ok(serde_json::json!({
        "model": "dcgan",
        "cuda_graph": graphed,
        "batch_size": batch,
        "image_size": image_size,
        "nz": 100, "ngf": 64, "ndf": 64, "nc": 3,
        "threads": threads,
        "device": device.to_string(),
        "precision": precision.name(),
        "cuda_conv": matches!(device, Device::Cuda(_)).then(|| rung.name()),
        "iters": ms.len(),
        "step_ms": median,
        "step_ms_min": ms[0],
        "images_per_s": batch as f64 / (median / 1e3),
    })
    .to_string())
}

/// Whole SRResNet training steps (phase 1: forward, pixel MSE, backward, Adam) on random
/// `[batch, 3, crop/4, crop/4]` → `[batch, 3, crop, crop]` data: one JSON object, with the
/// step's convolution FLOPs and the fraction of the measured FMA peak they reach.
pub fn srresnet(
    batch: usize,
    crop: usize,
    threads: usize,
    iters: usize,
    device: gantry::Device,
) -> gantry::Result<String> {
    use gantry::gan::srgan::train::{Phase, SrTrainConfig, Srgan};
    use gantry::gan::srgan::SrResNetConfig;
    use gantry::{DType, Device, Rng, Tensor};
    let g = SrResNetConfig::default();
    let config = SrTrainConfig {
        phase: Phase::SrResNet,
        generator: g,
        crop,
        batch_size: batch,
        device,
        ..SrTrainConfig::default()
    };
    let mut net = Srgan::new(&config)?;
    let mut rng = Rng::new(0);
    let l = crop / g.scale;
    let lr = Tensor::rand(
        [batch, 3, l, l],
        -1.0,
        1.0,
        DType::F32,
        Device::Cpu,
        &mut rng,
    )?
    .to_device(device)?;
    let hr = Tensor::rand(
        [batch, 3, crop, crop],
        -1.0,
        1.0,
        DType::F32,
        Device::Cpu,
        &mut rng,
    )?
    .to_device(device)?;
    // Convolution FLOPs of one forward pass (2 per multiply-add), layer by layer.
    let conv = |c_in: usize, c_out: usize, k: usize, side: usize| {
        2.0 * (batch * c_in * c_out * k * k * side * side) as f64
    };
    let w = g.width;
    let first = conv(3, w, 9, l);
    let mut rest = (2 * g.blocks + 1) as f64 * conv(w, w, 3, l);
    let mut side = l;
    for _ in 0..g.scale.trailing_zeros() {
        rest += conv(w, 4 * w, 3, side);
        side *= 2;
    }
    rest += conv(w, 3, 9, side);
    // Backward: data and weight gradients (2× forward), except no data gradient for the input.
    let flop = 2.0 * first + 3.0 * rest;
    let ms = time_steps(2, iters, device, || net.step(&lr, &hr).map(drop))?;
    let median = ms[ms.len() / 2];
    let gflops = flop / (median / 1e3) / 1e9;
    let peak = if device == Device::Cpu {
        Some(peak().1)
    } else {
        None
    };
    Ok(serde_json::json!({
        "model": "srresnet",
        "batch_size": batch,
        "crop": crop,
        "width": g.width, "blocks": g.blocks, "scale": g.scale,
        "threads": threads,
        "device": device.to_string(),
        "iters": ms.len(),
        "step_ms": median,
        "step_ms_min": ms[0],
        "images_per_s": batch as f64 / (median / 1e3),
        "conv_gflop_per_step": flop / 1e9,
        "gflops": gflops,
        "peak_gflops": peak,
        "fraction_of_peak": peak.map(|p| gflops / p),
    })
    .to_string())
}
