use std::time::Duration;

use serde_json::json;

use super::config::{from_value, Form, Source};
use super::serve::query_values;
use super::strategies::{to_json, Strategies};

/// The strategies file of the collector's README, with a rate-limited
/// operation Jaeger drops with a warning.
const FILE: &str = r#"{
  "service_strategies": [
    {
      "service": "foo",
      "type": "probabilistic",
      "param": 0.8,
      "operation_strategies": [
        {"operation": "op1", "type": "probabilistic", "param": 0.2},
        {"operation": "/health", "type": "probabilistic", "param": 0.5},
        {"operation": "spam", "type": "ratelimiting", "param": 10}
      ]
    },
    {"service": "bar", "type": "ratelimiting", "param": 5},
    {"service": "baz", "type": "probabilistic", "param": 0.25}
  ],
  "default_strategy": {
    "type": "probabilistic",
    "param": 0.5,
    "operation_strategies": [
      {"operation": "/health", "type": "probabilistic", "param": 0.0},
      {"operation": "/metrics", "type": "probabilistic", "param": 0.0}
    ]
  }
}"#;

fn json_of(strategies: &Strategies, service: &str) -> serde_json::Value {
    serde_json::from_str(&to_json(strategies.for_service(service))).unwrap()
}

/// Each kind of strategy is served as Jaeger serves it, per-operation
/// strategies merged with the default's by Jaeger's rules.
#[test]
fn the_file_is_served_by_jaegers_rules() {
    let parsed = Strategies::parse(FILE.as_bytes(), 0.001).unwrap();
    let s = &parsed.strategies;
    // A service's own operations come first, the default's it does not
    // name are added; its probability is the operations' default.
    assert_eq!(
        json_of(s, "foo"),
        json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": 0.8},
            "operationSampling": {
                "defaultSamplingProbability": 0.8,
                "defaultLowerBoundTracesPerSecond": 0,
                "perOperationStrategies": [
                    {"operation": "op1", "probabilisticSampling": {"samplingRate": 0.2}},
                    {"operation": "/health", "probabilisticSampling": {"samplingRate": 0.5}},
                    {"operation": "/metrics", "probabilisticSampling": {"samplingRate": 0}},
                ],
                "defaultUpperBoundTracesPerSecond": 0,
            }
        })
    );
    // A rate-limited service without operations of its own inherits the
    // default's, at the default's probability.
    assert_eq!(
        json_of(s, "bar"),
        json!({
            "strategyType": "RATE_LIMITING",
            "rateLimitingSampling": {"maxTracesPerSecond": 5},
            "operationSampling": {
                "defaultSamplingProbability": 0.5,
                "defaultLowerBoundTracesPerSecond": 0,
                "perOperationStrategies": [
                    {"operation": "/health", "probabilisticSampling": {"samplingRate": 0}},
                    {"operation": "/metrics", "probabilisticSampling": {"samplingRate": 0}},
                ],
                "defaultUpperBoundTracesPerSecond": 0,
            }
        })
    );
    // A probabilistic one inherits them at its own probability.
    assert_eq!(
        json_of(s, "baz")["operationSampling"]["defaultSamplingProbability"],
        json!(0.25)
    );
    // Any other service: the default.
    assert_eq!(
        json_of(s, "unknown"),
        json_of(s, ""),
        "every unnamed service gets the default"
    );
    assert_eq!(
        json_of(s, "unknown")["probabilisticSampling"],
        json!({"samplingRate": 0.5})
    );
    // The rate-limited operation is left out, with a warning naming it.
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    assert!(
        parsed.warnings[0].starts_with("service_strategies[0].operation_strategies[2]")
            && parsed.warnings[0].contains("\"spam\""),
        "{:?}",
        parsed.warnings
    );
}

/// The exact bytes: Jaeger's field order and names, the type by name,
/// absent messages left out, whole numbers without a fraction.
#[test]
fn the_json_is_jaegers_proto_json() {
    let s = Strategies::parse(
        br#"{"default_strategy": {"type": "probabilistic", "param": 1},
            "service_strategies": [{"service": "r", "type": "ratelimiting", "param": 2.9},
              {"service": "o", "type": "probabilistic", "param": 0.125,
               "operation_strategies": [{"operation": "a\"b", "type": "probabilistic", "param": 0.001}]}]}"#,
        0.001,
    )
    .unwrap()
    .strategies;
    assert_eq!(
        to_json(s.for_service("x")),
        r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":1}}"#
    );
    // Jaeger's int32(param).
    assert_eq!(
        to_json(s.for_service("r")),
        r#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":2}}"#
    );
    assert_eq!(
        to_json(s.for_service("o")),
        r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.125},"operationSampling":{"defaultSamplingProbability":0.125,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[{"operation":"a\"b","probabilisticSampling":{"samplingRate":0.001}}],"defaultUpperBoundTracesPerSecond":0}}"#
    );
}

/// Without a file, or with one that says `null` or names no default,
/// services get the default probability; a strategy without a type too.
#[test]
fn defaults_are_jaegers() {
    let rate = |s: &Strategies, service: &str| {
        s.for_service(service)
            .probabilistic_sampling
            .unwrap()
            .sampling_rate
    };
    assert_eq!(rate(&Strategies::defaults(0.001), "a"), 0.001);
    let null = Strategies::parse(b"null", 0.3).unwrap().strategies;
    assert_eq!(rate(&null, "a"), 0.3);
    let untyped = Strategies::parse(
        br#"{"service_strategies": [{"service": "a",
            "operation_strategies": [{"operation": "op", "type": "probabilistic", "param": 0.2}]}]}"#,
        0.01,
    )
    .unwrap()
    .strategies;
    assert_eq!(rate(&untyped, "a"), 0.01);
    assert_eq!(rate(&untyped, "b"), 0.01);
    let ops = untyped
        .for_service("a")
        .operation_sampling
        .as_ref()
        .unwrap();
    assert_eq!(ops.default_sampling_probability, 0.01);
    assert_eq!(ops.per_operation_strategies[0].operation, "op");
}

/// What Jaeger would serve wrongly or silently ignore is refused, naming
/// where in the file.
#[test]
fn a_bad_file_is_refused_naming_the_place() {
    let err = |json: &str| Strategies::parse(json.as_bytes(), 0.001).unwrap_err();
    assert_eq!(
        err(r#"{"default_strategy": {"type": "probabilistic", "param": 1.5}}"#),
        "default_strategy.param: a probability must be between 0 and 1, not 1.5"
    );
    assert_eq!(
        err(r#"{"service_strategies": [{"service": "a", "type": "ratelimiting", "param": -1}]}"#),
        "service_strategies[0].param: traces per second must be between 0 and 2147483647, not -1"
    );
    assert!(err(
        r#"{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 0.1,
            "operation_strategies": [{"operation": "o", "type": "sometimes", "param": 0.1}]}]}"#
    )
    .starts_with(
        "service_strategies[0].operation_strategies[0].type: unknown strategy type \"sometimes\""
    ));
    assert!(
        err(r#"{"service_strategies": [{"service": "a", "typ": "probabilistic"}]}"#)
            .starts_with("service_strategies[0].typ: unknown field `typ`, expected one of"),
        "{}",
        err(r#"{"service_strategies": [{"service": "a", "typ": "probabilistic"}]}"#)
    );
    assert!(err(
        r#"{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 0.1},
            {"service": "a", "type": "probabilistic", "param": 0.2}]}"#
    )
    .contains("\"a\" is named twice"));
    assert!(
        err(r#"{"service_strategies": [{"type": "probabilistic", "param": 0.1}]}"#)
            .contains("missing field `service`")
    );
    assert!(!err("{").is_empty());
    assert!(!err(r#"{"default_strategy": {}} trailing"#).is_empty());
}

/// The collector's spelling: both listeners on by default, gRPC on 14250.
#[test]
fn the_collectors_form_serves_both_protocols_by_default() {
    let config =
        from_value(json!({"source": {"file": "/etc/s.json", "reload_interval": "1s"}})).unwrap();
    assert_eq!(config.form, Form::Collector);
    assert_eq!(config.http.as_ref().unwrap().endpoint, "localhost:5778");
    assert_eq!(config.grpc.as_ref().unwrap().endpoint, "localhost:14250");
    let Source::File(file) = &config.source else {
        panic!("{config:?}")
    };
    assert_eq!(file.path, "/etc/s.json");
    assert_eq!(file.reload_interval, Duration::from_secs(1));
    assert_eq!(file.default_sampling_probability, 0.001);
    assert!(config.validate().unwrap().is_empty());
    let set = from_value(
        json!({"source": {"file": "f"}, "http": {"endpoint": "0.0.0.0:1"},
        "grpc": {"endpoint": "0.0.0.0:2"}}),
    )
    .unwrap();
    assert_eq!(set.http.unwrap().endpoint, "0.0.0.0:1");
    assert_eq!(set.grpc.unwrap().endpoint, "0.0.0.0:2");
}

/// Jaeger v2's spelling: a listener only where it is written, gRPC on 5779.
#[test]
fn jaegers_form_serves_what_it_names() {
    let config = from_value(
        json!({"file": {"path": "s.json", "default_sampling_probability": 0.2},
        "http": null}),
    )
    .unwrap();
    assert_eq!(config.form, Form::Jaeger);
    assert_eq!(config.http.as_ref().unwrap().endpoint, ":5778");
    assert!(config.grpc.is_none());
    let Source::File(file) = &config.source else {
        panic!("{config:?}")
    };
    assert_eq!(
        (file.path.as_str(), file.default_sampling_probability),
        ("s.json", 0.2)
    );
    let grpc = from_value(json!({"file": null, "grpc": {}})).unwrap();
    assert_eq!(grpc.grpc.unwrap().endpoint, ":5779");
    let none = from_value(json!({"file": {"path": "s.json"}})).unwrap();
    assert!(none.validate().unwrap()[0].contains("served nowhere"));
}

/// What tracegate does not do is refused with what to use instead.
#[test]
fn unsupported_sources_and_bad_keys_are_refused() {
    let refused = |value| {
        let config = from_value(value).unwrap();
        config.validate().unwrap_err().to_string()
    };
    for (key, value) in [
        ("target_samples_per_second", json!(0)),
        ("delta_tolerance", json!(-1)),
        ("initial_sampling_probability", json!(1.5)),
        ("min_sampling_probability", json!(0)),
        ("min_samples_per_second", json!(-0.5)),
        ("calculation_interval", json!("0s")),
        ("aggregation_buckets", json!(0)),
        ("calculation_buckets", json!(0)),
    ] {
        let said = refused(json!({"adaptive": {key: value}, "http": null}));
        assert!(said.starts_with(&format!("adaptive.{key}:")), "{said}");
    }
    let resolver = json!({"static": {"hostnames": ["10.0.0.1:5778"]}});
    let fleet = |fleet: serde_json::Value, http: serde_json::Value| {
        refused(json!({"adaptive": {"fleet": fleet}, "http": http}))
    };
    let no_resolver = fleet(json!({"advertised_endpoint": "10.0.0.1:5778"}), json!(null));
    assert!(
        no_resolver.starts_with("adaptive.fleet.resolver:"),
        "{no_resolver}"
    );
    let unreachable = fleet(
        json!({"resolver": resolver, "advertised_endpoint": "0.0.0.0:5778"}),
        json!(null),
    );
    assert!(
        unreachable.starts_with("adaptive.fleet.advertised_endpoint:"),
        "{unreachable}"
    );
    let good = json!({"resolver": resolver, "advertised_endpoint": "10.0.0.1:5778"});
    let no_http = refused(json!({"adaptive": {"fleet": good}, "grpc": null}));
    assert!(
        no_http.starts_with("adaptive.fleet:") && no_http.contains("`http`"),
        "{no_http}"
    );
    let tls = fleet(
        good.clone(),
        json!({"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}),
    );
    assert!(
        tls.starts_with("adaptive.fleet:") && tls.contains("tls"),
        "{tls}"
    );
    let remote = refused(json!({"source": {"remote": {"endpoint": "jaeger:14250"}}}));
    assert!(remote.starts_with("source.remote:"), "{remote}");
    let url = refused(json!({"source": {"file": "http://example.com/s.json"}}));
    assert!(
        url.starts_with("source.file:") && url.contains("URL"),
        "{url}"
    );
    let probability = refused(json!({"file": {"default_sampling_probability": 2}, "http": null}));
    assert!(
        probability.starts_with("file.default_sampling_probability:"),
        "{probability}"
    );
    for protocol in ["http", "grpc"] {
        let auth = refused(json!({
            "source": {"file": "s.json"},
            protocol: {"auth": {"authenticator": " "}},
        }));
        assert!(
            auth.starts_with(&format!("{protocol}.auth.authenticator:")),
            "{auth}"
        );
    }
    let with_auth = refused(json!({
        "adaptive": {"fleet": good},
        "http": {"auth": {"authenticator": "bearertokenauth"}},
    }));
    assert!(
        with_auth.starts_with("adaptive.fleet:") && with_auth.contains("auth"),
        "{with_auth}"
    );
    let err = |value| from_value(value).unwrap_err().to_string();
    assert!(err(json!({})).contains("no sources specified"));
    assert!(err(json!({"source": {}})).contains("no sources specified"));
    assert!(err(json!({"source": {"file": "a"}, "file": {"path": "b"}}))
        .contains("one of the two forms"));
    assert!(
        err(json!({"file": {"path": "a"}, "adaptive": {}})).contains("only one sampling strategy")
    );
    assert!(err(json!({"source": {"file": "a", "remote": {}}})).contains("too many sources"));
    let typo = err(json!({"source": {"file": "a", "reload_intervall": "1s"}}));
    assert!(typo.contains("reload_interval"), "{typo}");
}

/// The registry knows both names and parses them alike.
#[test]
fn both_names_are_one_extension() {
    use crate::extension::ExtensionConfig;
    let value = json!({"source": {"file": "s.json"}});
    let collector = ExtensionConfig::from_value("jaegerremotesampling", value.clone());
    let jaeger = ExtensionConfig::from_value("remote_sampling", value);
    assert_eq!(collector.unwrap().unwrap(), jaeger.unwrap().unwrap());
}

#[test]
fn the_service_parameter_is_url_decoded() {
    assert_eq!(
        query_values("service=a%2Fb+c&x=1&service=", "service").unwrap(),
        vec!["a/b c".to_string(), String::new()]
    );
    assert!(query_values("service=%zz", "service").is_err());
}

/// A changed file that reads well is served; one that does not keeps the
/// strategies last read, and so does a file that cannot be read.
#[test]
fn a_reload_swaps_good_strategies_in_and_keeps_the_old_on_a_bad_file() {
    use std::sync::Arc;

    use super::serve::Served;
    use super::Reloader;

    let file =
        |p: f64| format!(r#"{{"default_strategy": {{"type": "probabilistic", "param": {p}}}}}"#);
    let first = file(0.25).into_bytes();
    let served = Arc::new(Served::new(
        "remote_sampling",
        Strategies::parse(&first, 0.001).unwrap().strategies,
    ));
    let mut reloader = Reloader {
        extension: "remote_sampling".into(),
        path: "strategies.json".into(),
        default_probability: 0.001,
        served: served.clone(),
        last_read: Some(first),
        last_error: None,
    };
    let rate = || {
        served
            .current()
            .for_service("svc")
            .probabilistic_sampling
            .unwrap()
            .sampling_rate
    };
    assert_eq!(rate(), 0.25);
    reloader.look_at(Ok(file(0.75).into_bytes()));
    assert_eq!(rate(), 0.75);
    reloader.look_at(Ok(file(7.5).into_bytes()));
    assert_eq!(rate(), 0.75, "a bad file keeps the strategies last read");
    reloader.look_at(Ok(b"{".to_vec()));
    assert_eq!(rate(), 0.75);
    reloader.look_at(Err(std::io::Error::from(std::io::ErrorKind::NotFound)));
    assert_eq!(rate(), 0.75, "a missing file keeps them too");
    assert!(reloader.last_error.is_some());
    reloader.look_at(Ok(file(0.5).into_bytes()));
    assert_eq!(rate(), 0.5);
    assert!(reloader.last_error.is_none());
}

/// Jaeger v2's `adaptive` keys, with Jaeger's defaults, and tracegate's
/// `fleet`; Jaeger's storage and lease keys are accepted.
#[test]
fn the_adaptive_source_reads_jaegers_keys() {
    use super::config::AdaptiveSource;
    let config = from_value(json!({"adaptive": null, "http": null})).unwrap();
    assert!(config.validate().unwrap().is_empty());
    let Source::Adaptive(adaptive) = &config.source else {
        panic!("{config:?}")
    };
    let options = adaptive.options();
    assert_eq!(options, super::adaptive::Options::default());

    let config = from_value(json!({
        "adaptive": {
            "sampling_store": "some_store",
            "target_samples_per_second": 5,
            "delta_tolerance": 0.1,
            "calculation_interval": "10s",
            "aggregation_buckets": 3,
            "calculation_buckets": 2,
            "calculation_delay": "2m",
            "initial_sampling_probability": 0.01,
            "min_sampling_probability": 0.0001,
            "min_samples_per_second": 0.1,
            "leader_lease_refresh_interval": "5s",
            "follower_lease_refresh_interval": "60s",
            "fleet": {
                "resolver": {"static": {"hostnames": ["10.0.0.1:5778", "10.0.0.2:5778"]}},
                "advertised_endpoint": "10.0.0.2:5778",
            },
        },
        "http": {"endpoint": "0.0.0.0:5778"},
    }))
    .unwrap();
    let warnings = config.validate().unwrap();
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    for key in [
        "calculation_buckets",
        "sampling_store",
        "calculation_delay",
        "leader_lease_refresh_interval",
        "follower_lease_refresh_interval",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("adaptive.{key} "))),
            "{key}: {warnings:?}"
        );
    }
    let Source::Adaptive(adaptive) = &config.source else {
        panic!("{config:?}")
    };
    let AdaptiveSource {
        target_samples_per_second,
        delta_tolerance,
        calculation_interval,
        aggregation_buckets,
        initial_sampling_probability,
        min_sampling_probability,
        min_samples_per_second,
        fleet,
        ..
    } = adaptive.as_ref();
    assert_eq!(
        (
            *target_samples_per_second,
            *delta_tolerance,
            *calculation_interval,
            *aggregation_buckets,
            *initial_sampling_probability,
            *min_sampling_probability,
            *min_samples_per_second
        ),
        (5.0, 0.1, Duration::from_secs(10), 3, 0.01, 0.0001, 0.1)
    );
    let fleet = fleet.as_ref().unwrap();
    assert_eq!(fleet.advertised_endpoint, "10.0.0.2:5778");
    assert_eq!(fleet.timeout, Duration::from_secs(5));
    let typo = from_value(json!({"adaptive": {"target_sample_per_second": 1}}))
        .unwrap_err()
        .to_string();
    assert!(typo.contains("target_samples_per_second"), "{typo}");
    // tracegate's earlier spelling of Jaeger's `calculation_buckets`.
    let earlier = from_value(json!({"adaptive": {"buckets_for_calculation": 3}})).unwrap();
    let warnings = earlier.validate().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("adaptive.calculation_buckets 3 ")),
        "{warnings:?}"
    );
}

/// The gRPC endpoint answers the standard health check as Jaeger v2's
/// does: the server and the sampling service are `SERVING`, any other
/// service `NOT_FOUND`; `Watch` is not served.
#[tokio::test]
async fn the_grpc_endpoint_answers_the_health_check() {
    use super::serve::{HealthCheckRequest, HealthCheckResponse, HEALTH_CHECK_PATH, SERVING};
    use crate::context::BuildContext;
    use crate::extension::BuildExtension;

    let config = from_value(json!({"file": null, "grpc": {"endpoint": "127.0.0.1:0"}})).unwrap();
    let ctx = BuildContext::default();
    let running = config.start("remote_sampling", &ctx).await.unwrap();
    let (_, address) = running.addresses[0];
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = tonic::client::Grpc::new(channel);
    let call = |path: &'static str, service: &str| {
        let request = tonic::Request::new(HealthCheckRequest {
            service: service.into(),
        });
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        let mut client = client.clone();
        async move {
            client.ready().await.unwrap();
            client
                .unary(request, path, codec)
                .await
                .map(|r| r.into_inner().status)
        }
    };
    for service in ["", "jaeger.api_v2.SamplingManager"] {
        let status = call(HEALTH_CHECK_PATH, service).await;
        assert_eq!(status.unwrap(), SERVING, "{service:?}");
    }
    let other = call(HEALTH_CHECK_PATH, "other.Service").await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound, "{other:?}");
    let watch = call("/grpc.health.v1.Health/Watch", "").await.unwrap_err();
    assert_eq!(watch.code(), tonic::Code::Unimplemented, "{watch:?}");
    ctx.shutdown.cancel();
}
