//! Every `.cu` source compiles with NVRTC, for sm_80 (A100) and sm_90 (H100/H200), without a
//! single warning; and every kernel the Rust side launches is defined in its source. Needs only
//! the NVRTC library, no GPU. Where NVRTC is missing the test says it was skipped, unless
//! `GANTRY_REQUIRE_NVRTC=1` (set by CI, which installs the `nvidia-cuda-nvrtc` wheel), in
//! which case it fails.

use gantry_kernels::cuda_rt::{compile, nvrtc_available, SOURCES};

fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    let required = std::env::var("GANTRY_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "GANTRY_REQUIRE_NVRTC=1 but libnvrtc could not be loaded: install the `nvidia-cuda-nvrtc` \
         wheel and put its lib folder on LD_LIBRARY_PATH"
    );
    eprintln!("skipped: libnvrtc not found (set GANTRY_REQUIRE_NVRTC=1 to make this a failure)");
    false
}

#[test]
fn every_kernel_source_compiles_without_warnings() {
    if !nvrtc_or_skip() {
        return;
    }
    for src in SOURCES {
        for arch in [(8, 0), (9, 0)] {
            let c = compile(src, arch)
                .unwrap_or_else(|e| panic!("{}.cu for sm_{}{}: {e}", src.name, arch.0, arch.1));
            assert!(
                c.log.is_empty(),
                "{}.cu for sm_{}{} warns:\n{}",
                src.name,
                arch.0,
                arch.1,
                c.log
            );
            // A CUBIN is an ELF file.
            assert_eq!(&c.cubin[..4], b"\x7fELF", "{}.cu: not a CUBIN", src.name);
        }
    }
}

#[test]
fn a_broken_source_is_reported_with_the_compiler_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let bad = gantry_kernels::cuda_rt::Source {
        name: "broken",
        code: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
    };
    let e = compile(&bad, (9, 0)).unwrap_err().to_string();
    assert!(
        e.contains("broken.cu") && e.contains("undefined_name"),
        "{e}"
    );
}

/// The names in `extern "C" __global__ void NAME(` of a source.
fn defined_kernels(code: &str) -> Vec<String> {
    code.split("__global__ void ")
        .skip(1)
        .map(|rest| {
            // Skip a `__launch_bounds__(…)` between `void` and the name.
            let rest = match rest.strip_prefix("__launch_bounds__(") {
                Some(r) => &r[r.find(')').unwrap() + 1..],
                None => rest,
            };
            rest[..rest.find('(').unwrap()].trim().to_string()
        })
        .collect()
}

#[test]
fn the_tensor_core_kernels_the_rust_side_names_are_in_the_cubin() {
    // They are stamped out by a macro (`TC_KERNELS`), so their names are not in the text.
    if !nvrtc_or_skip() {
        return;
    }
    use gantry_kernels::conv::cuda::{tc, TC_SOURCE, WG_SOURCE};
    let c = compile(&TC_SOURCE, (9, 0)).unwrap();
    for name in tc::KERNELS.iter().flatten() {
        assert!(
            c.cubin.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} not in conv_tc's CUBIN"
        );
    }
    // The Hopper rung: its source refuses (#error) a 9.0 build without sm_90a's wgmma, so
    // this compile also proves the wgmma path was built.
    let c = compile(&WG_SOURCE, (9, 0)).unwrap();
    for name in tc::WG_KERNELS.iter().flatten() {
        assert!(
            c.cubin.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} not in conv_wgmma's CUBIN"
        );
    }
}

#[test]
fn every_launched_kernel_is_defined_in_its_source() {
    let ops = [
        "batch_norm",
        "conv",
        "copy",
        "elementwise",
        "gemm",
        "loss",
        "optim",
        "reduce",
        "resample",
    ];
    let root = env!("CARGO_MANIFEST_DIR");
    for op in ops {
        let rs = std::fs::read_to_string(format!("{root}/src/{op}/cuda.rs")).unwrap();
        // An op's ladder may span several sources (conv, conv_tiled, conv_tc).
        let defined: Vec<String> = SOURCES
            .iter()
            .filter(|s| s.name == op || s.name.starts_with(&format!("{op}_")))
            .flat_map(|s| defined_kernels(s.code))
            .collect();
        assert!(!defined.is_empty(), "{op} not in SOURCES");
        let mut launched = 0;
        for call in rs.split("cuda_launch!(").skip(1) {
            let name = call.split('"').nth(1).unwrap();
            assert!(
                defined.iter().any(|d| d == name),
                "{op}/cuda.rs launches {name}, not defined in {op}.cu ({defined:?})"
            );
            launched += 1;
        }
        assert!(launched > 0, "{op}/cuda.rs launches nothing");
    }
}

#[test]
fn warnings_reach_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let noisy = gantry_kernels::cuda_rt::Source {
        name: "noisy",
        code: "extern \"C\" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }",
    };
    let c = compile(&noisy, (9, 0)).unwrap();
    assert!(
        c.log.contains("unused"),
        "no warning in the log: {:?}",
        c.log
    );
}

#[test]
fn structs_passed_by_value_have_the_sizes_the_sources_assert() {
    // Each `.cu` `static_assert`s the same size, so NVRTC fails on a drift on its side.
    assert_eq!(std::mem::size_of::<gantry_kernels::cuda_rt::Strides>(), 168);
    assert_eq!(
        std::mem::size_of::<gantry_kernels::conv::cuda::ConvGeom>(),
        60
    );
    assert_eq!(
        std::mem::size_of::<gantry_kernels::optim::cuda::AdamSegment>(),
        64
    );
    assert_eq!(
        std::mem::size_of::<gantry_kernels::conv::cuda::TcGeom>(),
        104
    );
    assert_eq!(
        std::mem::size_of::<gantry_kernels::conv::cuda::EpilogueArgs>(),
        16
    );
}
