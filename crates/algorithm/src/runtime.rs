//! The sandbox: wasmtime (Cranelift) with fuel, an epoch deadline for wall time and a memory
//! limit, and no imports at all, so a module has no filesystem, network, clock or randomness:
//! the same module on the same input gives the same output (NaNs canonicalised).
//!
//! The host interface, for modules in any language that compiles to WebAssembly:
//!
//! - the module exports its `memory`, `alloc(len: i32) -> i32` (a buffer of `len` bytes for
//!   the input) and `run(ptr: i32, len: i32) -> i64`;
//! - the host writes the input, a UTF-8 JSON object `{"collection": {"field": value, ...}, ...}`
//!   holding only the fields the manifest reads (and the decisions allowed), at the pointer
//!   `alloc` returned, then calls `run(ptr, len)`;
//! - `run` returns the output's place as `(ptr << 32) | len`: a UTF-8 JSON object whose members
//!   are output fields the manifest declares, of their declared types and sizes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Instance, Module, Store, StoreLimits, StoreLimitsBuilder, Trap};

use crate::error::{Limit, RunError};
use crate::manifest::{MAX_OUTPUT_BYTES, Manifest, OutputType};

/// How often the engine's epoch advances: the wall-time limit's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Compiled modules kept, by digest.
const CACHED_MODULES: usize = 32;

/// Protected input values shorter than this are not looked for in the output: a two-letter
/// value would refuse outputs that merely share a word with it.
pub const MIN_ECHO_CHECK_CHARS: usize = 4;

/// The input of one run: per collection, per field, the value; and which of them are
/// protected (their values must never appear in the output).
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub fields: BTreeMap<String, BTreeMap<String, Value>>,
    /// `(collection, field)` pairs whose values are protected.
    pub protected: Vec<(String, String)>,
}

/// A successful run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The output, checked against the manifest.
    pub output: serde_json::Map<String, Value>,
    /// SHA-256 of the output as the module wrote it, hex.
    pub output_sha256: String,
    pub fuel_used: u64,
    pub duration: Duration,
}

/// Runs released modules. One per gateway; cheap to share.
pub struct Runtime {
    engine: Engine,
    modules: Mutex<HashMap<String, Module>>,
    ticking: Arc<AtomicBool>,
}

impl Runtime {
    /// The engine and the thread that advances its epochs.
    pub fn new() -> Result<Runtime, RunError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        // Determinism: the same input gives the same output on every machine.
        config.cranelift_nan_canonicalization(true);
        config.relaxed_simd_deterministic(true);
        let engine = Engine::new(&config).map_err(|e| RunError::Module(e.to_string()))?;
        let ticking = Arc::new(AtomicBool::new(true));
        let (ticker, running) = (engine.clone(), ticking.clone());
        std::thread::Builder::new()
            .name("algorithm-epochs".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| RunError::Module(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            modules: Mutex::default(),
            ticking,
        })
    }

    /// The module compiled, from the cache or now: its bytes must have the manifest's digest,
    /// and it may import nothing.
    fn module(&self, manifest: &Manifest, bytes: &[u8]) -> Result<Module, RunError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if digest != manifest.module_sha256 {
            return Err(RunError::Module(format!(
                "its SHA-256 is {digest}, the manifest names {}",
                manifest.module_sha256
            )));
        }
        if let Some(m) = self
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(m.clone());
        }
        let module =
            Module::new(&self.engine, bytes).map_err(|e| RunError::Module(format!("{e:#}")))?;
        if let Some(import) = module.imports().next() {
            return Err(RunError::Module(format!(
                "it imports `{}::{}`; released modules get no imports (no files, network, clock or randomness)",
                import.module(),
                import.name()
            )));
        }
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if modules.len() >= CACHED_MODULES {
            modules.clear();
        }
        modules.insert(digest, module.clone());
        Ok(module)
    }

    /// Runs the module of `manifest` on `input`, within the manifest's limits, and checks the
    /// output against it.
    pub fn run(
        &self,
        manifest: &Manifest,
        module: &[u8],
        input: &Input,
    ) -> Result<Outcome, RunError> {
        check_input(manifest, input)?;
        let module = self.module(manifest, module)?;
        let limits = manifest.limits;
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine,
            StoreLimitsBuilder::new()
                .memory_size(memory)
                .memories(1)
                .tables(1)
                .table_elements(100_000)
                .instances(1)
                .trap_on_grow_failure(true)
                .build(),
        );
        store.limiter(|limits: &mut StoreLimits| limits);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| RunError::Module(e.to_string()))?;
        store.set_epoch_deadline(limits.wall_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1);
        let started = Instant::now();
        let result = self.call(&mut store, &module, input);
        let duration = started.elapsed();
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let written = result.map_err(|e| stopped(e, fuel_used >= limits.fuel))?;
        let output = check_output(manifest, input, &written)?;
        Ok(Outcome {
            output,
            output_sha256: hex::encode(Sha256::digest(&written)),
            fuel_used,
            duration,
        })
    }

    /// Instantiates, writes the input, calls `run` and reads the output bytes.
    fn call(
        &self,
        store: &mut Store<StoreLimits>,
        module: &Module,
        input: &Input,
    ) -> wasmtime::Result<Vec<u8>> {
        let instance = Instance::new(&mut *store, module, &[])?;
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| wasmtime::Error::msg("abi: the module exports no `memory`"))?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "alloc")?;
        let run = instance.get_typed_func::<(i32, i32), i64>(&mut *store, "run")?;
        let bytes = serde_json::to_vec(&input.fields).expect("JSON values serialise");
        let len = i32::try_from(bytes.len())
            .map_err(|_| wasmtime::Error::msg("abi: the input is too large"))?;
        let ptr = alloc.call(&mut *store, len)?;
        memory
            .write(&mut *store, ptr as u32 as usize, &bytes)
            .map_err(|_| wasmtime::Error::msg("abi: `alloc` returned a buffer outside memory"))?;
        let place = run.call(&mut *store, (ptr, len))? as u64;
        let (out_ptr, out_len) = ((place >> 32) as usize, (place & 0xffff_ffff) as usize);
        if out_len > MAX_OUTPUT_BYTES * 4 {
            return Err(wasmtime::Error::msg(format!(
                "abi: an output of {out_len} bytes is larger than any manifest allows"
            )));
        }
        let mut out = vec![0; out_len];
        memory
            .read(&*store, out_ptr, &mut out)
            .map_err(|_| wasmtime::Error::msg("abi: `run` returned an output outside memory"))?;
        Ok(out)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

/// A failed call as the run's error: which limit stopped it, or the trap.
fn stopped(e: wasmtime::Error, fuel_spent: bool) -> RunError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => RunError::Limit(Limit::Fuel),
        Some(Trap::Interrupt) => RunError::Limit(Limit::WallTime),
        _ if fuel_spent => RunError::Limit(Limit::Fuel),
        _ => {
            let message = format!("{e:#}");
            // A grow beyond the limit traps (trap_on_grow_failure), and so does an
            // instantiation asking for more memory than allowed.
            if message.contains("memory") && (message.contains("limit") || message.contains("grow"))
            {
                RunError::Limit(Limit::Memory)
            } else if message.starts_with("abi: ") || message.contains("export") {
                RunError::Module(message)
            } else {
                RunError::Trap(message)
            }
        }
    }
}

/// The input may hold only fields the manifest reads.
fn check_input(manifest: &Manifest, input: &Input) -> Result<(), RunError> {
    for (collection, fields) in &input.fields {
        let Some(read) = manifest.reads.iter().find(|r| &r.collection == collection) else {
            return Err(RunError::Input(format!(
                "the manifest reads nothing of `{collection}`"
            )));
        };
        if let Some(field) = fields.keys().find(|f| !read.fields.contains(f)) {
            return Err(RunError::Input(format!(
                "the manifest does not read `{collection}.{field}`"
            )));
        }
    }
    Ok(())
}

/// The output must be a JSON object of declared fields, each of its type and size, and must
/// not repeat any protected input value.
fn check_output(
    manifest: &Manifest,
    input: &Input,
    written: &[u8],
) -> Result<serde_json::Map<String, Value>, RunError> {
    // No parser message, no sizes, no member names the manifest does not declare in any
    // message: a module could spell out what it read in them.
    let value: Value = serde_json::from_slice(written)
        .map_err(|_| RunError::Output("it is not JSON".to_string()))?;
    let Value::Object(output) = value else {
        return Err(RunError::Output("not a JSON object".to_string()));
    };
    for (name, value) in &output {
        let Some(declared) = manifest.output(name) else {
            return Err(RunError::Output(
                "it has a member that is not a declared output".to_string(),
            ));
        };
        let typed = match declared.kind {
            OutputType::String => value.is_string(),
            OutputType::Number => value.is_number(),
            OutputType::Boolean => value.is_boolean(),
            OutputType::StringList => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
        };
        if !typed {
            return Err(RunError::Output(format!(
                "`{name}` is not of its declared type"
            )));
        }
        let size = value.to_string().len();
        if size > declared.max_bytes {
            return Err(RunError::Output(format!(
                "`{name}` is larger than its declared {} bytes",
                declared.max_bytes
            )));
        }
    }
    // The output as text, each string unescaped, so an escaped copy is found too.
    let mut texts = Vec::new();
    leaves(&Value::Object(output.clone()), &mut texts);
    let written_text = String::from_utf8_lossy(written);
    for (collection, field) in &input.protected {
        let Some(value) = input.fields.get(collection).and_then(|f| f.get(field)) else {
            continue;
        };
        let mut protected = Vec::new();
        leaves(value, &mut protected);
        for secret in protected
            .iter()
            .filter(|s| s.chars().count() >= MIN_ECHO_CHECK_CHARS)
        {
            if written_text.contains(secret.as_str())
                || texts.iter().any(|t| t.contains(secret.as_str()))
            {
                return Err(RunError::Output(format!(
                    "it repeats a protected value of `{collection}.{field}`"
                )));
            }
        }
    }
    Ok(output)
}

/// The string form of every leaf of a JSON value (strings unescaped, numbers as written).
fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(members) => members.values().for_each(|v| leaves(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}
