//! `gantry bench`: kernel timings against a baseline measured in the same process.
//!
//! Every row reports the median time, the achieved GFLOP/s, the fraction of the FMA peak the
//! bench measures itself (a register-only FMA loop on the same threads), and the ratio to the
//! baseline (`baseline_ms / ms`: above 1 means gantry is faster).
//!
//! JSON output (`--json`) is one array of row objects with the keys `bench`, `layer`, `pass`
//! (`fwd` | `fwd_bwd`), `threads`, `ms`, `gflops`, `peak_gflops`, `peak_fraction`,
//! `baseline`, `baseline_ms`, `baseline_ratio`.

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
            "{{\"bench\":\"{}\",\"layer\":\"{}\",\"pass\":\"{}\",\"threads\":{},\"ms\":{:.4},\"gflops\":{:.2},\"peak_gflops\":{:.1},\"peak_fraction\":{:.4},\"baseline\":\"{}\",\"baseline_ms\":{:.4},\"baseline_ratio\":{:.3}}}",
            self.bench,
            self.layer,
            self.pass,
            self.threads,
            self.ms,
            self.gflops(),
            self.peak_gflops,
            self.gflops() / self.peak_gflops,
            self.baseline,
            self.baseline_ms,
            self.baseline_ms / self.ms
        )
    }

    pub fn table_line(&self) -> String {
        format!(
            "{:<28} {:<7} {:>9.3} ms {:>8.1} GFLOP/s {:>6.1}% of peak   {} {:>9.3} ms  x{:.2}",
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

fn filled(len: usize) -> Vec<f32> {
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
