//! `gcp`: the Compute Engine metadata server (`Metadata-Flavor: Google` on
//! the request and on the answer). `GCE_METADATA_HOST` moves it, as in
//! Google's client libraries. A metadata server that does not answer as
//! Google's means "not on Google Cloud": nothing detected, as in the
//! collector. The platform comes from the environment as Google's detector
//! decides it: GKE (`KUBERNETES_SERVICE_HOST`), Cloud Functions
//! (`FUNCTION_TARGET`), Cloud Run (`K_CONFIGURATION`), Cloud Run jobs
//! (`CLOUD_RUN_JOB`), App Engine (`GAE_SERVICE`, standard when
//! `GAE_ENV=standard`), else Compute Engine.

use http::Method;
use tracegate_model::otlp::KeyValue;

use super::{client, string_kv, DetectContext, DetectError};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("cloud.provider", true),
    ("cloud.platform", true),
    ("cloud.account.id", true),
    ("cloud.region", true),
    ("cloud.availability_zone", true),
    ("host.id", true),
    ("host.name", true),
    ("host.type", true),
    ("k8s.cluster.name", true),
    ("faas.name", true),
    ("faas.version", true),
    ("faas.instance", true),
    // Accepted; not set, as in the collector (its faas.id removal gate is
    // on by default: faas.instance carries the value).
    ("faas.id", true),
    ("gcp.cloud_run.job.execution", true),
    ("gcp.cloud_run.job.task_index", true),
    ("gcp.gce.instance.hostname", false),
    ("gcp.gce.instance.name", false),
    ("gcp.gce.instance_group_manager.name", true),
    ("gcp.gce.instance_group_manager.region", true),
    ("gcp.gce.instance_group_manager.zone", true),
];

const DEFAULT_HOST: &str = "169.254.169.254";

struct Metadata {
    base: String,
}

impl Metadata {
    /// One metadata value; `Ok(None)` for 404 (not set on this instance).
    async fn get(&self, path: &str) -> Result<Option<String>, String> {
        let url = format!("{}/computeMetadata/v1/{path}", self.base);
        let response = client::send(Method::GET, &url, &[("Metadata-Flavor", "Google")]).await?;
        if response
            .headers
            .get("Metadata-Flavor")
            .and_then(|v| v.to_str().ok())
            != Some("Google")
        {
            return Err(format!(
                "{url}: not a GCE metadata server (no Metadata-Flavor: Google)"
            ));
        }
        if response.status == ::http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        response.ok_text(&url).map(|s| Some(s.trim().to_string()))
    }

    async fn require(&self, path: &str) -> Result<String, String> {
        self.get(path)
            .await?
            .ok_or_else(|| format!("metadata {path}: not found"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Gke,
    CloudFunctions,
    CloudRun,
    CloudRunJob,
    AppEngineStandard,
    AppEngineFlex,
    Gce,
}

fn platform(ctx: &DetectContext) -> Platform {
    let set = |name: &str| ctx.env.contains_key(name);
    if ctx.var("KUBERNETES_SERVICE_HOST").is_some() {
        Platform::Gke
    } else if set("FUNCTION_TARGET") {
        Platform::CloudFunctions
    } else if set("K_CONFIGURATION") {
        Platform::CloudRun
    } else if set("CLOUD_RUN_JOB") {
        Platform::CloudRunJob
    } else if ctx.var("GAE_ENV") == Some("standard") {
        Platform::AppEngineStandard
    } else if set("GAE_SERVICE") {
        Platform::AppEngineFlex
    } else {
        Platform::Gce
    }
}

/// `labels`: regexes of instance label keys, read from the instance's
/// metadata attributes, set as `gcp.gce.instance.labels.<key>`.
pub(super) async fn detect(
    ctx: &DetectContext,
    labels: &[regex::Regex],
) -> Result<Vec<KeyValue>, DetectError> {
    let host = ctx.var("GCE_METADATA_HOST").unwrap_or(DEFAULT_HOST);
    let md = Metadata {
        base: format!("http://{host}"),
    };
    // Whether this is Google Cloud at all: the metadata server answering
    // as Google's.
    let project = match md.get("project/project-id").await {
        Ok(Some(project)) => project,
        Ok(None) => return Err("metadata project/project-id: not found".to_string().into()),
        Err(e) => return Err(DetectError::Absent(format!("not on Google Cloud: {e}"))),
    };
    let var = |name: &str| ctx.var(name).map(str::to_string);
    let need_var =
        |name: &str| var(name).ok_or_else(|| DetectError::Failed(format!("{name} is not set")));
    let mut out = vec![
        string_kv("cloud.provider", "gcp"),
        string_kv("cloud.account.id", project),
    ];
    match platform(ctx) {
        Platform::Gke => {
            out.push(string_kv("cloud.platform", "gcp_kubernetes_engine"));
            let (cluster, location, id) = tokio::try_join!(
                md.require("instance/attributes/cluster-name"),
                md.require("instance/attributes/cluster-location"),
                md.require("instance/id"),
            )?;
            // A zonal cluster's location is a zone ("us-central1-c"), a
            // regional one's a region ("us-central1").
            if location.matches('-').count() >= 2 {
                out.push(string_kv("cloud.availability_zone", location));
            } else {
                out.push(string_kv("cloud.region", location));
            }
            out.push(string_kv("k8s.cluster.name", cluster));
            out.push(string_kv("host.id", id));
            // Not available under workload identity: skipped, as in the
            // collector.
            if let Ok(Some(name)) = md.get("instance/name").await {
                out.push(string_kv("host.name", name));
            }
        }
        Platform::CloudRun | Platform::CloudFunctions => {
            let platform = if platform(ctx) == Platform::CloudRun {
                "gcp_cloud_run"
            } else {
                "gcp_cloud_functions"
            };
            out.push(string_kv("cloud.platform", platform));
            let (id, region) =
                tokio::try_join!(md.require("instance/id"), md.require("instance/region"))?;
            out.push(string_kv("faas.name", need_var("K_SERVICE")?));
            out.push(string_kv("faas.version", need_var("K_REVISION")?));
            out.push(string_kv("faas.instance", id));
            out.push(string_kv("cloud.region", last_segment(&region)));
        }
        Platform::CloudRunJob => {
            out.push(string_kv("cloud.platform", "gcp_cloud_run"));
            let (id, region) =
                tokio::try_join!(md.require("instance/id"), md.require("instance/region"))?;
            let name = var("K_SERVICE").map_or_else(|| need_var("CLOUD_RUN_JOB"), Ok)?;
            out.push(string_kv("faas.name", name));
            out.push(string_kv("cloud.region", last_segment(&region)));
            out.push(string_kv("faas.instance", id));
            out.push(string_kv(
                "gcp.cloud_run.job.execution",
                need_var("CLOUD_RUN_EXECUTION")?,
            ));
            out.push(string_kv(
                "gcp.cloud_run.job.task_index",
                need_var("CLOUD_RUN_TASK_INDEX")?,
            ));
        }
        Platform::AppEngineStandard | Platform::AppEngineFlex => {
            out.push(string_kv("cloud.platform", "gcp_app_engine"));
            let zone = md.require("instance/zone").await?;
            let zone = last_segment(&zone).to_string();
            if platform(ctx) == Platform::AppEngineStandard {
                let region = md.require("instance/region").await?;
                out.push(string_kv("faas.name", need_var("GAE_SERVICE")?));
                out.push(string_kv("faas.version", need_var("GAE_VERSION")?));
                out.push(string_kv("faas.instance", need_var("GAE_INSTANCE")?));
                out.push(string_kv("cloud.availability_zone", zone));
                out.push(string_kv("cloud.region", last_segment(&region)));
            } else {
                out.push(string_kv("cloud.availability_zone", zone.clone()));
                out.push(string_kv("cloud.region", region_of(&zone)));
                out.push(string_kv("faas.name", need_var("GAE_SERVICE")?));
                out.push(string_kv("faas.version", need_var("GAE_VERSION")?));
                out.push(string_kv("faas.instance", need_var("GAE_INSTANCE")?));
            }
        }
        Platform::Gce => {
            out.push(string_kv("cloud.platform", "gcp_compute_engine"));
            let (zone, machine_type, id, name, hostname) = tokio::try_join!(
                md.require("instance/zone"),
                md.require("instance/machine-type"),
                md.require("instance/id"),
                md.require("instance/name"),
                md.require("instance/hostname"),
            )?;
            // "projects/123/zones/us-central1-a" → "us-central1-a".
            let zone = last_segment(&zone).to_string();
            out.push(string_kv("cloud.availability_zone", zone.clone()));
            out.push(string_kv("cloud.region", region_of(&zone)));
            out.push(string_kv("host.type", last_segment(&machine_type)));
            out.push(string_kv("host.id", id));
            out.push(string_kv("host.name", name.clone()));
            out.push(string_kv("gcp.gce.instance.hostname", hostname));
            out.push(string_kv("gcp.gce.instance.name", name));
            // "projects/123/zones/us-central1-a/instanceGroupManagers/web"
            // (or regions/…) for an instance a MIG created.
            if let Some(created_by) = md.get("instance/attributes/created-by").await? {
                let parts: Vec<&str> = created_by.split('/').collect();
                if let [.., kind, location, "instanceGroupManagers", mig] = parts[..] {
                    out.push(string_kv("gcp.gce.instance_group_manager.name", mig));
                    match kind {
                        "zones" => {
                            out.push(string_kv("gcp.gce.instance_group_manager.zone", location))
                        }
                        "regions" => {
                            out.push(string_kv("gcp.gce.instance_group_manager.region", location))
                        }
                        _ => {}
                    }
                }
            }
            if !labels.is_empty() {
                if let Some(keys) = md.get("instance/attributes/").await? {
                    for key in keys.lines().map(str::trim).filter(|k| !k.is_empty()) {
                        if labels.iter().any(|r| r.is_match(key)) {
                            if let Some(value) =
                                md.get(&format!("instance/attributes/{key}")).await?
                            {
                                out.push(string_kv(
                                    &format!("gcp.gce.instance.labels.{key}"),
                                    value,
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// "us-central1-a" → "us-central1".
fn region_of(zone: &str) -> String {
    match zone.rfind('-') {
        Some(i) => zone[..i].to_string(),
        None => zone.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::{as_pairs, FakeServer};

    /// Answers as the GCE metadata server does: 403 without the header,
    /// `Metadata-Flavor: Google` on every answer.
    async fn fake_gce() -> FakeServer {
        FakeServer::start(|req| {
            let mut headers = vec![("Metadata-Flavor", "Google".to_string())];
            if req.header("metadata-flavor") != Some("Google") {
                return (
                    403,
                    headers,
                    "Missing Metadata-Flavor:Google header.".into(),
                );
            }
            let body = match req.path.as_str() {
                "/computeMetadata/v1/project/project-id" => "my-project",
                "/computeMetadata/v1/instance/id" => "4520031799277581759",
                "/computeMetadata/v1/instance/zone" => "projects/123456/zones/us-central1-a",
                "/computeMetadata/v1/instance/machine-type" => {
                    "projects/123456/machineTypes/e2-medium"
                }
                "/computeMetadata/v1/instance/name" => "vm-1",
                "/computeMetadata/v1/instance/hostname" => "vm-1.c.my-project.internal",
                "/computeMetadata/v1/instance/region" => "projects/123456/regions/us-central1",
                "/computeMetadata/v1/instance/attributes/created-by" => {
                    "projects/123456/regions/us-central1/instanceGroupManagers/web"
                }
                "/computeMetadata/v1/instance/attributes/" => "created-by\nteam\nstartup-script",
                "/computeMetadata/v1/instance/attributes/team" => "payments",
                "/computeMetadata/v1/instance/attributes/cluster-name" => "prod",
                "/computeMetadata/v1/instance/attributes/cluster-location" => "europe-west1",
                _ => {
                    headers.push(("Content-Type", "text/html".into()));
                    return (404, headers, "not found".into());
                }
            };
            (200, headers, body.into())
        })
        .await
    }

    #[tokio::test]
    async fn compute_engine() {
        let server = fake_gce().await;
        let ctx = DetectContext::for_test(&[("GCE_METADATA_HOST", &server.authority())]);
        let team = [regex::Regex::new("^team$").unwrap()];
        assert_eq!(
            as_pairs(&detect(&ctx, &team).await.unwrap()),
            [
                ("cloud.provider", "gcp"),
                ("cloud.account.id", "my-project"),
                ("cloud.platform", "gcp_compute_engine"),
                ("cloud.availability_zone", "us-central1-a"),
                ("cloud.region", "us-central1"),
                ("host.type", "e2-medium"),
                ("host.id", "4520031799277581759"),
                ("host.name", "vm-1"),
                ("gcp.gce.instance.hostname", "vm-1.c.my-project.internal"),
                ("gcp.gce.instance.name", "vm-1"),
                ("gcp.gce.instance_group_manager.name", "web"),
                ("gcp.gce.instance_group_manager.region", "us-central1"),
                ("gcp.gce.instance.labels.team", "payments"),
            ]
        );
    }

    #[tokio::test]
    async fn kubernetes_engine() {
        let server = fake_gce().await;
        let ctx = DetectContext::for_test(&[
            ("GCE_METADATA_HOST", &server.authority()),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        let detected = detect(&ctx, &[]).await.unwrap();
        let got = as_pairs(&detected);
        assert!(got.contains(&("cloud.platform", "gcp_kubernetes_engine")));
        assert!(got.contains(&("k8s.cluster.name", "prod")));
        assert!(got.contains(&("cloud.region", "europe-west1")));
    }

    #[tokio::test]
    async fn a_server_that_is_not_gce_is_refused() {
        let server = FakeServer::start(|_| (200, vec![], "hello".into())).await;
        let ctx = DetectContext::for_test(&[("GCE_METADATA_HOST", &server.authority())]);
        match detect(&ctx, &[]).await {
            Err(DetectError::Absent(reason)) => assert!(reason.contains("Metadata-Flavor")),
            other => panic!("{other:?}"),
        }
    }

    /// Cloud Run and Cloud Run jobs: faas.* from the container contract's
    /// variables, the instance id and region from the metadata server.
    #[tokio::test]
    async fn cloud_run_service_and_job() {
        let server = fake_gce().await;
        let ctx = DetectContext::for_test(&[
            ("GCE_METADATA_HOST", &server.authority()),
            ("K_CONFIGURATION", "checkout"),
            ("K_SERVICE", "checkout"),
            ("K_REVISION", "checkout-00042-abc"),
        ]);
        assert_eq!(
            as_pairs(&detect(&ctx, &[]).await.unwrap()),
            [
                ("cloud.provider", "gcp"),
                ("cloud.account.id", "my-project"),
                ("cloud.platform", "gcp_cloud_run"),
                ("faas.name", "checkout"),
                ("faas.version", "checkout-00042-abc"),
                ("faas.instance", "4520031799277581759"),
                ("cloud.region", "us-central1"),
            ]
        );
        let job = DetectContext::for_test(&[
            ("GCE_METADATA_HOST", &server.authority()),
            ("CLOUD_RUN_JOB", "nightly"),
            ("CLOUD_RUN_EXECUTION", "nightly-ajg89"),
            ("CLOUD_RUN_TASK_INDEX", "2"),
        ]);
        let detected = detect(&job, &[]).await.unwrap();
        let got = as_pairs(&detected);
        assert!(got.contains(&("faas.name", "nightly")));
        assert!(got.contains(&("gcp.cloud_run.job.execution", "nightly-ajg89")));
        assert!(got.contains(&("gcp.cloud_run.job.task_index", "2")));
        // On the platform but a value missing: a real failure.
        let broken = DetectContext::for_test(&[
            ("GCE_METADATA_HOST", &server.authority()),
            ("K_CONFIGURATION", "checkout"),
        ]);
        assert!(matches!(
            detect(&broken, &[]).await,
            Err(DetectError::Failed(_))
        ));
    }
}
