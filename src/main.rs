//! The `gantry` command-line tool.

mod bench;
mod bench_cuda;
#[cfg(feature = "cudnn")]
mod bench_cudnn;
mod cycle_cli;
mod sr_cli;
mod style_cli;
mod train_cli;

use clap::{Parser, Subcommand, ValueEnum};
use gantry::kernels::conv::cuda::CudaConv;
use gantry::{DType, Device, Rng, Tensor};
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "A from-scratch tensor and autograd engine for convolutional GANs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the build, the devices and the CPU features gantry can use.
    Info,
    /// Run a small forward and backward pass through every layer type as a smoke test; with
    /// `--device cuda`, run every op forward and backward on the GPU and on the CPU and compare.
    Check {
        /// `cpu` (the smoke test), `cuda` or `cuda:N` (the device parity check).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Seed of the random inputs of the parity check.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train a model (`gantry train dcgan`).
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Sample a trained generator into a PNG grid (and optionally a .npy).
    Generate(train_cli::GenerateArgs),
    /// Score a trained generator: Fréchet distance on a small classifier's features and the
    /// classifier score, with held-out real data for scale (not FID).
    EvalGan(train_cli::EvalArgs),
    /// Super-resolve an image with a trained SRResNet/SRGAN generator (tiled for large images).
    Upscale(sr_cli::UpscaleArgs),
    /// PSNR/SSIM (Y channel, the SR papers' protocol) of bicubic and a model on an image set.
    EvalSr(sr_cli::EvalSrArgs),
    /// Translate an image with a trained CycleGAN generator (A→B or B→A).
    Translate(cycle_cli::TranslateArgs),
    /// Neural style transfer (Gatys et al.): optimise an image against VGG-19 features.
    Stylize(style_cli::StylizeArgs),
    /// Time kernels against a baseline measured in the same run (see `src/bench.rs`).
    Bench {
        /// What to time.
        what: BenchWhat,
        /// Threads to run on (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print one JSON array of rows instead of a table.
        #[arg(long)]
        json: bool,
        /// GEMM sizes (n for n×n×n), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048")]
        sizes: Vec<usize>,
        /// Batch size of the DCGAN conv layers.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Only the conv layers whose name contains this text.
        #[arg(long)]
        layer: Option<String>,
        /// The conv rung to time against the baseline.
        #[arg(long, value_enum, default_value_t = ConvRung::Auto)]
        variant: ConvRung,
        /// Conv: also time each pass alone (rows `bwd_data` and `bwd_weight`).
        #[arg(long)]
        split: bool,
        /// Image size of the DCGAN step bench.
        #[arg(long, default_value_t = 64)]
        image_size: usize,
        /// Timed steps of the DCGAN step bench (after 2 warm-up steps).
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// HR crop side of the SRResNet step bench.
        #[arg(long, default_value_t = 96)]
        crop: usize,
        /// Device of the DCGAN and SRResNet step benches: `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Precision of the DCGAN step bench: f32, tf32, bf16 or f16 (see `train dcgan`).
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Time the DCGAN step on CUDA launched op by op instead of replayed as a CUDA graph.
        #[arg(long)]
        no_cuda_graph: bool,
        /// The CUDA conv rung of the DCGAN step bench (default: the precision's, e.g.
        /// `tc-bf16` for bf16); `wg-bf16` runs the Hopper rung. Its type must be the
        /// precision's.
        #[arg(long)]
        cuda_conv: Option<String>,
    },
}

/// `ConvVariant`, as the command line names it.
#[derive(Clone, Copy, ValueEnum)]
enum ConvRung {
    Reference,
    Im2col,
    ImplicitGemm,
    Rewrite,
    /// implicit-gemm with plain-loop packing (what a CPU without AVX-512 runs)
    PortablePack,
    /// direct convolution: the input read where it lies, only the weights packed
    Direct,
    /// direct with its plain-loop micro-kernel (what a CPU without AVX-512 runs)
    DirectPortable,
    /// Winograd: F(2x2, 3x3) for 3x3 stride-1 and F(2x2, 2x2) for 4x4 stride-2 forward and
    /// backward-data, else auto
    Winograd,
    /// stride-1 forward and weight gradient vectorised along output rows (for few output
    /// channels), else auto
    Narrow,
    /// per pass, Winograd, direct or narrow where they suit the layer, else implicit-gemm (the
    /// default)
    Auto,
}

impl From<ConvRung> for gantry::kernels::conv::ConvVariant {
    fn from(r: ConvRung) -> Self {
        use gantry::kernels::conv::ConvVariant as V;
        match r {
            ConvRung::Reference => V::Reference,
            ConvRung::Im2col => V::Im2colGemm,
            ConvRung::ImplicitGemm => V::ImplicitGemm,
            ConvRung::Rewrite => V::ImplicitGemmRewrite,
            ConvRung::PortablePack => V::ImplicitGemmPortablePack,
            ConvRung::Direct => V::Direct,
            ConvRung::DirectPortable => V::DirectPortable,
            ConvRung::Winograd => V::Winograd,
            ConvRung::Narrow => V::Narrow,
            ConvRung::Auto => V::Auto,
        }
    }
}

#[derive(Subcommand)]
enum TrainWhat {
    /// A DCGAN (Radford et al. 2015); with no arguments, on the built-in digits.
    Dcgan(train_cli::TrainArgs),
    /// SRResNet / SRGAN 4x super-resolution (Ledig et al. 2017) on a folder of HR images.
    Srgan(sr_cli::SrTrainArgs),
    /// CycleGAN (Zhu et al. 2017): unpaired translation between two image folders.
    Cyclegan(cycle_cli::CycleTrainArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchWhat {
    /// Square f32 GEMMs: gantry vs ndarray's dot.
    Gemm,
    /// The DCGAN and SRResNet conv layers: gantry vs im2col + ndarray.
    Conv,
    /// Whole DCGAN training steps (64x64 RGB, nz 100, ngf = ndf = 64): one JSON object.
    Dcgan,
    /// Whole SRResNet training steps (width 64, 16 blocks, x4, MSE + Adam): one JSON object.
    Srresnet,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => {
            info();
            Ok(())
        }
        Command::Check { device, seed } => Device::parse(&device).and_then(|d| match d {
            Device::Cpu => check(),
            d => check_device(d, seed),
        }),
        Command::Train {
            what: TrainWhat::Dcgan(args),
        } => train_cli::train_dcgan(args),
        Command::Train {
            what: TrainWhat::Srgan(args),
        } => sr_cli::train_srgan(args),
        Command::Train {
            what: TrainWhat::Cyclegan(args),
        } => cycle_cli::train_cyclegan(args),
        Command::Translate(args) => cycle_cli::translate(args),
        Command::Stylize(args) => style_cli::stylize(args),
        Command::Upscale(args) => sr_cli::upscale(args),
        Command::EvalSr(args) => sr_cli::eval_sr(args),
        Command::Generate(args) => train_cli::generate(args),
        Command::EvalGan(args) => train_cli::eval_gan(args),
        Command::Bench {
            what,
            threads,
            json,
            sizes,
            batch_size,
            layer,
            variant,
            split,
            image_size,
            iters,
            crop,
            device,
            precision,
            no_cuda_graph,
            cuda_conv,
        } => {
            if let BenchWhat::Srresnet = what {
                let threads = threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                train_cli::parse_device(&device)
                    .and_then(|device| {
                        train_cli::with_threads(Some(threads), || {
                            bench::srresnet(batch_size, crop, threads, iters, device)
                        })
                    })
                    .and_then(|r| r)
                    .map(|json| println!("{json}"))
            } else if let BenchWhat::Dcgan = what {
                let threads = threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                train_cli::parse_device(&device)
                    .and_then(|device| {
                        train_cli::with_threads(Some(threads), || {
                            let p: gantry::Precision = precision.parse()?;
                            let graph = !no_cuda_graph;
                            if cuda_conv.is_some() && device == Device::Cpu {
                                return Err(gantry::Error::invalid(
                                    "bench",
                                    "--cuda-conv picks a CUDA rung: it needs --device cuda",
                                ));
                            }
                            let rung =
                                cuda_conv.as_deref().map(|r| parse_rung(r, p)).transpose()?;
                            bench::dcgan(
                                batch_size, image_size, threads, iters, device, p, graph, rung,
                            )
                        })
                    })
                    .and_then(|r| r)
                    .map(|json| println!("{json}"))
            } else if matches!(what, BenchWhat::Conv) && device != "cpu" {
                bench_cuda_conv(&device, batch_size, layer.as_deref(), json)
            } else {
                let conv = ConvOptions {
                    batch: batch_size,
                    layer: layer.as_deref(),
                    variant: variant.into(),
                    split,
                };
                run_bench(what, threads, json, &sizes, &conv)
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The CUDA conv rung named `name`, which must multiply in precision `p`'s type (the matrix
/// products and the CPU-side rounding follow the precision).
fn parse_rung(name: &str, p: gantry::Precision) -> gantry::Result<CudaConv> {
    let names = CudaConv::ALL.map(CudaConv::name).join(", ");
    let rung = CudaConv::from_name(name).ok_or_else(|| {
        gantry::Error::invalid(
            "bench",
            format!("no CUDA conv rung {name:?} (rungs: {names})"),
        )
    })?;
    if rung.tensor_core() != p.tensor_core() {
        return Err(gantry::Error::invalid(
            "bench",
            format!("rung {name} does not multiply in precision {}", p.name()),
        ));
    }
    Ok(rung)
}

/// `bench conv --device cuda[:N]`: every rung of the CUDA ladder (see `src/bench_cuda.rs`).
fn bench_cuda_conv(
    device: &str,
    batch: usize,
    layer: Option<&str>,
    json: bool,
) -> gantry::Result<()> {
    let Device::Cuda(i) = train_cli::parse_device(device)? else {
        return Err(gantry::Error::invalid(
            "bench",
            format!("{device} is not a CUDA device"),
        ));
    };
    let cuda = |e: gantry::kernels::cuda_rt::CudaError| gantry::Error::device("bench", e.0);
    let gpu = gantry::kernels::cuda_rt::gpu(i).map_err(cuda)?;
    let rows = bench_cuda::conv(&gpu, batch, layer).map_err(cuda)?;
    if json {
        let body: Vec<String> = rows.iter().map(|r| r.json()).collect();
        let _ = writeln!(std::io::stdout(), "[{}]", body.join(",\n"));
    } else {
        let _ = writeln!(std::io::stdout(), "{gpu:?}, batch {batch}");
        for r in &rows {
            if writeln!(std::io::stdout(), "{}", r.table_line()).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// What `bench conv` times.
struct ConvOptions<'a> {
    batch: usize,
    layer: Option<&'a str>,
    variant: gantry::kernels::conv::ConvVariant,
    split: bool,
}

fn run_bench(
    what: BenchWhat,
    threads: Option<usize>,
    json: bool,
    sizes: &[usize],
    conv: &ConvOptions,
) -> gantry::Result<()> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The baseline reads its thread count once, from the environment.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| gantry::Error::invalid("bench", e.to_string()))?;
    pool.install(|| {
        let (isa, peak) = bench::peak();
        if !json {
            // Output goes through `writeln!` so a closed pipe (`| head`) ends quietly.
            let _ = writeln!(
                std::io::stdout(),
                "FMA peak ({isa:?}, {threads} threads, measured): {peak:.1} GFLOP/s"
            );
        }
        let rows = match what {
            BenchWhat::Gemm => bench::gemm(sizes, threads, peak),
            BenchWhat::Conv => bench::conv(
                conv.batch,
                threads,
                peak,
                conv.layer,
                conv.variant,
                conv.split,
            ),
            BenchWhat::Dcgan | BenchWhat::Srresnet => unreachable!("handled before"),
        };
        if json {
            let body: Vec<String> = rows.iter().map(|r| r.json()).collect();
            let _ = writeln!(std::io::stdout(), "[{}]", body.join(",\n"));
        } else {
            for r in &rows {
                if writeln!(std::io::stdout(), "{}", r.table_line()).is_err() {
                    break;
                }
            }
        }
    });
    Ok(())
}

fn info() {
    println!("gantry {}", env!("CARGO_PKG_VERSION"));
    use gantry::kernels::cuda_rt;
    let cuda = match cuda_rt::device_count() {
        Ok(0) => "driver found, no device".to_string(),
        Ok(n) => (0..n)
            .map(|i| match cuda_rt::gpu(i) {
                Ok(g) => format!("cuda:{i} {} (sm_{}{})", g.name(), g.arch().0, g.arch().1),
                Err(e) => format!("cuda:{i} unusable: {e}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => e.to_string(),
    };
    println!(
        "devices: cpu ({} threads); cuda: {cuda}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "nvrtc: {}",
        if cuda_rt::nvrtc_available() {
            "found"
        } else {
            "not found (CUDA kernels cannot be compiled)"
        }
    );
    #[cfg(target_arch = "x86_64")]
    {
        let features: Vec<&str> = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ]
        .iter()
        .filter(|f| f.1)
        .map(|f| f.0)
        .collect();
        println!(
            "cpu features: {}",
            if features.is_empty() {
                "none of avx2/fma/avx512f".into()
            } else {
                features.join(" ")
            }
        );
    }
    #[cfg(target_arch = "aarch64")]
    println!("cpu features: neon");
}

/// Every op on `device` against the CPU; a table of the largest error per case, and an error
/// (so a non-zero exit) when any case is above the tolerance.
fn check_device(device: Device, seed: u64) -> gantry::Result<()> {
    use gantry::device_check::run;
    let reports = run(device, seed)?;
    println!("{:<40} {:<44} {:>12}", "op", "inputs", "max error");
    for r in &reports {
        let flag = if r.passed() { "" } else { "  FAIL" };
        println!("{:<40} {:<44} {:>12.3e}{flag}", r.op, r.shapes, r.max_error);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.op.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(gantry::Error::invalid(
            "check",
            format!(
                "{} of {} cases on {device} differ from the CPU (or the conv reference) by more \
                 than their tolerance: {}",
                failed.len(),
                reports.len(),
                failed.join(", ")
            ),
        ));
    }
    println!(
        "ok: {} cases on {device} within their tolerance of the CPU and the conv reference",
        reports.len()
    );
    Ok(())
}

/// A DCGAN-discriminator-shaped pass (conv → batch norm → leaky ReLU → conv → BCE) and a
/// generator-shaped one (transposed conv → batch norm → ReLU → transposed conv → tanh), with
/// a backward pass each; prints the gradient norms.
fn check() -> gantry::Result<()> {
    use gantry::loss::{bce_with_logits, Reduction};
    use gantry::{Conv2dParams, ConvTranspose2dParams};
    let (cpu, f32) = (Device::Cpu, DType::F32);
    let mut rng = Rng::new(0);
    let mut randn =
        |shape: &[usize], std: f64| Tensor::randn(shape.to_vec(), 0.0, std, f32, cpu, &mut rng);

    let x = randn(&[4, 3, 16, 16], 1.0)?;
    let w1 = randn(&[8, 3, 4, 4], 0.02)?.variable();
    let w2 = randn(&[1, 8, 8, 8], 0.02)?.variable();
    let h = x.conv2d(&w1, None, Conv2dParams::new(2, 1))?;
    let h = h.batch_norm_train(None, None, 1e-5)?.0.leaky_relu(0.2)?;
    let logits = h
        .conv2d(&w2, None, Conv2dParams::default())?
        .flatten_from(0)?;
    let loss_d = bce_with_logits(&logits, &Tensor::ones([4], f32, cpu)?, Reduction::Mean)?;
    let g = loss_d.backward()?;
    println!("discriminator-shaped pass: loss {:.5}", loss_d.to_scalar()?);

    let z = randn(&[4, 16, 1, 1], 1.0)?;
    let g1 = randn(&[16, 8, 4, 4], 0.02)?.variable();
    let g2 = randn(&[8, 3, 4, 4], 0.02)?.variable();
    let y = z.conv_transpose2d(&g1, None, ConvTranspose2dParams::new(1, 0))?;
    let y = y.batch_norm_train(None, None, 1e-5)?.0.relu()?;
    let img = y
        .conv_transpose2d(&g2, None, ConvTranspose2dParams::new(2, 1))?
        .tanh()?;
    let loss_g = img.sqr()?.mean_all()?;
    let gg = loss_g.backward()?;
    println!(
        "generator-shaped pass: output {} loss {:.5}",
        img.shape(),
        loss_g.to_scalar()?
    );

    for (name, grads, p) in [
        ("d.w1", &g, &w1),
        ("d.w2", &g, &w2),
        ("g.w1", &gg, &g1),
        ("g.w2", &gg, &g2),
    ] {
        let grad = grads
            .get(p)
            .ok_or_else(|| gantry::Error::invalid("check", format!("no gradient for {name}")))?;
        let norm = grad.sqr()?.sum_all()?.sqrt()?.to_scalar()?;
        if !norm.is_finite() {
            return Err(gantry::Error::invalid(
                "check",
                format!("gradient of {name} is not finite"),
            ));
        }
        println!("  |grad {name}| = {norm:.6}");
    }
    println!("ok");
    Ok(())
}
