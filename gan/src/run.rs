//! The run folder every trainer shares: metrics, samples, atomic checkpoints, resume and the
//! stop on a non-finite loss.
//!
//! ```text
//! runs/<name>/
//!   metrics.csv                 one row per step (the columns are the trainer's)
//!   samples/step_000500.png
//!   checkpoint/latest           the name of the newest complete checkpoint folder
//!   checkpoint/step_000500/     the trainer's safetensors files and state.json
//! ```
//!
//! A checkpoint folder is written completely before `latest` is switched to it (atomically),
//! so an interruption at any moment leaves the previous checkpoint usable; the newest two are
//! kept. `state.json` holds the step and whatever else the trainer needs to continue exactly.

use gantry_core::{Error, Result, Rng};
use gantry_nn::checkpoint::write_atomic;
use serde_json::Value;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The newest complete checkpoint folder of a run, if any.
pub fn latest_checkpoint(run: &Path) -> Result<Option<PathBuf>> {
    let latest = run.join("checkpoint").join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name =
        std::fs::read_to_string(&latest).map_err(io(format!("reading {}", latest.display())))?;
    Ok(Some(run.join("checkpoint").join(name.trim())))
}

/// The generator weights a path names: a `.safetensors` file itself, a checkpoint folder's
/// `generator.safetensors`, or that of a run folder's latest checkpoint.
pub fn generator_file(p: &Path) -> Result<PathBuf> {
    weights_file(p, "generator.safetensors")
}

/// The weights file `name` a path names: a `.safetensors` file itself, a checkpoint folder's
/// `name`, or that of a run folder's latest checkpoint (trainers with several generators, such
/// as CycleGAN's, name the one wanted).
pub fn weights_file(p: &Path, name: &str) -> Result<PathBuf> {
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if p.join(name).is_file() {
        return Ok(p.join(name));
    }
    if let Some(dir) = latest_checkpoint(p)? {
        return Ok(dir.join(name));
    }
    Err(Error::invalid(
        "checkpoint",
        format!(
            "{} is not a generator .safetensors, a checkpoint folder or a run folder",
            p.display()
        ),
    ))
}

/// Reads a checkpoint folder's `state.json`.
pub fn read_state(dir: &Path) -> Result<Value> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid("resume", format!("{}: {e}", path.display())))
}

/// A generator's state as JSON (two decimal strings: JSON numbers lose 64-bit precision).
pub fn rng_to_json(rng: &Rng) -> Value {
    let (s, inc) = rng.state();
    serde_json::json!([s.to_string(), inc.to_string()])
}

/// The inverse of [`rng_to_json`].
pub fn rng_from_json(v: &Value) -> Result<Rng> {
    let parse = |i: usize| v[i].as_str().and_then(|s| s.parse::<u64>().ok());
    match (parse(0), parse(1)) {
        (Some(s), Some(inc)) => Ok(Rng::from_state(s, inc)),
        _ => Err(Error::invalid("resume", "state.json: bad rng state")),
    }
}

/// The error a trainer returns when a loss stops being finite.
pub fn non_finite(which: &str, v: f64) -> Error {
    Error::invalid(
        "train",
        format!("the {which} loss became {v}; training stopped"),
    )
}

/// An open run folder.
pub struct Run {
    pub dir: PathBuf,
    metrics: File,
}

impl Run {
    /// Starts a new run in `dir`, which must not hold one already.
    pub fn create(dir: &Path, metrics_header: &str) -> Result<Run> {
        if latest_checkpoint(dir)?.is_some() {
            return Err(Error::invalid(
                "train",
                format!(
                    "{} already holds a run; pass --resume to continue it, or choose another --out",
                    dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        write_atomic(
            &dir.join("metrics.csv"),
            format!("{metrics_header}\n").as_bytes(),
        )?;
        Self::open(dir)
    }

    /// Reopens the run in `dir` at its latest checkpoint: returns the run, that checkpoint's
    /// folder and its `state.json`. Metric rows after the checkpoint's step are dropped (the
    /// resumed run writes them again).
    pub fn resume(dir: &Path, metrics_header: &str) -> Result<(Run, PathBuf, Value, u64)> {
        let ckpt = latest_checkpoint(dir)?.ok_or_else(|| {
            Error::invalid(
                "resume",
                format!("{} has no checkpoint to resume from", dir.display()),
            )
        })?;
        let state = read_state(&ckpt)?;
        let step = state["step"]
            .as_u64()
            .ok_or_else(|| Error::invalid("resume", "state.json: no step"))?;
        truncate_metrics(&dir.join("metrics.csv"), metrics_header, step)?;
        Ok((Self::open(dir)?, ckpt, state, step))
    }

    fn open(dir: &Path) -> Result<Run> {
        for sub in ["samples", "checkpoint"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}", dir.join(sub).display())))?;
        }
        let path = dir.join("metrics.csv");
        let metrics = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        Ok(Run {
            dir: dir.to_path_buf(),
            metrics,
        })
    }

    /// Appends one line to `metrics.csv`.
    pub fn metrics_row(&mut self, row: &str) -> Result<()> {
        writeln!(self.metrics, "{row}").map_err(io("writing metrics.csv".into()))
    }

    /// `samples/step_NNNNNN.png`.
    pub fn sample_path(&self, step: u64) -> PathBuf {
        self.dir.join("samples").join(format!("step_{step:06}.png"))
    }

    /// Writes checkpoint `step_NNNNNN`: `save` fills the folder, then `state` goes to its
    /// `state.json`, then `latest` points at it, then older checkpoints but the previous one
    /// are removed. Returns the folder.
    pub fn checkpoint(
        &self,
        step: u64,
        state: &Value,
        save: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let name = format!("step_{step:06}");
        let dir = self.dir.join("checkpoint").join(&name);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        save(&dir)?;
        let text = serde_json::to_string_pretty(state).expect("JSON values serialise");
        write_atomic(&dir.join("state.json"), text.as_bytes())?;
        let previous = latest_checkpoint(&self.dir)?;
        write_atomic(&self.dir.join("checkpoint").join("latest"), name.as_bytes())?;
        if let Some(prev) = previous {
            prune_checkpoints(&self.dir, &[&dir, &prev]);
        }
        Ok(dir)
    }

    /// Adds the step and the last good checkpoint to a trainer's stop error (a non-finite loss).
    pub fn stopped_at(&self, e: Error, step: u64) -> Error {
        match e {
            Error::Invalid { op: "train", msg } => Error::invalid(
                "train",
                format!(
                    "{msg} at step {step}; the last good checkpoint is {}",
                    latest_checkpoint(&self.dir)
                        .ok()
                        .flatten()
                        .map_or("none".into(), |p| p.display().to_string())
                ),
            ),
            e => e,
        }
    }
}

/// Removes checkpoint folders other than `keep`.
fn prune_checkpoints(run: &Path, keep: &[&Path]) {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoint")) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !keep.iter().any(|k| *k == p) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Drops metric rows after `step` (a resumed run rewrites them).
fn truncate_metrics(path: &Path, header: &str, step: u64) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| format!("{header}\n"));
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let keep = i == 0
            || line
                .split(',')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s <= step);
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    write_atomic(path, out.as_bytes())
}
