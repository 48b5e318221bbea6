//! The CUDA backend against the CPU, op by op (`gantry::device_check`), and one DCGAN training
//! step. Runs where a CUDA device is present; elsewhere each test says it was skipped.

use gantry::device_check::run;
use gantry::Device;

fn gpu_or_skip() -> bool {
    match gantry::kernels::cuda_rt::device_count() {
        Ok(n) if n > 0 => true,
        Ok(_) => {
            eprintln!("skipped: the CUDA driver reports no device");
            false
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

#[test]
fn every_op_on_the_gpu_matches_the_cpu() {
    if !gpu_or_skip() {
        return;
    }
    let reports = run(Device::Cuda(0), 11).unwrap();
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "{} ({}): {:.3e} > {:.0e}",
                r.op, r.shapes, r.max_error, r.tolerance
            )
        })
        .collect();
    assert!(failed.is_empty(), "above tolerance:\n{}", failed.join("\n"));
}

#[test]
fn a_dcgan_step_on_the_gpu_matches_the_cpu() {
    use gantry::gan::dcgan::DcganConfig;
    use gantry::gan::train::{Dcgan, TrainConfig};
    use gantry::{DType, Rng, Tensor};
    if !gpu_or_skip() {
        return;
    }
    let config = |device| TrainConfig {
        model: DcganConfig {
            image_size: 32,
            nc: 1,
            nz: 16,
            ngf: 8,
            ndf: 8,
        },
        batch_size: 8,
        device,
        ..TrainConfig::default()
    };
    let real = Tensor::rand(
        [8, 1, 32, 32],
        -1.0,
        1.0,
        DType::F32,
        Device::Cpu,
        &mut Rng::new(1),
    )
    .unwrap();
    let losses = |device| {
        let mut net = Dcgan::new(&config(device)).unwrap();
        let mut rng = Rng::new(2);
        (0..3)
            .map(|_| {
                let s = net.step(&real, &mut rng, 0.0).unwrap();
                [s.loss_d, s.loss_g]
            })
            .collect::<Vec<_>>()
    };
    let (cpu, gpu) = (losses(Device::Cpu), losses(Device::Cuda(0)));
    for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        for (a, b) in c.iter().zip(g) {
            assert!(
                (a - b).abs() <= 1e-3 * (1.0 + a.abs()),
                "step {step}: cpu {c:?}, cuda {g:?}"
            );
        }
    }
}
