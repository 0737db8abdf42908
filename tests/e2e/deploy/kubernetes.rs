//! The Kubernetes manifests: every overlay under `deploy/kubernetes/overlays`
//! rendered with `kubectl kustomize`, each object checked against the
//! Kubernetes schemas with `kubernetes-validate --strict`, each embedded
//! collector config with `tracegate validate --from-configmap`, and the
//! objects against each other and their configs (ports, probes, volumes,
//! shutdown timing, RBAC). The seed's Jaeger v2 collector example is the
//! seed's manifest with only the image swapped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{assert_validates_cleanly, env_default, listeners, read, repo, run, tool};

const OVERLAYS: [&str; 3] = ["agent", "gateway", "standalone"];

/// `kubectl kustomize DIR` written to `out`; its objects.
fn render(kubectl: &Path, dir: &Path, out: &Path) -> Vec<Value> {
    let output = run(Command::new(kubectl).arg("kustomize").arg(dir));
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(out, &output.stdout).expect("write the rendered manifest");
    parse_manifest(
        &String::from_utf8_lossy(&output.stdout),
        &dir.display().to_string(),
    )
}

fn parse_manifest(text: &str, what: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every object in `file` validates against the Kubernetes schemas, with
/// unknown fields refused.
fn schema_check(validator: Option<&Path>, file: &Path) {
    let Some(validator) = validator else { return };
    let output = run(Command::new(validator)
        .args(["--strict", "--quiet"])
        .arg(file));
    assert!(
        output.status.success(),
        "kubernetes-validate {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The value of `--flag=VALUE` among a container's args.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

fn seconds(duration: &str) -> u64 {
    duration
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{duration}: expected whole seconds"))
}

fn port(endpoint: &str) -> u64 {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{endpoint}: no port"))
}

/// The component ids of `kind` (`processors`, `exporters`, ...) in the
/// traces pipelines, and their types.
fn used<'a>(config: &'a Value, kind: &str) -> Vec<(&'a str, &'a str)> {
    let mut ids = Vec::new();
    for pipeline in config["service"]["pipelines"]
        .as_object()
        .into_iter()
        .flatten()
    {
        for id in strings(&pipeline.1[kind]) {
            ids.push((id, id.split('/').next().unwrap_or(id)));
        }
    }
    ids
}

/// Checks one Deployment or DaemonSet against the rendered objects and the
/// collector config it mounts.
fn check_workload(objects: &[Value], workload: &Value) {
    let name = workload["metadata"]["name"].as_str().expect("name");
    let what = format!("{} {name}", workload["kind"].as_str().unwrap());
    let pod = &workload["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    let container = containers
        .iter()
        .find(|c| c["name"] == "tracegate")
        .unwrap_or_else(|| panic!("{what}: no container named tracegate"));
    assert!(
        container["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("tracegate:")),
        "{what}: image {}",
        container["image"]
    );

    // The config: --config names a file in a mounted ConfigMap that exists.
    let args = strings(&container["args"]);
    let config_path = flag(&args, "--config").unwrap_or_else(|| panic!("{what}: no --config"));
    let (dir, key) = config_path.rsplit_once('/').expect("a path");
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir}"));
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]));
    let configmap_name = volume["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    let configmap = named(objects, "ConfigMap", configmap_name)
        .unwrap_or_else(|| panic!("{what}: ConfigMap {configmap_name} is not in the manifests"));
    let text = configmap["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap {configmap_name} has no {key}"));
    let config = super::yaml(text, &format!("{configmap_name}:{key}"));

    // Every port it listens on is a container port; the probes ask the
    // health check where it listens.
    let container_ports: Vec<(&str, u64)> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or(""),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (path, endpoint, _) in listeners(&config) {
        assert!(
            endpoint.starts_with("0.0.0.0:"),
            "{what}: {path} listens on {endpoint}, out of the pod's reach"
        );
        let p = port(&endpoint);
        assert!(
            container_ports.iter().any(|(_, c)| *c == p),
            "{what}: {path} listens on {p}, not a container port"
        );
    }
    let health = env_default(
        config["extensions"]["health_check"]["endpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: its config has no health_check")),
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{what}: {probe}");
        let probed = match &get["port"] {
            Value::String(name) => container_ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .unwrap_or_else(|| panic!("{what}: {probe} port {name} is not declared")),
            other => other.as_u64().expect("a port"),
        };
        assert_eq!(
            probed,
            port(&health),
            "{what}: {probe} and the health check"
        );
    }

    // Shutdown: the endpoints are left (preStop), then tracegate drains
    // within --shutdown-grace, and both fit the grace period.
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: no preStop sleep"));
    let grace = seconds(flag(&args, "--shutdown-grace").unwrap_or("30s"));
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        pre_stop + grace < termination,
        "{what}: preStop {pre_stop}s + --shutdown-grace {grace}s must end before terminationGracePeriodSeconds {termination}"
    );

    // A gateway of a fleet (it hands traces over) goes on accepting, after
    // its endpoint turns terminating, until every agent has seen it leave:
    // the k8s resolver sees it at once (a watch event), a GPU node's dns
    // resolver within its interval (5 s) and timeout (1 s) plus the record's
    // TTL (CoreDNS's default 5 s). It accepts through preStop, then through
    // --shutdown-drain-delay.
    let hands_over = used(&config, "processors")
        .iter()
        .any(|(id, _)| config["processors"][*id]["handover"].is_object());
    if hands_over {
        let drain = seconds(flag(&args, "--shutdown-drain-delay").unwrap_or("5s"));
        assert!(
            pre_stop + drain > 5 + 1 + 5,
            "{what}: preStop {pre_stop}s + --shutdown-drain-delay {drain}s is too short for \
             agents to see the gateway leave"
        );
        assert!(
            drain < grace,
            "{what}: the drain delay is part of the grace"
        );
    }

    // A memory limit comes with a memory limiter that keeps under it.
    let limits = &container["resources"]["limits"];
    assert!(
        limits["memory"].is_string() && limits["cpu"].is_string(),
        "{what}: resource limits"
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(
        used(&config, "processors")
            .iter()
            .any(|(_, t)| *t == "memory_limiter"),
        "{what}: a memory limit but no memory_limiter in its pipelines"
    );

    // Unprivileged, on a read-only root filesystem.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");

    // Resource detection: K8S_NODE_NAME from the downward API where the
    // k8s_api detector reads it, and the RBAC it needs. Never the pod's own
    // name or namespace, which no detector reads.
    let env: Vec<&Value> = container["env"].as_array().into_iter().flatten().collect();
    let var = |n: &str| env.iter().find(|e| e["name"] == n).copied();
    for unused in ["K8S_POD_NAME", "K8S_NAMESPACE"] {
        assert!(var(unused).is_none(), "{what}: {unused} is set but unused");
    }
    let detectors: Vec<&str> = used(&config, "processors")
        .iter()
        .filter(|(_, t)| matches!(*t, "resource_detection" | "resourcedetection"))
        .flat_map(|(id, _)| strings(&config["processors"][*id]["detectors"]))
        .collect();
    if detectors
        .iter()
        .any(|d| matches!(*d, "k8s_api" | "k8snode" | "kubernetes"))
    {
        let node = var("K8S_NODE_NAME").unwrap_or_else(|| panic!("{what}: no K8S_NODE_NAME"));
        assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
        let account = pod["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        assert!(
            named(objects, "ServiceAccount", account).is_some(),
            "{what}: {account}"
        );
        let may_get_nodes = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRoleBinding")
            .filter(|b| {
                b["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
            })
            .filter_map(|b| named(objects, "ClusterRole", b["roleRef"]["name"].as_str()?))
            .flat_map(|r| r["rules"].as_array().into_iter().flatten())
            .any(|rule| {
                strings(&rule["resources"]).contains(&"nodes")
                    && strings(&rule["verbs"]).contains(&"get")
            });
        assert!(
            may_get_nodes,
            "{what}: {account} may not get nodes (k8s_api)"
        );
    }

    // Membership: every `k8s` resolver (the `loadbalancing` exporter's,
    // `tail_sampling.handover`'s) watches a headless Service of these
    // manifests that serves its ports, with RBAC to list and watch its
    // EndpointSlices; a hand-over names the gateway by its pod IP.
    for (path, k8s) in k8s_resolvers(&config) {
        check_k8s_resolver(objects, &what, pod, &path, k8s);
    }
    for (id, _) in used(&config, "processors") {
        let Some(advertised) = config["processors"][id]["handover"]["advertised_endpoint"].as_str()
        else {
            continue;
        };
        assert!(
            advertised.starts_with("${env:POD_IP"),
            "{what}: {id}.handover.advertised_endpoint {advertised} is not the pod IP"
        );
        let pod_ip = var("POD_IP").unwrap_or_else(|| panic!("{what}: no POD_IP"));
        assert_eq!(
            pod_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP",
            "{what}: POD_IP"
        );
    }

    // Exporters that name a Service of these manifests reach one, on a
    // port it serves.
    for (id, _) in used(&config, "exporters") {
        let Some(endpoint) = config["exporters"][id]["endpoint"].as_str() else {
            continue;
        };
        let endpoint = env_default(endpoint);
        let (host, p) = endpoint.rsplit_once(':').expect("host:port");
        if host.contains('.') {
            continue; // another namespace or outside the cluster
        }
        let service = named(objects, "Service", host)
            .unwrap_or_else(|| panic!("{what}: exporter {id} sends to {host}, no such Service"));
        assert!(
            service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|sp| sp["port"].as_u64() == p.parse().ok()),
            "{what}: Service {host} has no port {p}"
        );
    }
}

/// The `k8s` resolvers of the components a config uses, with their paths.
fn k8s_resolvers(config: &Value) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for kind in ["exporters", "processors"] {
        for (id, _) in used(config, kind) {
            let component = &config[kind][id];
            for (at, resolver) in [
                ("resolver", &component["resolver"]),
                ("handover.resolver", &component["handover"]["resolver"]),
            ] {
                if resolver["k8s"].is_object() {
                    found.push((format!("{kind}.{id}.{at}.k8s"), &resolver["k8s"]));
                }
            }
        }
    }
    found
}

/// A `k8s` resolver of `workload`'s config names a headless Service here
/// that serves its ports, in the pod's namespace (a bare name) or this
/// one, and the pod's ServiceAccount may list and watch EndpointSlices.
fn check_k8s_resolver(objects: &[Value], what: &str, pod: &Value, path: &str, k8s: &Value) {
    let service = k8s["service"].as_str().expect("service");
    let mut parts = service.split('.');
    let name = parts.next().unwrap();
    if let Some(namespace) = parts.next() {
        assert_eq!(namespace, "tracegate", "{what}: {path}.service {service}");
    }
    let svc = named(objects, "Service", name)
        .unwrap_or_else(|| panic!("{what}: {path} watches Service {name}, not in the manifests"));
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "{what}: {path}: Service {name} is not headless (its endpoints are the members)"
    );
    assert_ne!(
        svc["spec"]["publishNotReadyAddresses"], true,
        "{what}: Service {name} lists gateways that are not ready"
    );
    let ports: Vec<u64> = match k8s["ports"].as_array() {
        Some(ports) => ports
            .iter()
            .map(|p| match p {
                Value::String(s) => env_default(s).parse().expect("a port"),
                other => other.as_u64().expect("a port"),
            })
            .collect(),
        None => vec![4317],
    };
    for p in ports {
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|sp| sp["port"].as_u64() == Some(p)),
            "{what}: {path}: Service {name} has no port {p}"
        );
    }
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let bound = |binding: &'static str| {
        objects
            .iter()
            .filter(move |o| o["kind"] == binding)
            .filter(move |b| {
                b["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
            })
    };
    let rules: Vec<&Value> = bound("RoleBinding")
        .chain(bound("ClusterRoleBinding"))
        .filter_map(|b| {
            named(
                objects,
                b["roleRef"]["kind"].as_str()?,
                b["roleRef"]["name"].as_str()?,
            )
        })
        .flat_map(|r| r["rules"].as_array().into_iter().flatten())
        .collect();
    for verb in ["list", "watch"] {
        assert!(
            rules.iter().any(|rule| {
                strings(&rule["apiGroups"]).contains(&"discovery.k8s.io")
                    && strings(&rule["resources"]).contains(&"endpointslices")
                    && strings(&rule["verbs"]).contains(&verb)
            }),
            "{what}: {account} may not {verb} EndpointSlices ({path})"
        );
    }
}

/// A Service selects pods of some workload here and targets their ports.
fn check_service(objects: &[Value], service: &Value) {
    let name = service["metadata"]["name"].as_str().unwrap();
    let selector = service["spec"]["selector"].as_object().expect("a selector");
    let workload = objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .find(|w| {
            let labels = &w["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(k, v)| &labels[k] == v)
        })
        .unwrap_or_else(|| panic!("Service {name} selects no workload here"));
    let ports: BTreeSet<&str> = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["name"].as_str())
        .collect();
    for sp in service["spec"]["ports"].as_array().expect("ports") {
        let target = sp["targetPort"].as_str().expect("named target ports");
        assert!(
            ports.contains(target),
            "Service {name}: no container port {target}"
        );
    }
}

#[test]
fn every_overlay_renders_validates_and_carries_valid_configs() {
    let Some(kubectl) = tool("KUBECTL", "kubectl", "rendering the Kubernetes overlays") else {
        return;
    };
    let validator = tool(
        "KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "validating the rendered objects against the Kubernetes schemas",
    );
    let overlays = repo().join("deploy/kubernetes/overlays");
    let found: BTreeSet<String> = std::fs::read_dir(&overlays)
        .expect("overlays")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(found, OVERLAYS.map(String::from).into(), "the overlays");

    let out = tempfile::tempdir().expect("temp dir");
    for overlay in OVERLAYS {
        let file = out.path().join(format!("{overlay}.yaml"));
        let objects = render(&kubectl, &overlays.join(overlay), &file);
        schema_check(validator.as_deref(), &file);
        let kinds =
            |kind: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == kind).collect() };

        for configmap in kinds("ConfigMap") {
            let name = configmap["metadata"]["name"].as_str().unwrap();
            for key in configmap["data"].as_object().expect("data").keys() {
                assert_validates_cleanly(&[
                    "--config",
                    file.to_str().unwrap(),
                    "--from-configmap",
                    &format!("{name}:{key}"),
                ]);
            }
        }
        let workloads: Vec<&Value> = objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
            .collect();
        assert!(!workloads.is_empty(), "{overlay}: no workload");
        for workload in workloads {
            check_workload(&objects, workload);
        }
        for service in kinds("Service") {
            check_service(&objects, service);
        }
        // One namespace (a reference across namespaces would not be
        // rewritten to a generated ConfigMap's name) and one label for all.
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            if kind != "Namespace" && !kind.starts_with("Cluster") {
                assert_eq!(
                    object["metadata"]["namespace"], "tracegate",
                    "{overlay}: {object}"
                );
            }
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/part-of"], "tracegate",
                "{overlay}: {kind} {}",
                object["metadata"]["name"]
            );
        }
        // A tier of gateways (the gateway and agent overlays) keeps all but
        // one of them through voluntary disruptions, one membership change
        // at a time.
        if overlay != "standalone" {
            let gateway = named(&objects, "Deployment", "tracegate-gateway").expect("gateway");
            assert!(
                gateway["spec"]["replicas"].as_u64() > Some(1),
                "{overlay}: one gateway is no tier"
            );
            let pdb = named(&objects, "PodDisruptionBudget", "tracegate-gateway")
                .unwrap_or_else(|| panic!("{overlay}: no PodDisruptionBudget for the gateways"));
            assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{overlay}");
            let labels = &gateway["spec"]["template"]["metadata"]["labels"];
            for (k, v) in pdb["spec"]["selector"]["matchLabels"]
                .as_object()
                .expect("matchLabels")
            {
                assert_eq!(&labels[k], v, "{overlay}: the PDB selects the gateways");
            }
        }
        // The agent overlay puts an agent on every node, beside the gateway.
        if overlay == "agent" {
            assert_eq!(kinds("DaemonSet").len(), 1, "{overlay}");
            let service = named(&objects, "Service", "tracegate-agent").expect("agent Service");
            assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
        }
    }
}

/// Every manifest under `deploy/kubernetes` is rendered by some overlay
/// (listed in a kustomization's resources) or is an example checked below.
#[test]
fn every_manifest_is_reached_by_an_overlay_or_is_an_example() {
    let root = repo().join("deploy/kubernetes");
    let mut files = Vec::new();
    let mut listed = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let k = super::yaml(&std::fs::read_to_string(&path).unwrap(), "kustomization");
                for resource in strings(&k["resources"]) {
                    listed.insert(normalize(&dir.join(resource)));
                }
            } else {
                files.push(path);
            }
        }
    }
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        assert!(
            listed.contains(&normalize(&file)) || relative.starts_with("examples"),
            "{} is in no kustomization's resources",
            file.display()
        );
    }
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_jaeger_example_is_the_seed_with_only_the_image_swapped() {
    let seed = read("tests/fixtures/jaeger-v2-k8s.yaml");
    let example_path = "deploy/kubernetes/examples/jaeger-v2-collector.yaml";
    let example = read(example_path);
    let uncommented: Vec<&str> = example.lines().skip_while(|l| l.starts_with('#')).collect();
    let seed: Vec<&str> = seed.lines().collect();
    assert_eq!(uncommented.len(), seed.len(), "same lines but the header");
    let changed: Vec<(&str, &str)> = seed
        .iter()
        .zip(&uncommented)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (*a, *b))
        .collect();
    assert_eq!(
        changed,
        [(
            "          image: otel/opentelemetry-collector-contrib:0.95.0",
            "          image: tracegate:0.1.0"
        )]
    );
    let objects = parse_manifest(&example, example_path);
    let deployment = named(&objects, "Deployment", "otel-collector").expect("the Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);

    // Its config loads as tracegate reads it (the seed's warnings stay:
    // its metrics pipeline is skipped, its head sampler lists UNSET).
    let path = repo().join(example_path);
    let out = super::tracegate(&[
        "validate",
        "--config",
        path.to_str().unwrap(),
        "--from-configmap",
        "jaeger-collector-config",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with(": valid"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What runs without --config: the image's own config, which serves the
    // health check the seed's probes ask for.
    let image_config = super::yaml(&read("config/container.yaml"), "config/container.yaml");
    let health = image_config["extensions"]["health_check"]["endpoint"]
        .as_str()
        .unwrap();
    assert_eq!(port(health), 13133);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(container["args"].is_null(), "as in the seed: no --config");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 13133);

    let validator = tool(
        "KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "validating the example against the Kubernetes schemas",
    );
    schema_check(validator.as_deref(), &path);
}
