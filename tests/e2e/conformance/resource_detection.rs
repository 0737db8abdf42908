//! Conformance with the collector's `resourcedetection` processor: the
//! examples of its README, each a case of this table, run through the real
//! binary against a fake EC2 metadata service. A case is one
//! `resource_detection` block and the attributes the collector gives two
//! resources: an application's (which has a `service.name`, a
//! `deployment.environment` and a `host.name` of its own) and a bare one.

use std::time::Duration;

use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{config_per_case, indent, CasePipeline};
use crate::resource_detection::{fake_imds, str_attr, two_resources};
use crate::support;
use support::gateway::{otlp_exporter_to, Gateway};
use support::raw::{grpc, TRACE_EXPORT};
use support::sink::Sink;

/// What an attribute must be when it arrives.
#[derive(Debug, Clone, Copy)]
enum Want {
    Is(&'static str),
    /// The kernel's host name, as the `system` detector's `os` source reads it.
    KernelHostName,
    /// Set, but to none of these values.
    NoneOf(&'static [&'static str]),
    Absent,
}

use Want::*;

/// The variables the gateway runs with: the application identity the `env`
/// detector must ignore (`OTEL_SERVICE_NAME`) and the attributes it reads.
const RESOURCE_ATTRIBUTES: &str = "deployment.environment=prod%20eu,team=payments";

/// The fake instance's values (`fake_imds`).
const EC2_HOST_NAME: &str = "ip-10-0-0-1.ec2.internal";
const EC2_INSTANCE_ID: &str = "i-1234567890abcdef0";

/// The application's own resource.
const APPLICATION: &[(&str, &str)] = &[
    ("service.name", "checkout"),
    ("deployment.environment", "staging"),
    ("host.name", "client-host"),
];

struct Case {
    /// Also the pipeline's name: `[a-z0-9_]` only.
    name: &'static str,
    /// The processor's settings, as the README writes them, at column 0.
    settings: &'static str,
    /// The application's resource as it arrives.
    application: &'static [(&'static str, Want)],
    /// The bare resource as it arrives.
    bare: &'static [(&'static str, Want)],
}

/// The table. Each entry says where in the collector the fact comes from.
fn cases() -> Vec<Case> {
    vec![
        // README "Environment Variable": `override: false` keeps what the
        // resource has and adds the rest of OTEL_RESOURCE_ATTRIBUTES,
        // values URL-unescaped. OTEL_SERVICE_NAME is not read.
        Case {
            name: "env_override_false",
            settings: "
detectors: [env]
timeout: 2s
override: false
",
            application: &[
                ("service.name", Is("checkout")),
                ("deployment.environment", Is("staging")),
                ("team", Is("payments")),
            ],
            bare: &[
                ("deployment.environment", Is("prod eu")),
                ("team", Is("payments")),
                ("service.name", Absent),
            ],
        },
        // README "Configuration": `override` defaults to true, so detected
        // values replace the resource's own; what is not detected stays.
        Case {
            name: "env_override_default",
            settings: "
detectors: [env]
",
            application: &[
                ("service.name", Is("checkout")),
                ("deployment.environment", Is("prod eu")),
                ("team", Is("payments")),
                ("host.name", Is("client-host")),
            ],
            bare: &[
                ("deployment.environment", Is("prod eu")),
                ("service.name", Absent),
            ],
        },
        // README `resource_attributes` example: per detector switches.
        // host.name comes from system (ec2's is off), host.id from ec2
        // (system's is off); what neither switches stays at its default.
        Case {
            name: "attribute_switches",
            settings: "
detectors: [system, ec2]
system:
  resource_attributes:
    host.name:
      enabled: true
    host.id:
      enabled: false
ec2:
  resource_attributes:
    host.name:
      enabled: false
    host.id:
      enabled: true
",
            application: &[
                ("host.name", NoneOf(&[EC2_HOST_NAME, "client-host"])),
                ("host.id", Is(EC2_INSTANCE_ID)),
                ("cloud.provider", Is("aws")),
                ("cloud.platform", Is("aws_ec2")),
                ("os.type", Is("linux")),
                ("service.name", Is("checkout")),
            ],
            bare: &[
                ("host.name", NoneOf(&[EC2_HOST_NAME])),
                ("host.id", Is(EC2_INSTANCE_ID)),
            ],
        },
        // README "Ordering": where two detectors set an attribute, the one
        // listed first wins.
        Case {
            name: "first_detector_wins",
            settings: "
detectors: [ec2, system]
",
            application: &[
                ("host.name", Is(EC2_HOST_NAME)),
                ("os.type", Is("linux")),
                ("cloud.region", Is("us-west-2")),
            ],
            bare: &[("host.name", Is(EC2_HOST_NAME))],
        },
        // README "System metadata": `hostname_sources: ["os"]` is the
        // kernel's host name; host.id and host.arch are off by default.
        Case {
            name: "system_os_hostname",
            settings: r#"
detectors: ["system"]
system:
  hostname_sources: ["os"]
"#,
            application: &[
                ("host.name", KernelHostName),
                ("os.type", Is("linux")),
                ("host.id", Absent),
                ("host.arch", Absent),
                ("service.name", Is("checkout")),
            ],
            bare: &[("host.name", KernelHostName), ("host.id", Absent)],
        },
    ]
}

fn config(cases: &[Case], sink: std::net::SocketAddr) -> String {
    let pipelines: Vec<CasePipeline> = cases
        .iter()
        .map(|case| CasePipeline {
            name: case.name,
            settings: indent(case.settings, "    "),
            exporter: "otlp".into(),
        })
        .collect();
    config_per_case(&pipelines, "resource_detection", &otlp_exporter_to(sink))
}

/// What differs from `want` in `resource`, one line per attribute.
fn mismatches(resource: &Option<Resource>, want: &[(&str, Want)], kernel: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for (key, want) in want {
        let got = str_attr(resource, key);
        let ok = match want {
            Is(value) => got.as_deref() == Some(*value),
            KernelHostName => got.as_deref() == Some(kernel),
            NoneOf(values) => got.as_deref().is_some_and(|g| !values.contains(&g)),
            Absent => got.is_none(),
        };
        if !ok {
            wrong.push(format!("{key}: got {got:?}, the collector gives {want:?}"));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_detection_adds_what_the_collector_adds() {
    let cases = cases();
    let sink = Sink::start().await;
    let imds = format!("http://{}", fake_imds().await);
    let gw = Gateway::start_with(
        &config(&cases, sink.addr),
        &[],
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
            ("OTEL_RESOURCE_ATTRIBUTES", RESOURCE_ATTRIBUTES),
            ("OTEL_SERVICE_NAME", "the-gateway-itself"),
        ],
    );
    for case in &cases {
        let body = two_resources(case.name, APPLICATION, &[1], &[2]);
        let reply = grpc(
            gw.addr(&format!("otlp/{}", case.name), "grpc"),
            TRACE_EXPORT,
            &body,
            None,
        )
        .await;
        assert_eq!(reply.code, 0, "{}: {}", case.name, reply.message);
    }
    assert!(
        sink.wait_for_spans(2 * cases.len(), Duration::from_secs(10))
            .await
    );

    // What `os` reads, as the collector's os.Hostname does on Linux.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the kernel's host name")
        .trim()
        .to_string();
    let spans = sink.spans();
    let mut wrong = Vec::new();
    for case in &cases {
        for (n, want) in [(1, case.application), (2, case.bare)] {
            let name = format!("{}-{n}", case.name);
            let Some(span) = spans.iter().find(|s| s.span.name == name) else {
                wrong.push(format!("{name}: did not arrive"));
                continue;
            };
            for m in mismatches(&span.resource, want, &kernel) {
                wrong.push(format!("{name}: {m}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "attributes differing from the collector's:\n{}",
        wrong.join("\n")
    );
}
