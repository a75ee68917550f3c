//! A warm instance of a function: one wasmi `Store` + instance, reused across invocations until
//! it traps. Calls run in fuel slices so a wall-clock timeout can stop them.

use super::host::{now_ms, CallState, FunctionEnv, GuestFault, HostState};
use super::outcome::{Effects, Invocation, LogLine, Outcome};
use super::{FunctionModule, Limits, FUEL_SLICE};
use edgefn_sdk::abi::{self, Event};
use std::sync::Arc;
use std::time::Instant as Clock;
use wasmi::{
    Linker, Memory, Store, StoreLimitsBuilder, TrapCode, TypedFunc, TypedResumableCall, WasmParams,
    WasmResults,
};

/// Why an instance could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The module's initial memory is above the function's memory limit.
    #[error(
        "module needs {needed} bytes of initial memory, the function's limit is {limit} bytes"
    )]
    MemoryLimit {
        /// Initial memory of the module.
        needed: u64,
        /// The limit.
        limit: usize,
    },
    /// Instantiation failed (e.g. a data segment out of bounds or a trapping start function).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// `edgefn_init` returned non-zero or failed; its log lines are attached.
    #[error("edgefn_init failed ({outcome}): {message}")]
    Init {
        /// How init ended.
        outcome: Outcome,
        /// Why.
        message: String,
        /// What init logged.
        logs: Vec<LogLine>,
    },
}

/// How a guest call failed.
struct Failure {
    outcome: Outcome,
    message: String,
}

/// A live instance of a function.
pub struct Instance {
    store: Store<HostState>,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i32>,
    memory: Memory,
    /// Set after a trap-like outcome: the guest state may be corrupt, so the instance is spent.
    spent: bool,
    /// Invocations served, for instance-reuse accounting.
    served: u64,
    /// Lines `edgefn_init` logged (the caller records them once).
    init_logs: Vec<LogLine>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("spent", &self.spent)
            .field("served", &self.served)
            .finish()
    }
}

impl Instance {
    pub(crate) fn new(
        linker: &Linker<HostState>,
        module: &FunctionModule,
        limits: Arc<Limits>,
        env: FunctionEnv,
    ) -> Result<Instance, InstanceError> {
        if module.initial_memory > limits.memory_bytes as u64 {
            return Err(InstanceError::MemoryLimit {
                needed: module.initial_memory,
                limit: limits.memory_bytes,
            });
        }
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            limits: limits.clone(),
            store_limits,
            env,
            memory: None,
            call: CallState::default(),
        };
        let mut store = Store::new(module.module.engine(), state);
        store.limiter(|s| &mut s.store_limits);
        // A start function runs during instantiation: give it the invocation budget.
        store
            .set_fuel(limits.fuel)
            .map_err(|e| InstanceError::Instantiate(e.to_string()))?;
        let instance = linker
            .instantiate_and_start(&mut store, &module.module)
            .map_err(|e| InstanceError::Instantiate(e.to_string()))?;
        let get = |name: &str| InstanceError::Instantiate(format!("export `{name}` vanished"));
        let memory = instance
            .get_memory(&store, abi::EXPORT_MEMORY)
            .ok_or_else(|| get(abi::EXPORT_MEMORY))?;
        let alloc = instance
            .get_typed_func(&store, abi::EXPORT_ALLOC)
            .map_err(|_| get(abi::EXPORT_ALLOC))?;
        let handle = instance
            .get_typed_func(&store, abi::EXPORT_HANDLE)
            .map_err(|_| get(abi::EXPORT_HANDLE))?;
        store.data_mut().memory = Some(memory);
        let mut inst = Instance {
            store,
            alloc,
            handle,
            memory,
            spent: false,
            served: 0,
            init_logs: Vec::new(),
        };
        if module.has_init {
            let init: TypedFunc<(), i32> = instance
                .get_typed_func(&inst.store, abi::EXPORT_INIT)
                .map_err(|_| get(abi::EXPORT_INIT))?;
            let deadline = Clock::now() + limits.timeout;
            let mut fuel = Fuel::new(limits.fuel);
            let result = inst.run(&init, (), &mut fuel, deadline);
            let call = std::mem::take(&mut inst.store.data_mut().call);
            match result {
                Ok(0) => inst.init_logs = call.logs,
                Ok(code) => {
                    return Err(InstanceError::Init {
                        outcome: Outcome::InitFailed,
                        message: format!("edgefn_init returned {code}"),
                        logs: call.logs,
                    })
                }
                Err(f) => {
                    return Err(InstanceError::Init {
                        outcome: f.outcome,
                        message: f.message,
                        logs: call.logs,
                    })
                }
            }
        }
        Ok(inst)
    }

    /// False once the instance trapped, ran out of fuel or time, or hit its memory limit: drop it.
    pub fn is_usable(&self) -> bool {
        !self.spent
    }

    /// Invocations this instance has served.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Lines logged by `edgefn_init` when the instance started (taken once).
    pub fn take_init_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.init_logs)
    }

    /// Current size of the guest's linear memory in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Runs one event through the guest. Never panics on guest misbehaviour: every failure is an
    /// [`Outcome`] with a message, and effects are returned only on success.
    pub fn invoke(&mut self, event: &Event<'_>) -> Invocation {
        self.invoke_as(ulid::Ulid::new().to_string(), event)
    }

    /// [`Instance::invoke`] under an invocation id chosen by the caller (e.g. one already
    /// returned to an async client).
    pub fn invoke_as(&mut self, id: String, event: &Event<'_>) -> Invocation {
        let started_ms = now_ms();
        let start = Clock::now();
        let limits = self.store.data().limits.clone();
        let mut fuel = Fuel::new(limits.fuel);
        let result = if self.spent {
            Err(Failure {
                outcome: Outcome::Trap,
                message: "instance is spent after an earlier trap".into(),
            })
        } else {
            self.served += 1;
            self.store.data_mut().call = CallState::default();
            self.call_handler(event, &limits, &mut fuel, start + limits.timeout)
        };
        let duration = start.elapsed();
        let call = std::mem::take(&mut self.store.data_mut().call);
        let (outcome, error, response, effects) = match result {
            Ok(0) => (
                Outcome::Success,
                None,
                call.response.unwrap_or_default(),
                call.effects,
            ),
            Ok(code) => {
                let msg = match call.response {
                    Some(r) if !r.is_empty() => String::from_utf8_lossy(&r).into_owned(),
                    _ => format!("function returned {code} without an error message"),
                };
                (Outcome::Error, Some(msg), Vec::new(), Effects::default())
            }
            Err(f) => {
                if f.outcome.ends_instance() {
                    self.spent = true;
                }
                (f.outcome, Some(f.message), Vec::new(), Effects::default())
            }
        };
        Invocation {
            id,
            started_ms,
            duration,
            fuel_used: fuel.used,
            outcome,
            error,
            response,
            logs: call.logs,
            logs_dropped: call.logs_dropped,
            effects,
        }
    }

    fn call_handler(
        &mut self,
        event: &Event<'_>,
        limits: &Limits,
        fuel: &mut Fuel,
        deadline: Clock,
    ) -> Result<i32, Failure> {
        let len = event.encoded_len();
        if len > limits.max_event_bytes {
            return Err(Failure {
                outcome: Outcome::EventTooLarge,
                message: format!(
                    "event of {len} bytes exceeds the function's max_event_bytes of {}",
                    limits.max_event_bytes
                ),
            });
        }
        let alloc = self.alloc;
        let ptr = self.run(&alloc, len as i32, fuel, deadline)?;
        if ptr == 0 {
            return Err(Failure {
                outcome: Outcome::EventTooLarge,
                message: format!("edgefn_alloc returned 0: the guest could not allocate {len} bytes for the event"),
            });
        }
        let mem = self.memory.data_mut(&mut self.store);
        let start = ptr as u32 as usize;
        let Some(dst) = start
            .checked_add(len)
            .and_then(|end| mem.get_mut(start..end))
        else {
            self.spent = true;
            return Err(Failure {
                outcome: Outcome::Trap,
                message: format!(
                    "bad pointer: edgefn_alloc returned [{start:#x}, +{len}) outside the guest's {}-byte memory",
                    mem.len()
                ),
            });
        };
        event.encode_to_slice(dst).expect("encoded_len is exact");
        let handle = self.handle;
        self.run(&handle, (ptr, len as i32), fuel, deadline)
    }

    /// Calls `f` in fuel slices until it finishes, runs out of fuel or passes `deadline`.
    fn run<P: WasmParams, R: WasmResults>(
        &mut self,
        f: &TypedFunc<P, R>,
        params: P,
        fuel: &mut Fuel,
        deadline: Clock,
    ) -> Result<R, Failure> {
        let mut slice = fuel.next_slice(0).ok_or_else(Failure::out_of_fuel)?;
        self.store.set_fuel(slice).map_err(Failure::engine)?;
        let mut call = f
            .call_resumable(&mut self.store, params)
            .map_err(|e| self.classify(&e));
        loop {
            let left = self.store.get_fuel().unwrap_or(0);
            fuel.used += slice - left.min(slice);
            match call {
                Ok(TypedResumableCall::Finished(r)) => return Ok(r),
                Ok(TypedResumableCall::HostTrap(t)) => return Err(self.classify(t.host_error())),
                Ok(TypedResumableCall::OutOfFuel(pending)) => {
                    if Clock::now() >= deadline {
                        self.spent = true;
                        return Err(Failure {
                            outcome: Outcome::Timeout,
                            message: format!(
                                "timed out after {} ms (wall-clock limit), {} fuel used",
                                self.store.data().limits.timeout.as_millis(),
                                fuel.used
                            ),
                        });
                    }
                    slice = match fuel.next_slice(pending.required_fuel()) {
                        Some(s) => s,
                        None => {
                            self.spent = true;
                            return Err(Failure::out_of_fuel_after(fuel.budget));
                        }
                    };
                    // Top up to exactly `slice`, keeping accounting simple.
                    self.store.set_fuel(slice).map_err(Failure::engine)?;
                    call = pending
                        .resume(&mut self.store)
                        .map_err(|e| self.classify(&e));
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// Turns a wasmi error from a guest call into an outcome and a clear message.
    fn classify(&mut self, e: &wasmi::Error) -> Failure {
        self.spent = true;
        if let Some(g) = e.downcast_ref::<GuestFault>() {
            return Failure {
                outcome: Outcome::Trap,
                message: g.0.clone(),
            };
        }
        let limit = self.store.data().limits.memory_bytes;
        match e.as_trap_code() {
            Some(TrapCode::GrowthOperationLimited) => Failure {
                outcome: Outcome::MemoryLimit,
                message: format!(
                    "memory limit exceeded: the guest tried to grow its memory past {limit} bytes"
                ),
            },
            Some(TrapCode::OutOfFuel) => Failure::out_of_fuel_after(self.store.data().limits.fuel),
            Some(TrapCode::StackOverflow) => Failure {
                outcome: Outcome::Trap,
                message: "stack overflow: call depth limit exceeded (unbounded recursion?)".into(),
            },
            Some(TrapCode::MemoryOutOfBounds) => Failure {
                outcome: Outcome::Trap,
                message: "out of bounds memory access (a bad pointer, or the guest's shadow stack overflowed)".into(),
            },
            Some(code) => Failure { outcome: Outcome::Trap, message: code.to_string() },
            None => Failure { outcome: Outcome::Trap, message: e.to_string() },
        }
    }
}

impl Failure {
    fn out_of_fuel() -> Failure {
        Failure {
            outcome: Outcome::OutOfFuel,
            message: "out of fuel: the fuel budget is 0".into(),
        }
    }

    fn out_of_fuel_after(budget: u64) -> Failure {
        Failure {
            outcome: Outcome::OutOfFuel,
            message: format!("out of fuel: used the whole budget of {budget} fuel"),
        }
    }

    fn engine(e: impl std::fmt::Display) -> Failure {
        Failure {
            outcome: Outcome::Trap,
            message: format!("engine error: {e}"),
        }
    }
}

/// Fuel accounting for one invocation, handed to the guest in slices.
struct Fuel {
    budget: u64,
    used: u64,
}

impl Fuel {
    fn new(budget: u64) -> Fuel {
        Fuel { budget, used: 0 }
    }

    /// The next slice: at least `required` (what the pending instruction needs), at most what is
    /// left of the budget; `None` when the budget cannot cover `required`.
    fn next_slice(&self, required: u64) -> Option<u64> {
        let left = self.budget.saturating_sub(self.used);
        let slice = FUEL_SLICE.max(required).min(left);
        (slice > 0 && slice >= required).then_some(slice)
    }
}
