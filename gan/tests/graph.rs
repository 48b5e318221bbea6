//! The host half of a captured CUDA graph step, checked on the CPU: a replay runs no host code,
//! so everything the host does per step beside launching kernels (Adam's step counts and the
//! constants it derives from them, BatchNorm's batch counters) is registered as a hook during
//! the capture and run before every replay. Here a step runs under `record_hooks` (its ops run
//! as usual), and then the hooks run as replays would run them: the counters must advance as
//! if every replay had been an ordinary step. (The device half, replay against eager, is a
//! case of `gantry check --device cuda`.)

use gantry_core::graph::record_hooks;
use gantry_core::{DType, Device, Rng, Tensor};
use gantry_gan::dcgan::DcganConfig;
use gantry_gan::train::{Dcgan, TrainConfig};
use gantry_nn::{BatchNorm2d, Mode, Module, ModuleExt};

fn config() -> TrainConfig {
    TrainConfig {
        model: DcganConfig {
            image_size: 16,
            nc: 1,
            nz: 8,
            ngf: 8,
            ndf: 8,
        },
        batch_size: 4,
        seed: 5,
        ..Default::default()
    }
}

/// `num_batches_tracked` of every BatchNorm of a network, in order.
fn tracked(m: &dyn Module) -> Vec<i64> {
    m.named_buffers()
        .into_iter()
        .filter(|(n, _)| n.ends_with("num_batches_tracked"))
        .map(|(_, t)| t.to_vec::<i64>().unwrap()[0])
        .collect()
}

fn adam_steps(net: &Dcgan) -> (u64, u64) {
    (
        net.opt_d.steps_of("main.0.weight").unwrap(),
        net.opt_g.steps_of("main.0.weight").unwrap(),
    )
}

#[test]
fn replay_hooks_advance_the_host_state_as_ordinary_steps_do() {
    let mut rng = Rng::new(1);
    let mut net = Dcgan::new(&config()).unwrap();
    let real = Tensor::rand([4, 1, 16, 16], -1.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let z = Tensor::randn([4, 8, 1, 1], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();

    // One ordinary step, as the warm-up before a capture.
    net.step_tensors(&real, &z, 0.0).unwrap().read().unwrap();
    assert_eq!(adam_steps(&net), (1, 1));
    // G's BatchNorms see one batch per step; D's three (real, fake, and fake again for G).
    assert_eq!(tracked(&net.g), vec![1, 1]);
    assert_eq!(tracked(&net.d), vec![3]);

    // The "captured" step: it runs (on the CPU) and registers its hooks.
    let (out, mut hooks) = record_hooks(|| net.step_tensors(&real, &z, 0.0)).unwrap();
    out.read().unwrap();
    assert_eq!(adam_steps(&net), (2, 2));
    assert_eq!(tracked(&net.g), vec![2, 2]);
    assert_eq!(tracked(&net.d), vec![6]);
    // One hook per optimizer step and one per BatchNorm update.
    assert_eq!(hooks.len(), 2 + 2 + 3);

    // Three replays' worth of host work.
    for _ in 0..3 {
        hooks.run().unwrap();
    }
    assert_eq!(adam_steps(&net), (5, 5));
    assert_eq!(tracked(&net.g), vec![5, 5]);
    assert_eq!(tracked(&net.d), vec![15]);

    // The checkpointed optimizer state says so too.
    let state = gantry_nn::Optimizer::state_tensors(&net.opt_g).unwrap();
    let step = state
        .iter()
        .find(|(n, _)| n == "main.0.weight.step")
        .map(|(_, t)| t.to_scalar().unwrap())
        .unwrap();
    assert_eq!(step, 5.0);
}

#[test]
fn a_cumulative_batch_norm_cannot_be_captured() {
    let bn = BatchNorm2d::new(3).unwrap().with_momentum(None);
    let x = Tensor::ones([2, 3, 2, 2], DType::F32, Device::Cpu).unwrap();
    // Eagerly it is fine...
    bn.forward(&x, Mode::Train).unwrap();
    // ...but its blend factor changes every batch, which a graph would freeze.
    let e = record_hooks(|| bn.forward(&x, Mode::Train))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("momentum None") && e.contains("CUDA graph"),
        "{e}"
    );
}
