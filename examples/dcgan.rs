//! A DCGAN, start to finish, with the library API only: the page to read first.
//!
//! `cargo run --release --example dcgan` trains on the built-in generated digits for 300 steps
//! (80 s on two cores) and writes `dcgan_example.png`. The CLI
//! (`gantry train dcgan`) runs the same loop with a run folder, checkpoints and resume
//! (`gan/src/train.rs`); this example spells the loop out.

use gantry::gan::data::{Digits, Loader};
use gantry::gan::dcgan::{dcgan_pair, DcganConfig};
use gantry::gan::grid::save_grid;
use gantry::nn::loss::{bce_with_logits, Reduction};
use gantry::nn::{Adam, AdamConfig, Mode, Module, ModuleExt, Optimizer};
use gantry::{no_grad, DType, Device, Result, Rng, Tensor};
use std::sync::Arc;

fn main() -> Result<()> {
    let (batch, steps) = (64, 300);
    let mut rng = Rng::new(0);

    // 1. Data: 32x32 grayscale digits in [-1, 1], drawn on the fly from the seed.
    let data = Arc::new(Digits::new(60_000, 32, 1, 0)?);

    // 2. Models: the pytorch/examples DCGAN, sized for 32x32 single-channel images, with the
    //    paper's init (conv weights N(0, 0.02), BatchNorm weights N(1, 0.02)).
    let config = DcganConfig {
        image_size: 32,
        nc: 1,
        nz: 100,
        ngf: 64,
        ndf: 64,
    };
    let (g, d) = dcgan_pair(config, &mut rng)?;
    println!(
        "generator: {} parameters, discriminator: {}",
        g.parameter_count(),
        d.parameter_count()
    );

    // 3. One Adam per network, each owning only its network's parameters.
    let mut opt_g = Adam::new(g.named_parameters(), AdamConfig::dcgan())?;
    let mut opt_d = Adam::new(d.named_parameters(), AdamConfig::dcgan())?;

    let ones = Tensor::ones([batch], DType::F32, Device::Cpu)?;
    let zeros = Tensor::zeros([batch], DType::F32, Device::Cpu)?;
    let fixed_noise = Tensor::randn([64, 100, 1, 1], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;

    let mut step = 0;
    'training: for epoch in 0.. {
        // A loader walks one epoch in a seeded shuffled order, preparing batches ahead.
        for real in Loader::new(data.clone(), batch, 0, epoch, 0)? {
            let real = real?;
            let z = Tensor::randn(
                [batch, 100, 1, 1],
                0.0,
                1.0,
                DType::F32,
                Device::Cpu,
                &mut rng,
            )?;
            let fake = g.forward(&z, Mode::Train)?;

            // 4. Discriminator step: real images should score 1, fakes 0. `detach()` stops the
            //    gradient at the fakes, so this backward pass never reaches the generator.
            let loss_d = bce_with_logits(&d.forward(&real, Mode::Train)?, &ones, Reduction::Mean)?
                .add(&bce_with_logits(
                    &d.forward(&fake.detach(), Mode::Train)?,
                    &zeros,
                    Reduction::Mean,
                )?)?;
            let grads = loss_d.backward()?; // a GradStore: gradients by tensor
            opt_d.step(&grads)?;

            // 5. Generator step: make the updated discriminator score the fakes as real. The
            //    gradient flows through D into G; only G's optimizer steps.
            let loss_g = bce_with_logits(&d.forward(&fake, Mode::Train)?, &ones, Reduction::Mean)?;
            let grads = loss_g.backward()?;
            opt_g.step(&grads)?;

            step += 1;
            if step % 50 == 0 {
                println!(
                    "epoch {epoch} step {step}: loss_d {:.3} loss_g {:.3}",
                    loss_d.to_scalar()?,
                    loss_g.to_scalar()?
                );
            }
            if step == steps {
                break 'training;
            }
        }
    }

    // 6. Samples: the generator in evaluation mode (BatchNorm uses its running statistics),
    //    without recording a graph.
    let images = no_grad(|| g.forward(&fixed_noise, Mode::Eval))?;
    save_grid(&images, std::path::Path::new("dcgan_example.png"))?;
    println!("wrote dcgan_example.png");
    Ok(())
}
