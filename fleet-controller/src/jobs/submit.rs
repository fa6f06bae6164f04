//! A submitted job checked against the rules before it is accepted (sans-IO: the caller
//! passes the time and the sizes of the blobs the buyer owns).

use std::collections::HashMap;

use attest::Hash32;
use attest::msg::Workload;

use super::workload::{
    MAX_INPUT_BYTES, MAX_JOB_ITEMS, MAX_OUTPUT_BYTES, WorkloadError, builtin_shape,
    check_ptx_launch,
};
use super::{
    CarbonConstraint, CudaCapability, HardwareNeeds, JobOrder, JobRequest, MAX_REDUNDANCY,
};

/// Furthest a deadline may lie ahead: a year.
pub const MAX_DEADLINE_AHEAD_MS: u64 = 365 * 86_400_000;

/// Why a job was refused. Each variant is a reason a buyer fixes differently; the API
/// names it in the error's `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// A built-in kernel nobody ships.
    #[error("{0}")]
    UnknownWorkload(String),
    /// A built-in's parameters are missing, unknown, repeated or out of range.
    #[error("{0}")]
    BadParams(String),
    /// Too many inputs, or not as many as the kernel takes.
    #[error("{0}")]
    BadInputs(String),
    /// An input the buyer has not uploaded.
    #[error(
        "input {index} ({hash}) is not among your blobs: upload it first (PUT /api/v1/blobs/{hash})"
    )]
    MissingInput {
        /// Its position.
        index: usize,
        /// Its hash.
        hash: Hash32,
    },
    /// A PTX module the buyer has not uploaded.
    #[error("PTX module {0} is not among your blobs: upload it first (PUT /api/v1/blobs/{0})")]
    MissingModule(Hash32),
    /// Sizes that disagree with the kernel or exceed the limits.
    #[error("{0}")]
    BadSizes(String),
    /// A PTX launch shape the GPU cannot take, or a bad entry name.
    #[error("{0}")]
    BadLaunch(String),
    /// A deadline that is not in the future.
    #[error("the deadline {deadline_ms} is not after now ({now_ms})")]
    DeadlineInPast {
        /// The deadline asked.
        deadline_ms: u64,
        /// The controller's clock.
        now_ms: u64,
    },
    /// A deadline more than a year ahead.
    #[error("the deadline {deadline_ms} is more than a year ahead of now ({now_ms})")]
    DeadlineTooFar {
        /// The deadline asked.
        deadline_ms: u64,
        /// The controller's clock.
        now_ms: u64,
    },
    /// Hardware needs that cannot be read.
    #[error("{0}")]
    BadHardware(String),
    /// A carbon constraint out of range.
    #[error("{0}")]
    BadCarbon(String),
    /// A redundancy out of range.
    #[error(
        "redundancy {0}: 1 to {MAX_REDUNDANCY}, and 1 for matmul_f32 (checked by Freivalds' method: honest devices round products differently, so outputs are not compared by hash)"
    )]
    BadRedundancy(u8),
}

impl SubmitError {
    /// The stable name of the reason (the API's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitError::UnknownWorkload(_) => "unknown_workload",
            SubmitError::BadParams(_) => "bad_params",
            SubmitError::BadInputs(_) => "bad_inputs",
            SubmitError::MissingInput { .. } => "missing_input_blob",
            SubmitError::MissingModule(_) => "missing_ptx_module",
            SubmitError::BadSizes(_) => "bad_sizes",
            SubmitError::BadLaunch(_) => "bad_launch",
            SubmitError::DeadlineInPast { .. } => "deadline_in_past",
            SubmitError::DeadlineTooFar { .. } => "deadline_too_far",
            SubmitError::BadHardware(_) => "bad_hardware",
            SubmitError::BadCarbon(_) => "bad_carbon",
            SubmitError::BadRedundancy(_) => "bad_redundancy",
        }
    }
}

impl From<WorkloadError> for SubmitError {
    fn from(e: WorkloadError) -> Self {
        match e {
            WorkloadError::UnknownKernel(_) => SubmitError::UnknownWorkload(e.to_string()),
            WorkloadError::BadParam(m) => SubmitError::BadParams(m),
            WorkloadError::TooLarge(m) => SubmitError::BadSizes(m),
            WorkloadError::BadLaunch(m) => SubmitError::BadLaunch(m),
        }
    }
}

/// The blobs a request names (inputs, then the PTX module): what the caller looks up
/// among the buyer's blobs before it calls [`validate`].
pub fn named_blobs(req: &JobRequest) -> Vec<Hash32> {
    let mut out = req.inputs.clone();
    if let Workload::Ptx { module, .. } = &req.workload {
        out.push(*module);
    }
    out
}

/// Checks `req` at `now_ms`, given `owned`: the size of each blob the request names that
/// the buyer owns (others are absent). Returns the job to store, or the first rule broken
/// in this order: workload, inputs, sizes, deadline, hardware, carbon, redundancy.
pub fn validate(
    req: JobRequest,
    now_ms: u64,
    owned: &HashMap<Hash32, u64>,
) -> Result<JobOrder, SubmitError> {
    if req.inputs.len() > MAX_JOB_ITEMS {
        return Err(SubmitError::BadInputs(format!(
            "{} inputs; at most {MAX_JOB_ITEMS}",
            req.inputs.len()
        )));
    }
    if req
        .output_sizes
        .as_ref()
        .is_some_and(|o| o.len() > MAX_JOB_ITEMS)
    {
        return Err(SubmitError::BadSizes(format!(
            "more than {MAX_JOB_ITEMS} outputs"
        )));
    }
    let input_size = |index: usize, hash: &Hash32| {
        owned
            .get(hash)
            .copied()
            .ok_or(SubmitError::MissingInput { index, hash: *hash })
    };
    let mut input_sizes = Vec::with_capacity(req.inputs.len());
    let mut workload = req.workload.clone();
    let output_sizes = match &req.workload {
        Workload::Builtin { kernel, params } => {
            let shape = builtin_shape(kernel, params)?;
            if shape.input_sizes.len() != req.inputs.len() {
                return Err(SubmitError::BadInputs(format!(
                    "{kernel} takes {} inputs; the job names {}",
                    shape.input_sizes.len(),
                    req.inputs.len()
                )));
            }
            for (i, (hash, want)) in req.inputs.iter().zip(&shape.input_sizes).enumerate() {
                let got = input_size(i, hash)?;
                if got != *want {
                    return Err(SubmitError::BadSizes(format!(
                        "input {i} ({hash}) is {got} bytes; {kernel} with these parameters \
                         takes {want}"
                    )));
                }
                input_sizes.push(got);
            }
            let derived = vec![shape.output_size];
            match req.output_sizes {
                Some(given) if given != derived => {
                    return Err(SubmitError::BadSizes(format!(
                        "output_sizes {given:?}: {kernel} with these parameters makes {derived:?}"
                    )));
                }
                _ => derived,
            }
        }
        Workload::Ptx {
            module,
            kernel,
            grid,
            block,
            ..
        } => {
            check_ptx_launch(kernel, *grid, *block)?;
            let Some(&size) = owned.get(module) else {
                return Err(SubmitError::MissingModule(*module));
            };
            // The device is told the module's size, as the store knows it.
            if let Workload::Ptx { module_size, .. } = &mut workload {
                *module_size = size;
            }
            let mut total = 0u64;
            for (i, hash) in req.inputs.iter().enumerate() {
                let n = input_size(i, hash)?;
                input_sizes.push(n);
                total = total.saturating_add(n);
            }
            if total > MAX_INPUT_BYTES {
                return Err(SubmitError::BadSizes(format!(
                    "inputs are {total} bytes together; at most {MAX_INPUT_BYTES}"
                )));
            }
            let sizes = req.output_sizes.unwrap_or_default();
            if sizes.is_empty() || sizes.contains(&0) {
                return Err(SubmitError::BadSizes(
                    "a PTX job names output_sizes: at least one, none 0".into(),
                ));
            }
            let sum = sizes.iter().fold(0u64, |s, &b| s.saturating_add(b));
            if sum > MAX_OUTPUT_BYTES {
                return Err(SubmitError::BadSizes(format!(
                    "outputs are {sum} bytes together; at most {MAX_OUTPUT_BYTES}"
                )));
            }
            sizes
        }
    };
    if req.deadline_ms <= now_ms {
        return Err(SubmitError::DeadlineInPast {
            deadline_ms: req.deadline_ms,
            now_ms,
        });
    }
    if req.deadline_ms - now_ms > MAX_DEADLINE_AHEAD_MS {
        return Err(SubmitError::DeadlineTooFar {
            deadline_ms: req.deadline_ms,
            now_ms,
        });
    }
    let hardware = hardware(&req.hardware)?;
    if let Some(CarbonConstraint::MinRenewableSharePpm(ppm)) = req.carbon
        && !(1..=1_000_000).contains(&ppm)
    {
        return Err(SubmitError::BadCarbon(format!(
            "min_renewable_share_ppm {ppm}: 1 to 1000000 (parts per million)"
        )));
    }
    if !(1..=MAX_REDUNDANCY).contains(&req.redundancy) {
        return Err(SubmitError::BadRedundancy(req.redundancy));
    }
    // Honest devices round a product differently (any summation order is right), so runs
    // compared by hash would accuse them; Freivalds' method checks every product instead.
    if req.redundancy >= 2
        && matches!(&workload, Workload::Builtin { kernel, .. } if kernel == "matmul_f32")
    {
        return Err(SubmitError::BadRedundancy(req.redundancy));
    }
    Ok(JobOrder {
        workload,
        inputs: req.inputs,
        input_sizes,
        output_sizes,
        hardware,
        deadline: attest::TimestampMs(req.deadline_ms),
        max_price_micro_per_gpu_hour: req.max_price_micro_per_gpu_hour,
        carbon: req.carbon,
        flexible: req.flexible,
        redundancy: req.redundancy,
        max_energy_mj: req.max_energy_mj,
        max_duration_ms: req.max_duration_ms,
    })
}

fn hardware(h: &super::HardwareRequest) -> Result<HardwareNeeds, SubmitError> {
    let gpu_class = match &h.gpu_class {
        None => None,
        Some(c) => {
            let ok = (1..=64).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" ._-".contains(&b));
            if !ok {
                return Err(SubmitError::BadHardware(format!(
                    "gpu_class {c:?}: 1 to 64 of A-Z a-z 0-9 space . _ -"
                )));
            }
            Some(c.to_ascii_lowercase())
        }
    };
    if h.min_vram_mib == Some(0) {
        return Err(SubmitError::BadHardware(
            "min_vram_mib 0: leave it out for no need".into(),
        ));
    }
    let min_cuda_capability = match &h.min_cuda_capability {
        None => None,
        Some(s) => Some(CudaCapability::parse(s).ok_or_else(|| {
            SubmitError::BadHardware(format!(
                "min_cuda_capability {s:?}: \"major.minor\", such as \"8.7\""
            ))
        })?),
    };
    Ok(HardwareNeeds {
        gpu_class,
        min_vram_mib: h.min_vram_mib,
        min_cuda_capability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_782_000_000_000;

    fn req(v: serde_json::Value) -> JobRequest {
        serde_json::from_value(v).unwrap()
    }

    fn sha_job(input: Hash32, extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({
            "workload": {"builtin": {"kernel": "sha256_batch",
                "params": [{"name": "count", "value": 4}, {"name": "item_len", "value": 16}]}},
            "inputs": [input],
            "deadline_ms": NOW + 3_600_000,
            "max_price_micro_per_gpu_hour": 250_000,
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn a_built_in_job_gets_its_output_size_and_keeps_what_it_asked_for() {
        let input = Hash32::digest(b"x");
        let owned = HashMap::from([(input, 64)]);
        let order = validate(
            req(sha_job(
                input,
                json!({
                    "hardware": {"gpu_class": "Orin", "min_vram_mib": 8192, "min_cuda_capability": "8.7"},
                    "carbon": {"min_renewable_share_ppm": 800_000},
                    "flexible": true,
                    "redundancy": 2,
                }),
            )),
            NOW,
            &owned,
        )
        .unwrap();
        assert_eq!(order.output_sizes(), &[128]);
        assert_eq!(order.hardware().gpu_class.as_deref(), Some("orin"));
        assert_eq!(
            order.hardware().min_cuda_capability,
            Some(CudaCapability { major: 8, minor: 7 })
        );
        assert_eq!(
            order.carbon(),
            Some(CarbonConstraint::MinRenewableSharePpm(800_000))
        );
        assert!(order.flexible());
        assert_eq!(order.redundancy(), 2);
        let spec = order.job_spec(attest::msg::JobId([1; 16]));
        assert_eq!(spec.inputs, vec![input]);
        assert_eq!(spec.limits.deadline.0, NOW + 3_600_000);
        // It survives the store's round trip unchanged.
        let back: JobOrder = serde_json::from_str(&serde_json::to_string(&order).unwrap()).unwrap();
        assert_eq!(back, order);
    }

    #[test]
    fn each_broken_rule_is_named_by_its_own_reason() {
        let input = Hash32::digest(b"x");
        let module = Hash32::digest(b"ptx");
        let owned = HashMap::from([(input, 64), (module, 900)]);
        let other = Hash32::digest(b"not mine");
        let ptx = |extra: serde_json::Value| {
            let mut v = json!({
                "workload": {"ptx": {"module": module, "kernel": "scale",
                    "grid": [4, 1, 1], "block": [256, 1, 1], "shared_mem_bytes": 0}},
                "inputs": [input],
                "output_sizes": [1024],
                "deadline_ms": NOW + 1,
                "max_price_micro_per_gpu_hour": 1,
            });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let cases = [
            (
                json!({"workload": {"builtin": {"kernel": "bitcoin", "params": []}}}),
                "unknown_workload",
            ),
            (
                json!({"workload": {"builtin": {"kernel": "sha256_batch", "params": []}}}),
                "bad_params",
            ),
            (json!({"inputs": []}), "bad_inputs"),
            (json!({"inputs": [other]}), "missing_input_blob"),
            (json!({"output_sizes": [127]}), "bad_sizes"),
            (json!({"deadline_ms": NOW}), "deadline_in_past"),
            (
                json!({"deadline_ms": NOW + MAX_DEADLINE_AHEAD_MS + 1}),
                "deadline_too_far",
            ),
            (
                json!({"hardware": {"min_cuda_capability": "eight"}}),
                "bad_hardware",
            ),
            (json!({"hardware": {"gpu_class": "a;b"}}), "bad_hardware"),
            (json!({"hardware": {"min_vram_mib": 0}}), "bad_hardware"),
            (
                json!({"carbon": {"min_renewable_share_ppm": 1_000_001}}),
                "bad_carbon",
            ),
            (json!({"redundancy": 0}), "bad_redundancy"),
        ];
        for (extra, reason) in cases {
            let e = validate(req(sha_job(input, extra.clone())), NOW, &owned).unwrap_err();
            assert_eq!(e.reason(), reason, "{extra}: {e}");
        }
        // An input of the wrong size for the kernel.
        let small = HashMap::from([(input, 63)]);
        let e = validate(req(sha_job(input, json!({}))), NOW, &small).unwrap_err();
        assert_eq!(e.reason(), "bad_sizes", "{e}");
        assert!(e.to_string().contains("is 63 bytes"), "{e}");

        assert!(validate(req(ptx(json!({}))), NOW, &owned).is_ok());
        for (extra, reason) in [
            (json!({"output_sizes": []}), "bad_sizes"),
            (json!({"output_sizes": [0]}), "bad_sizes"),
            (json!({"inputs": [other]}), "missing_input_blob"),
            (
                json!({"workload": {"ptx": {"module": other, "kernel": "k",
                    "grid": [1, 1, 1], "block": [1, 1, 1], "shared_mem_bytes": 0}}}),
                "missing_ptx_module",
            ),
            (
                json!({"workload": {"ptx": {"module": module, "kernel": "k",
                    "grid": [1, 1, 1], "block": [64, 64, 1], "shared_mem_bytes": 0}}}),
                "bad_launch",
            ),
        ] {
            let e = validate(req(ptx(extra.clone())), NOW, &owned).unwrap_err();
            assert_eq!(e.reason(), reason, "{extra}: {e}");
        }
        assert_eq!(named_blobs(&req(ptx(json!({})))), vec![input, module]);
    }

    #[test]
    fn unknown_keys_and_two_carbon_constraints_at_once_are_refused_by_the_parser() {
        let input = Hash32::digest(b"x");
        let v = sha_job(input, json!({"colour": "green"}));
        assert!(serde_json::from_value::<JobRequest>(v).is_err());
        let v = sha_job(
            input,
            json!({"carbon": {"min_renewable_share_ppm": 1, "max_co2e_mg": 1}}),
        );
        assert!(serde_json::from_value::<JobRequest>(v).is_err());
        let v = sha_job(input, json!({"carbon": {"max_co2e_mg": 5000}}));
        assert_eq!(
            serde_json::from_value::<JobRequest>(v).unwrap().carbon,
            Some(CarbonConstraint::MaxCo2eMg(5000))
        );
    }
}
