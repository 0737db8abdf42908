//! Jaeger's sampling strategies file and what is served from it: the file's
//! JSON (`default_strategy`, `service_strategies`, `operation_strategies`,
//! each `type: probabilistic | ratelimiting` with its `param`) read into one
//! `api_v2` [`SamplingStrategyResponse`] per service and a default one, by
//! Jaeger's rules (a service without per-operation strategies inherits the
//! default's, a service with its own gets the default's added where it does
//! not name the operation), and the proto-JSON the HTTP endpoint answers.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;
use tracegate_model::jaeger::proto::{
    OperationSamplingStrategy, PerOperationSamplingStrategies, ProbabilisticSamplingStrategy,
    RateLimitingSamplingStrategy, SamplingStrategyResponse, SamplingStrategyType,
};

/// Jaeger's default probability: what a strategy without a `type` and the
/// default strategy of a file without one are served with, unless the
/// config sets `default_sampling_probability`.
pub const DEFAULT_SAMPLING_PROBABILITY: f64 = 0.001;

/// The strategies served: one per service named in the file, and the
/// default for every other service.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategies {
    default: SamplingStrategyResponse,
    services: HashMap<String, SamplingStrategyResponse>,
}

/// A strategies file read: the strategies and what Jaeger would also only
/// warn about (per-operation rate limiting, which the protocol cannot
/// express, is left out).
#[derive(Debug)]
pub struct Parsed {
    pub strategies: Strategies,
    pub warnings: Vec<String>,
}

/// The file's top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    default_strategy: Option<ServiceStrategy>,
    #[serde(default)]
    service_strategies: Vec<ServiceStrategy>,
}

/// A service's (or the default) strategy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceStrategy {
    #[serde(default)]
    service: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    param: f64,
    #[serde(default)]
    operation_strategies: Vec<OperationStrategy>,
}

/// One operation's strategy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationStrategy {
    operation: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    param: f64,
}

impl Strategies {
    /// What is served without a file: every service gets probabilistic
    /// sampling at `probability`.
    pub fn defaults(probability: f64) -> Strategies {
        Strategies {
            default: probabilistic(probability),
            services: HashMap::new(),
        }
    }

    /// Strategies from their parts: `default` for every service not in
    /// `services` (the `adaptive` source's).
    pub fn from_parts(
        default: SamplingStrategyResponse,
        services: HashMap<String, SamplingStrategyResponse>,
    ) -> Strategies {
        Strategies { default, services }
    }

    /// Reads a strategies file. `default_probability` is Jaeger's
    /// `default_sampling_probability`. `Err` says what is wrong and where
    /// (`service_strategies[1].param: ...`); the caller keeps what it served
    /// before.
    pub fn parse(json: &[u8], default_probability: f64) -> Result<Parsed, String> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let file: Option<File> =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                match e.path().to_string().as_str() {
                    "." => e.inner().to_string(),
                    path => format!("{path}: {}", e.inner()),
                }
            })?;
        deserializer.end().map_err(|e| e.to_string())?;
        // `null`, as Jaeger takes it: no strategies, the defaults.
        let Some(file) = file else {
            return Ok(Parsed {
                strategies: Strategies::defaults(default_probability),
                warnings: Vec::new(),
            });
        };
        let mut warnings = Vec::new();
        let reader = Reader {
            default_probability,
        };
        let default = match &file.default_strategy {
            Some(strategy) => reader.service(strategy, "default_strategy", &mut warnings)?,
            None => probabilistic(default_probability),
        };
        let mut services = HashMap::with_capacity(file.service_strategies.len());
        for (i, strategy) in file.service_strategies.iter().enumerate() {
            let path = format!("service_strategies[{i}]");
            let name = strategy
                .service
                .clone()
                .ok_or_else(|| format!("{path}: missing field `service`"))?;
            let mut response = reader.service(strategy, &path, &mut warnings)?;
            inherit_operations(&mut response, &default);
            if services.insert(name.clone(), response).is_some() {
                return Err(format!(
                    "{path}.service: {name:?} is named twice in service_strategies"
                ));
            }
        }
        Ok(Parsed {
            strategies: Strategies { default, services },
            warnings,
        })
    }

    /// The strategy served to `service`: its own, or the default.
    pub fn for_service(&self, service: &str) -> &SamplingStrategyResponse {
        self.services.get(service).unwrap_or(&self.default)
    }

    /// The default strategy.
    pub fn default_strategy(&self) -> &SamplingStrategyResponse {
        &self.default
    }

    /// The services the file names.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }
}

struct Reader {
    default_probability: f64,
}

impl Reader {
    /// A service's strategy, with its per-operation strategies if it has
    /// any (Jaeger's `parseServiceStrategies`).
    fn service(
        &self,
        strategy: &ServiceStrategy,
        path: &str,
        warnings: &mut Vec<String>,
    ) -> Result<SamplingStrategyResponse, String> {
        let mut response = self.strategy(strategy.kind.as_deref(), strategy.param, path)?;
        if strategy.operation_strategies.is_empty() {
            return Ok(response);
        }
        let default_probability = response
            .probabilistic_sampling
            .map_or(self.default_probability, |p| p.sampling_rate);
        let mut operations = PerOperationSamplingStrategies {
            default_sampling_probability: default_probability,
            ..Default::default()
        };
        for (i, op) in strategy.operation_strategies.iter().enumerate() {
            let op_path = format!("{path}.operation_strategies[{i}]");
            let parsed = self.strategy(op.kind.as_deref(), op.param, &op_path)?;
            match parsed.probabilistic_sampling {
                Some(p) => operations
                    .per_operation_strategies
                    .push(OperationSamplingStrategy {
                        operation: op.operation.clone(),
                        probabilistic_sampling: Some(p),
                    }),
                None => warnings.push(format!(
                    "{op_path}: operation {:?} is rate limited, which per-operation strategies \
                     cannot express (only probabilities); it is served the service's default \
                     probability {default_probability}, as Jaeger does",
                    op.operation
                )),
            }
        }
        response.operation_sampling = Some(operations);
        Ok(response)
    }

    /// One `type` and `param` (Jaeger's `parseStrategy`). No `type` is
    /// probabilistic at the default probability, as in Jaeger; an unknown
    /// one, a probability outside [0, 1] or a negative rate is an error.
    fn strategy(
        &self,
        kind: Option<&str>,
        param: f64,
        path: &str,
    ) -> Result<SamplingStrategyResponse, String> {
        match kind {
            None => Ok(probabilistic(self.default_probability)),
            Some("probabilistic") => {
                if !(0.0..=1.0).contains(&param) {
                    return Err(format!(
                        "{path}.param: a probability must be between 0 and 1, not {param}"
                    ));
                }
                Ok(probabilistic(param))
            }
            Some("ratelimiting") => {
                if !(param >= 0.0 && param <= f64::from(i32::MAX)) {
                    return Err(format!(
                        "{path}.param: traces per second must be between 0 and {}, not {param}",
                        i32::MAX
                    ));
                }
                Ok(SamplingStrategyResponse {
                    strategy_type: SamplingStrategyType::RateLimiting as i32,
                    // Jaeger's int32(param): the fraction is dropped.
                    rate_limiting_sampling: Some(RateLimitingSamplingStrategy {
                        max_traces_per_second: param as i32,
                    }),
                    ..Default::default()
                })
            }
            Some(other) => Err(format!(
                "{path}.type: unknown strategy type {other:?}, expected \"probabilistic\" or \
                 \"ratelimiting\""
            )),
        }
    }
}

/// Jaeger's `parseStrategies`, per service: the default's per-operation
/// strategies apply to a service that has none of its own (at the
/// service's own probability, if it has one), and are added to a service's
/// own for the operations it does not name.
fn inherit_operations(service: &mut SamplingStrategyResponse, default: &SamplingStrategyResponse) {
    let Some(defaults) = &default.operation_sampling else {
        return;
    };
    match &mut service.operation_sampling {
        None => {
            let mut inherited = defaults.clone();
            if let Some(p) = service.probabilistic_sampling {
                inherited.default_sampling_probability = p.sampling_rate;
            }
            service.operation_sampling = Some(inherited);
        }
        Some(own) => {
            for op in &defaults.per_operation_strategies {
                if !own
                    .per_operation_strategies
                    .iter()
                    .any(|o| o.operation == op.operation)
                {
                    own.per_operation_strategies.push(op.clone());
                }
            }
        }
    }
}

fn probabilistic(rate: f64) -> SamplingStrategyResponse {
    SamplingStrategyResponse {
        strategy_type: SamplingStrategyType::Probabilistic as i32,
        probabilistic_sampling: Some(ProbabilisticSamplingStrategy {
            sampling_rate: rate,
        }),
        ..Default::default()
    }
}

/// The proto-JSON of a response, as Jaeger's `/sampling` endpoint writes it
/// (protobuf's JSON mapping with defaults emitted, absent messages left
/// out): field names in lowerCamelCase, the strategy type by name
/// (`"PROBABILISTIC"`, `"RATE_LIMITING"`), fields in proto order.
pub fn to_json(response: &SamplingStrategyResponse) -> String {
    let mut out = String::with_capacity(128);
    let kind = SamplingStrategyType::try_from(response.strategy_type)
        .unwrap_or(SamplingStrategyType::Probabilistic)
        .as_str_name();
    let _ = write!(out, "{{\"strategyType\":\"{kind}\"");
    if let Some(p) = &response.probabilistic_sampling {
        out.push_str(",\"probabilisticSampling\":");
        probabilistic_json(&mut out, p);
    }
    if let Some(r) = &response.rate_limiting_sampling {
        let _ = write!(
            out,
            ",\"rateLimitingSampling\":{{\"maxTracesPerSecond\":{}}}",
            r.max_traces_per_second
        );
    }
    if let Some(ops) = &response.operation_sampling {
        let _ = write!(
            out,
            ",\"operationSampling\":{{\"defaultSamplingProbability\":{},\
             \"defaultLowerBoundTracesPerSecond\":{},\"perOperationStrategies\":[",
            number(ops.default_sampling_probability),
            number(ops.default_lower_bound_traces_per_second)
        );
        for (i, op) in ops.per_operation_strategies.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let name = serde_json::to_string(&op.operation).unwrap_or_else(|_| "\"\"".into());
            let _ = write!(out, "{{\"operation\":{name},\"probabilisticSampling\":");
            match &op.probabilistic_sampling {
                Some(p) => probabilistic_json(&mut out, p),
                None => out.push_str("null"),
            }
            out.push('}');
        }
        let _ = write!(
            out,
            "],\"defaultUpperBoundTracesPerSecond\":{}}}",
            number(ops.default_upper_bound_traces_per_second)
        );
    }
    out.push('}');
    out
}

fn probabilistic_json(out: &mut String, p: &ProbabilisticSamplingStrategy) {
    let _ = write!(out, "{{\"samplingRate\":{}}}", number(p.sampling_rate));
}

/// A double as JSON: the shortest text that reads back as the same value
/// (`1`, `0.25`). Probabilities and rates are checked to be finite when
/// read; a non-finite one is written as protobuf's JSON mapping does.
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "\"NaN\"".into()
    } else if value > 0.0 {
        "\"Infinity\"".into()
    } else {
        "\"-Infinity\"".into()
    }
}
