//! Safetensors checkpoints of modules and optimizers.
//!
//! A module's checkpoint holds every parameter and buffer under its PyTorch `state_dict` name,
//! in its own dtype (f32 weights, an i64 `num_batches_tracked`), so
//! `safetensors.torch.load_file` + `load_state_dict` open it in PyTorch, and a PyTorch
//! `state_dict` saved with `safetensors.torch.save_file` loads here.
//!
//! Loading is strict: every name the module has must be in the file with the module's shape
//! and dtype, and the file may hold nothing else. All problems are collected and reported in
//! one error, and nothing is changed unless the whole file fits. Writes go to a temporary file
//! in the destination's folder, then are renamed over the destination, so a crash mid-write
//! never leaves a truncated checkpoint behind.

use crate::module::{Module, ModuleExt};
use gantry_core::{DType, Device, Error, Result, Tensor};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The tensors of a file, in the file's order, and its free-form string metadata.
#[derive(Debug, Default)]
pub struct TensorFile {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed to disk, then
/// renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid("write", format!("{} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f =
            std::fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io_err(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn to_st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::U32 => Dtype::U32,
        DType::I64 => Dtype::I64,
    }
}

fn from_st_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::U32 => DType::U32,
        Dtype::I64 => DType::I64,
        _ => return None,
    })
}

/// A tensor's elements as little-endian bytes.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    macro_rules! le {
        ($t:ty) => {
            t.to_vec::<$t>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        };
    }
    Ok(match t.dtype() {
        DType::F32 => le!(f32),
        DType::F64 => le!(f64),
        DType::F16 => le!(f16),
        DType::BF16 => le!(bf16),
        DType::U32 => le!(u32),
        DType::I64 => le!(i64),
    })
}

fn tensor_from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
    macro_rules! from_le {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            let v: Vec<$t> = bytes
                .chunks_exact(N)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of N bytes")))
                .collect();
            Tensor::from_vec(v, shape, Device::Cpu)
        }};
    }
    match dtype {
        DType::F32 => from_le!(f32),
        DType::F64 => from_le!(f64),
        DType::F16 => from_le!(f16),
        DType::BF16 => from_le!(bf16),
        DType::U32 => from_le!(u32),
        DType::I64 => from_le!(i64),
    }
}

/// Serialises named tensors (and optional metadata) in the safetensors format.
pub fn to_safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let op = "save_safetensors";
    let mut seen = std::collections::HashSet::new();
    let mut data = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::invalid(
                op,
                format!("two tensors are named {name:?}"),
            ));
        }
        data.push((name.clone(), t.dtype(), t.dims().to_vec(), tensor_bytes(t)?));
    }
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(to_st_dtype(*dtype), shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid(op, format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::invalid(op, e.to_string()))
}

/// Parses safetensors bytes; `what` names the source in errors.
pub fn from_safetensors_bytes(bytes: &[u8], what: &str) -> Result<TensorFile> {
    let op = "load_safetensors";
    let corrupt = |e: safetensors::SafeTensorError| {
        Error::invalid(op, format!("{what} is not a valid safetensors file: {e}"))
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
    // The file's order: by data offset (the header itself is a JSON map without order).
    let mut names: Vec<(usize, String)> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| (info.data_offsets.0, name))
        .collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for (_, name) in names {
        let view = st.tensor(&name).map_err(corrupt)?;
        let dtype = from_st_dtype(view.dtype()).ok_or_else(|| {
            Error::dtype(
                op,
                format!(
                    "{what}: tensor {name} has unsupported dtype {:?}",
                    view.dtype()
                ),
            )
        })?;
        let t = tensor_from_bytes(dtype, view.shape(), view.data())?;
        tensors.push((name, t));
    }
    Ok(TensorFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Writes named tensors to a safetensors file, atomically.
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_atomic(path.as_ref(), &to_safetensors_bytes(tensors, metadata)?)
}

/// Reads every tensor of a safetensors file.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    from_safetensors_bytes(&bytes, &path.display().to_string())
}

/// A module's parameters and buffers by their `state_dict` names (sharing storage with the
/// module: copy before modifying).
pub fn state_dict(module: &dyn Module) -> Vec<(String, Tensor)> {
    module
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.tensor))
        .collect()
}

/// Copies `tensors` into the module's parameters and buffers, matched by name. Strict: the
/// names must be exactly the module's, with the module's shapes and dtypes; otherwise the
/// error lists every missing name, every unexpected name and every shape or dtype mismatch,
/// and the module is left unchanged.
pub fn load_state_dict(module: &dyn Module, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut given: BTreeMap<&str, &Tensor> = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, t) in tensors {
        if given.insert(name.as_str(), t).is_some() {
            problems.push(format!("duplicate: {name}"));
        }
    }
    let own = module.named_tensors();
    let mut pairs = Vec::with_capacity(own.len());
    for slot in &own {
        match given.remove(slot.name.as_str()) {
            None => problems.push(format!("missing: {} {}", slot.name, slot.tensor.shape())),
            Some(t) if t.shape() != slot.tensor.shape() => problems.push(format!(
                "wrong shape: {} is {} in the file but {} in the model",
                slot.name,
                t.shape(),
                slot.tensor.shape()
            )),
            Some(t) if t.dtype() != slot.tensor.dtype() => problems.push(format!(
                "wrong dtype: {} is {} in the file but {} in the model",
                slot.name,
                t.dtype(),
                slot.tensor.dtype()
            )),
            Some(t) => pairs.push((&slot.tensor, t)),
        }
    }
    for (name, t) in given {
        problems.push(format!("unexpected: {name} {}", t.shape()));
    }
    if !problems.is_empty() {
        return Err(Error::invalid(
            "load_state_dict",
            format!(
                "{} problem(s), nothing loaded:\n  {}",
                problems.len(),
                problems.join("\n  ")
            ),
        ));
    }
    for (dst, src) in pairs {
        dst.set(src)?;
    }
    Ok(())
}

/// Saves a module's `state_dict` as safetensors, atomically.
pub fn save(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    save_tensors(path, &state_dict(module), None)
}

/// Loads a safetensors `state_dict` into a module (strictly, see [`load_state_dict`]).
pub fn load(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = load_tensors(path)?;
    load_state_dict(module, &file.tensors).map_err(|e| match e {
        Error::Invalid { op, msg } => Error::Invalid {
            op,
            msg: format!("{}: {msg}", path.display()),
        },
        e => e,
    })
}
