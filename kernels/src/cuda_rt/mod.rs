//! The CUDA machinery every op's `cuda.rs` shares: finding the driver and NVRTC, compiling the
//! `.cu` sources, caching modules and functions per device, a caching allocator, and launch
//! helpers.
//!
//! - **Loading.** cudarc loads `libcuda` and `libnvrtc` at run time (its `dynamic-loading`
//!   feature), so this crate builds and its CPU path runs with no CUDA toolkit and no GPU. cudarc
//!   *panics* when a library it is asked to use is missing, so every entry point here first asks
//!   whether the library is present ([`driver_available`], [`nvrtc_available`]) and returns a
//!   [`CudaError`] saying what is missing instead.
//! - **Compiling.** Each op folder embeds its `.cu` file with `include_str!` as a [`Source`].
//!   [`compile`] runs NVRTC for one architecture straight to CUBIN (`--gpu-architecture=sm_XY`),
//!   not PTX: a CUBIN needs no JIT in the driver, so a driver older than the NVRTC library cannot
//!   reject it for its PTX version. NVRTC's log is kept, so a test can fail on any warning.
//! - **Caching.** A [`Gpu`] per device ordinal lives for the process. It compiles a source the
//!   first time one of its kernels is launched on that device, for the device's own compute
//!   capability, and keeps the module and the looked-up functions.
//! - **Memory.** Every kernel runs on the device's one stream, so ordering needs no events. Freed
//!   `f32` buffers go back to a pool keyed by exact length ([`Gpu::recycle`]) and the next request
//!   of that length reuses one, so a training step at fixed shapes allocates nothing after the
//!   first step.
//! - **Graphs.** That stream is a created one, not the legacy default stream, because only a
//!   created stream can be captured into a CUDA graph ([`Gpu::begin_capture`]). While a capture
//!   runs, the pool hands out and takes back buffers for the graph alone (`pool.rs`), and the
//!   calls a graph cannot hold (copies to or from host memory, synchronisation, allocation) are
//!   refused with an error that says so.

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

pub use cudarc::driver::{CudaSlice, PushKernelArg};

mod pool;
use pool::{Pool, PoolBuf};

impl PoolBuf for CudaSlice<f32> {
    fn elems(&self) -> usize {
        self.len()
    }
    fn bytes(&self) -> usize {
        self.len() * 4
    }
    fn addr(&self) -> u64 {
        use cudarc::driver::DevicePtr;
        // Reading the address records nothing: event tracking is off (see `gpu`).
        self.device_ptr(self.stream()).0
    }
}

/// A failure of the CUDA path, as a message naming what failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaError(pub String);

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CudaError {}

pub type Result<T> = std::result::Result<T, CudaError>;

/// Turns a driver error into a [`CudaError`] that says what was being done.
pub(crate) fn driver<T>(
    what: &str,
    r: std::result::Result<T, cudarc::driver::DriverError>,
) -> Result<T> {
    r.map_err(|e| CudaError(format!("{what}: CUDA driver error {e:?}")))
}

/// Whether the CUDA driver library (`libcuda`) can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries `dlopen` on the candidate names; nothing is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NVRTC library (`libnvrtc`) can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

const NO_NVRTC: &str = "NVRTC (libnvrtc.so) not found: install the CUDA toolkit or the PyPI wheel \
    `nvidia-cuda-nvrtc` and put its `lib` folder on LD_LIBRARY_PATH";

/// One `.cu` file: its name (for logs and the module cache) and its text.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
}

/// Every kernel source of the crate, for the compile test and `gantry check`.
pub const SOURCES: &[Source] = &[
    crate::elementwise::cuda::SOURCE,
    crate::reduce::cuda::SOURCE,
    crate::copy::cuda::SOURCE,
    crate::gemm::cuda::SOURCE,
    crate::conv::cuda::SOURCE,
    crate::conv::cuda::TILED_SOURCE,
    crate::conv::cuda::TC_SOURCE,
    crate::conv::cuda::WG_SOURCE,
    crate::batch_norm::cuda::SOURCE,
    crate::resample::cuda::SOURCE,
    crate::loss::cuda::SOURCE,
    crate::optim::cuda::SOURCE,
];

/// The result of compiling a [`Source`]: the CUBIN and NVRTC's log (empty when it had nothing
/// to say; any text there is a warning).
#[derive(Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
}

/// Compiles `src` with NVRTC to a CUBIN for compute capability `arch` (e.g. `(9, 0)`).
pub fn compile(src: &Source, arch: (u32, u32)) -> Result<Compiled> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(CudaError(NO_NVRTC.into()));
    }
    let fail = |what: &str, e: cudarc::nvrtc::result::NvrtcError| {
        CudaError(format!("NVRTC {what} of {}.cu: {e:?}", src.name))
    };
    let code = CString::new(src.code)
        .map_err(|_| CudaError(format!("{}.cu holds a NUL byte", src.name)))?;
    let name = CString::new(format!("{}.cu", src.name)).expect("source names hold no NUL");
    let prog = result::create_program(&code, Some(&name)).map_err(|e| fail("create", e))?;
    // Hopper (9.0) compiles for sm_90a, whose code runs on 9.0 alone, for its
    // architecture-specific instructions (the wgmma rung, conv_wgmma.cu).
    let suffix = if arch == (9, 0) { "a" } else { "" };
    let options = [
        format!("--gpu-architecture=sm_{}{}{suffix}", arch.0, arch.1),
        "--std=c++17".to_string(),
        // No --use_fast_math: the kernels must compute what the CPU computes (approximate
        // expf/logf would not). Multiply-adds may contract to FMA, as the CPU's SIMD kernels do.
        "--fmad=true".to_string(),
        "--extra-device-vectorization".to_string(),
    ];
    // SAFETY: `prog` was just created and is destroyed once, below; `code` and `name` outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|l| {
                CStr::from_ptr(l.as_ptr() as *const c_char)
                    .to_string_lossy()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let cubin = compiled.map_err(|e| fail("compile", e)).and_then(|()| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| fail("CUBIN size", e))?;
            let mut cubin = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| fail("CUBIN", e))?;
            Ok(cubin)
        });
        let _ = result::destroy_program(prog);
        match cubin {
            Ok(cubin) => Ok(Compiled { cubin, log }),
            Err(CudaError(m)) => Err(CudaError(format!("{m}\n{log}"))),
        }
    };
    out
}

/// One CUDA device as the kernels use it: its context and stream, the compiled modules, and
/// the pool of free buffers.
pub struct Gpu {
    ordinal: usize,
    arch: (u32, u32),
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// A second stream for the host-to-device writes a capture must not record
    /// ([`Gpu::write_outside_graph`]).
    side: Arc<CudaStream>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    pool: Mutex<Pool<CudaSlice<f32>>>,
}

/// The most free bytes the pool keeps per device; past it, freed buffers go back to the driver.
const POOL_CAP_BYTES: usize = 8 << 30;

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Gpu(cuda:{} {} sm_{}{})",
            self.ordinal, self.name, self.arch.0, self.arch.1
        )
    }
}

/// The number of CUDA devices, or an error saying why there are none to use.
pub fn device_count() -> Result<usize> {
    if !driver_available() {
        return Err(CudaError(
            "no CUDA driver found (libcuda.so could not be loaded): this machine has no NVIDIA driver".into(),
        ));
    }
    let n = driver("counting CUDA devices", CudaContext::device_count())?;
    Ok(n.max(0) as usize)
}

/// The process-wide handle of device `ordinal`, created on first use.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    let mut gpus = GPUS
        .get_or_init(Default::default)
        .lock()
        .expect("GPU registry poisoned");
    if let Some(g) = gpus.get(&ordinal) {
        return Ok(g.clone());
    }
    let count = device_count()?;
    if ordinal >= count {
        return Err(CudaError(if count == 0 {
            format!("no CUDA device: cuda:{ordinal} requested, but the driver reports none")
        } else {
            format!(
                "no CUDA device cuda:{ordinal}: the driver reports {count} (cuda:0..cuda:{})",
                count - 1
            )
        }));
    }
    let what = format!("opening cuda:{ordinal}");
    let ctx = driver(&what, CudaContext::new(ordinal))?;
    let (major, minor) = driver(&what, ctx.compute_capability())?;
    let name = driver(&what, ctx.name())?;
    // SAFETY: every buffer is used on this device's one stream (`side` only writes buffers
    // that stream is not using: see `write_outside_graph`), so cudarc's per-buffer events, which
    // order buffers shared between streams, are not needed. Without them nothing records an
    // event during a capture, which a graph could not hold.
    unsafe { ctx.disable_event_tracking() };
    let stream = driver(&what, ctx.new_stream())?;
    let side = driver(&what, ctx.new_stream())?;
    let g = Arc::new(Gpu {
        ordinal,
        arch: (major as u32, minor as u32),
        name,
        ctx,
        stream,
        side,
        functions: Default::default(),
        modules: Default::default(),
        pool: Mutex::new(Pool::new(POOL_CAP_BYTES)),
    });
    gpus.insert(ordinal, g.clone());
    Ok(g)
}

impl Gpu {
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// Compute capability `(major, minor)`.
    pub fn arch(&self) -> (u32, u32) {
        self.arch
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Kernel `kernel` of `src`, compiling and loading `src` on first use.
    pub fn function(&self, src: &Source, kernel: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self
            .functions
            .lock()
            .expect("poisoned")
            .get(&(src.name, kernel))
        {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.modules.lock().expect("poisoned");
            match modules.get(src.name) {
                Some(m) => m.clone(),
                None => {
                    let c = compile(src, self.arch)?;
                    let m = driver(
                        &format!("loading {}.cu on cuda:{}", src.name, self.ordinal),
                        self.ctx
                            .load_module(cudarc::nvrtc::Ptx::from_binary(c.cubin)),
                    )?;
                    modules.insert(src.name, m.clone());
                    m
                }
            }
        };
        let f = driver(
            &format!("kernel {kernel} of {}.cu", src.name),
            module.load_function(kernel),
        )?;
        self.functions
            .lock()
            .expect("poisoned")
            .insert((src.name, kernel), f.clone());
        Ok(f)
    }

    /// An `f32` buffer of `len` values whose contents are unspecified (the caller writes every
    /// one), from the pool when one of that length is free.
    pub fn alloc_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        let len = len.max(1);
        {
            let mut pool = self.pool.lock().expect("poisoned");
            if let Some(b) = pool.take(len) {
                return Ok(b);
            }
            if pool.capturing().is_some() {
                return Err(CudaError(format!(
                    "CUDA graph capture on cuda:{}: the step needed a new buffer of {len} f32, \
                     which a graph cannot allocate; run the step once without capture first \
                     so that the pool holds every buffer it uses",
                    self.ordinal
                )));
            }
        }
        // SAFETY: the buffer is uninitialised; every caller overwrites it before reading.
        driver(
            &format!("allocating {len} f32 on cuda:{}", self.ordinal),
            unsafe { self.stream.alloc::<f32>(len) },
        )
    }

    /// A zero-filled `f32` buffer of `len` values.
    pub fn zeros_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        // A memset is a graph node, so this is allowed during a capture.
        let mut b = self.alloc_f32(len)?;
        driver("zeroing a buffer", self.stream.memset_zeros(&mut b))?;
        Ok(b)
    }

    /// Returns a buffer to the pool (or to the driver, once the pool holds its cap).
    pub fn recycle(&self, b: CudaSlice<f32>) {
        let over = self.pool.lock().expect("poisoned").put(b);
        drop(over);
    }

    /// How many buffers this device has allocated from the driver so far (the pool's misses),
    /// and the bytes now free in the pool.
    pub fn pool_stats(&self) -> (u64, usize) {
        let pool = self.pool.lock().expect("poisoned");
        (pool.allocations, pool.free_bytes())
    }

    /// Frees every pooled buffer (captured graphs keep theirs).
    pub fn release_buffers(&self) {
        let freed = self.pool.lock().expect("poisoned").drain();
        drop(freed);
    }

    /// An error when a graph is being captured on this device: `what` (a host copy, a
    /// synchronisation, an allocation outside the pool) cannot be part of a graph.
    fn not_capturing(&self, what: &str) -> Result<()> {
        match self.pool.lock().expect("poisoned").capturing() {
            None => Ok(()),
            Some(_) => Err(CudaError(format!(
                "{what} on cuda:{} while a CUDA graph is being captured: a graph can hold \
                 only device work (kernels, device copies, memsets), so the captured step \
                 must take its inputs from device buffers and read its results after replay",
                self.ordinal
            ))),
        }
    }

    /// Whether a CUDA graph is being captured on this device.
    pub fn is_capturing(&self) -> bool {
        self.pool.lock().expect("poisoned").capturing().is_some()
    }

    /// A zero-filled buffer of any plain type (indices, tables).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.not_capturing("allocating a buffer outside the pool")?;
        driver(
            "allocating a buffer",
            self.stream.alloc_zeros::<T>(len.max(1)),
        )
    }

    /// A copy of `data` on the device.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.not_capturing("copying host values to a new buffer")?;
        driver(
            &format!("copying {} values to cuda:{}", data.len(), self.ordinal),
            self.stream.clone_htod(data),
        )
    }

    /// An `f32` copy of `data` on the device, in a pooled buffer.
    pub fn upload_f32(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        self.not_capturing("copying host values to the device")?;
        let mut b = self.alloc_f32(data.len())?;
        self.write(data, &mut b)?;
        Ok(b)
    }

    /// The first `len` values of `buf`, copied to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaSlice<T>,
        len: usize,
    ) -> Result<Vec<T>> {
        self.not_capturing("copying values to the host")?;
        let mut out = vec![T::default(); len];
        if len > 0 {
            driver(
                &format!("copying {len} values from cuda:{}", self.ordinal),
                self.stream.memcpy_dtoh(&buf.slice(..len), &mut out),
            )?;
        }
        Ok(out)
    }

    /// A device-side copy of the first `len` values of `buf`, in a pooled buffer.
    pub fn copy_f32(&self, buf: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
        let mut out = self.alloc_f32(len)?;
        if len > 0 {
            driver(
                "copying on the device",
                self.stream.memcpy_dtod(&buf.slice(..len), &mut out),
            )?;
        }
        Ok(out)
    }

    /// Waits until every kernel queued so far has finished, and reports a failure of any.
    pub fn synchronize(&self) -> Result<()> {
        self.not_capturing("waiting for the device")?;
        driver(
            &format!("synchronising cuda:{}", self.ordinal),
            self.stream.synchronize(),
        )
    }

    /// Copies `data` into the start of an existing buffer, in stream order (not during a
    /// capture: the graph would read the host memory at replay).
    pub fn write<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        self.not_capturing("copying host values to the device")?;
        if data.is_empty() {
            return Ok(());
        }
        driver(
            &format!("copying {} values to cuda:{}", data.len(), self.ordinal),
            self.stream
                .memcpy_htod(data, &mut dst.slice_mut(..data.len())),
        )
    }

    /// Copies the first `len` values of `src` into `dst` on the device (a graph node when
    /// captured).
    pub fn copy_into(
        &self,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        driver(
            "copying on the device",
            self.stream
                .memcpy_dtod(&src.slice(..len), &mut dst.slice_mut(..len)),
        )
    }

    /// Writes `data` into `dst` now, not as part of a graph being captured: a table of per-step
    /// constants that captured kernels read through a pointer, and that the host rewrites before
    /// every replay. Outside a capture it is [`Gpu::write`]. During one the copy runs on a side
    /// stream and is waited for; the main stream is idle then ([`Gpu::begin_capture`] waits for
    /// it), so no queued kernel can be reading `dst`.
    pub fn write_outside_graph<T: DeviceRepr>(
        &self,
        data: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        if !self.is_capturing() {
            return self.write(data, dst);
        }
        if data.is_empty() {
            return Ok(());
        }
        let what = format!(
            "writing {} values to cuda:{} beside a capture",
            data.len(),
            self.ordinal
        );
        driver(
            &what,
            self.side
                .memcpy_htod(data, &mut dst.slice_mut(..data.len())),
        )?;
        driver(&what, self.side.synchronize())
    }

    /// Starts capturing this device's stream into a graph: kernels and device copies queued
    /// from now on are recorded, not run, until [`Gpu::end_capture`]. Waits for queued work
    /// first. Every buffer handed out or freed until then becomes the graph's (`pool.rs`).
    pub fn begin_capture(&self) -> Result<()> {
        self.synchronize()?;
        let id = self
            .pool
            .lock()
            .expect("poisoned")
            .begin()
            .map_err(|e| CudaError(format!("begin_capture on cuda:{}: {e}", self.ordinal)))?;
        // Relaxed: the capture does not forbid calls outside the stream (loading a module,
        // setting a kernel attribute); what cannot be captured is refused by `not_capturing`.
        let mode = cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        if let Err(e) = driver(
            &format!("beginning a graph capture on cuda:{}", self.ordinal),
            self.stream.begin_capture(mode),
        ) {
            drop(self.pool.lock().expect("poisoned").release(id));
            return Err(e);
        }
        Ok(())
    }

    /// Ends the capture begun by [`Gpu::begin_capture`] and instantiates the graph. On failure
    /// (a call during the capture invalidated it) the graph's buffers go back to the pool.
    pub fn end_capture(self: &Arc<Self>) -> Result<Graph> {
        let id = {
            let mut pool = self.pool.lock().expect("poisoned");
            let id = pool.capturing().ok_or_else(|| {
                CudaError(format!(
                    "end_capture on cuda:{}: no capture to end",
                    self.ordinal
                ))
            })?;
            pool.end();
            id
        };
        let flags = cudarc::driver::sys::CUgraphInstantiate_flags(0);
        match self.stream.end_capture(flags) {
            Ok(Some(graph)) => Ok(Graph {
                graph,
                gpu: self.clone(),
                id,
            }),
            other => {
                drop(self.pool.lock().expect("poisoned").release(id));
                Err(CudaError(format!(
                    "ending the graph capture on cuda:{}: {}",
                    self.ordinal,
                    match other {
                        Err(e) => format!("CUDA driver error {e:?}"),
                        _ => "the capture recorded nothing".into(),
                    }
                )))
            }
        }
    }
}

/// A captured, instantiated CUDA graph and the buffers it was captured with. Dropping it
/// returns those buffers to the device's pool.
pub struct Graph {
    graph: cudarc::driver::CudaGraph,
    gpu: Arc<Gpu>,
    id: u64,
}

impl Graph {
    /// Queues one replay of the graph on the device's stream.
    pub fn launch(&self) -> Result<()> {
        self.gpu.not_capturing("launching a graph")?;
        driver(
            &format!("launching a CUDA graph on cuda:{}", self.gpu.ordinal),
            self.graph.launch(),
        )
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // The graph's last replay may still be running; its buffers must not be handed out
        // before it ends. During another capture the wait is refused, but then none can be:
        // `begin_capture` waited for the stream and launches are refused until the capture
        // ends. A device failure here is reported by the next call on the stream.
        let _ = self.gpu.synchronize();
        let freed = self.gpu.pool.lock().expect("poisoned").release(self.id);
        drop(freed);
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Graph(cuda:{}, #{})", self.gpu.ordinal, self.id)
    }
}

/// Threads per block of the elementwise (grid-stride) kernels.
pub const BLOCK: u32 = 256;

/// A one-dimensional launch over `n` items: blocks of [`BLOCK`] threads, capped so that large
/// `n` is covered by the kernels' grid-stride loops instead of a huge grid.
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of [`BLOCK`] threads per item (`n` items, e.g. one per channel of a reduction).
pub fn block_per_item(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.clamp(1, i32::MAX as usize) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The largest rank of the strided kernels' shape descriptors.
pub const MAX_RANK: usize = 8;

/// A shape and up to two stride vectors passed to a kernel by value (`struct Strides` in the
/// `.cu` files). Dimensions beyond `rank` are unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Strides {
    pub rank: u32,
    pub shape: [u32; MAX_RANK],
    pub a: [u64; MAX_RANK],
    pub b: [u64; MAX_RANK],
}

// SAFETY: a plain `repr(C)` struct of integers, laid out as `struct Strides` in the `.cu` files.
unsafe impl DeviceRepr for Strides {}

impl Strides {
    /// The descriptor of `shape` with strides `a` and `b` (same rank), or an error when the
    /// rank is above [`MAX_RANK`] or a dimension does not fit 32 bits.
    pub fn new(op: &str, shape: &[usize], a: &[usize], b: &[usize]) -> Result<Strides> {
        if shape.len() > MAX_RANK {
            return Err(CudaError(format!(
                "{op}: rank {} above the CUDA kernels' limit of {MAX_RANK}",
                shape.len()
            )));
        }
        let mut s = Strides {
            rank: shape.len() as u32,
            ..Default::default()
        };
        for d in 0..shape.len() {
            s.shape[d] = u32::try_from(shape[d])
                .map_err(|_| CudaError(format!("{op}: dimension {} too large", shape[d])))?;
            s.a[d] = a[d] as u64;
            s.b[d] = b[d] as u64;
        }
        Ok(s)
    }
}

/// Launches `$f` on `$gpu`'s stream with config `$cfg` and the given arguments, turning a
/// launch failure into a [`CudaError`] naming the kernel.
#[macro_export]
#[doc(hidden)]
macro_rules! cuda_launch {
    ($gpu:expr, $src:expr, $kernel:literal, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        use $crate::cuda_rt::PushKernelArg;
        let f = $gpu.function(&$src, $kernel)?;
        let mut b = $gpu.stream().launch_builder(&f);
        // One expression, so temporaries among the arguments live until the launch.
        // SAFETY: the argument list matches the kernel's signature in its `.cu` file (each
        // launch site is written beside it), and the buffers are at least as long as the
        // geometry passed with them says.
        let r = unsafe { b $(.arg($arg))* .launch($cfg) };
        $crate::cuda_rt::driver(concat!("launching ", $kernel), r).map(|_| ())
    }};
}

/// `u64` of a length, for the kernels' `unsigned long long n` arguments.
#[inline]
pub fn n64(n: usize) -> u64 {
    n as u64
}

/// The device address of an optional buffer, 0 (a null pointer in the kernel) for `None`: how
/// optional operands (an absent bias or affine weight) are passed.
pub fn ptr_or_null<T>(gpu: &Gpu, b: Option<&CudaSlice<T>>) -> u64 {
    use cudarc::driver::DevicePtr;
    b.map_or(0, |b| b.device_ptr(gpu.stream()).0)
}
