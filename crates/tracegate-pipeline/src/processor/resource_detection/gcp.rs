//! `gcp`: the Compute Engine metadata server (`Metadata-Flavor: Google` on
//! the request and on the answer). `GCE_METADATA_HOST` moves it, as in
//! Google's client libraries. On GKE (`KUBERNETES_SERVICE_HOST` set) the
//! platform is `gcp_kubernetes_engine` and the cluster's name and location
//! come from the instance attributes.

use http::Method;
use tracegate_model::otlp::KeyValue;

use super::{client, string_kv, DetectContext};

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

pub(super) async fn detect(ctx: &DetectContext) -> Result<Vec<KeyValue>, String> {
    let host = ctx.var("GCE_METADATA_HOST").unwrap_or(DEFAULT_HOST);
    let md = Metadata {
        base: format!("http://{host}"),
    };
    let (project, id, zone, machine_type, name) = tokio::try_join!(
        md.require("project/project-id"),
        md.require("instance/id"),
        md.require("instance/zone"),
        md.require("instance/machine-type"),
        md.require("instance/name"),
    )?;
    // "projects/123/zones/us-central1-a" → "us-central1-a".
    let zone = last_segment(&zone).to_string();
    let mut out = vec![string_kv("cloud.provider", "gcp")];
    if ctx.var("KUBERNETES_SERVICE_HOST").is_some() {
        out.push(string_kv("cloud.platform", "gcp_kubernetes_engine"));
        out.push(string_kv("cloud.account.id", project));
        let (cluster, location) = tokio::try_join!(
            md.get("instance/attributes/cluster-name"),
            md.get("instance/attributes/cluster-location"),
        )?;
        if let Some(location) = location {
            // A zonal cluster's location is a zone ("us-central1-c"), a
            // regional one's a region ("us-central1").
            if location.matches('-').count() >= 2 {
                out.push(string_kv("cloud.region", region_of(&location)));
                out.push(string_kv("cloud.availability_zone", location));
            } else {
                out.push(string_kv("cloud.region", location));
            }
        }
        if let Some(cluster) = cluster {
            out.push(string_kv("k8s.cluster.name", cluster));
        }
    } else {
        out.push(string_kv("cloud.platform", "gcp_compute_engine"));
        out.push(string_kv("cloud.account.id", project));
        out.push(string_kv("cloud.region", region_of(&zone)));
        out.push(string_kv("cloud.availability_zone", zone));
    }
    out.push(string_kv("host.id", id));
    out.push(string_kv("host.name", name));
    out.push(string_kv("host.type", last_segment(&machine_type)));
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
        assert_eq!(
            as_pairs(&detect(&ctx).await.unwrap()),
            [
                ("cloud.provider", "gcp"),
                ("cloud.platform", "gcp_compute_engine"),
                ("cloud.account.id", "my-project"),
                ("cloud.region", "us-central1"),
                ("cloud.availability_zone", "us-central1-a"),
                ("host.id", "4520031799277581759"),
                ("host.name", "vm-1"),
                ("host.type", "e2-medium"),
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
        let detected = detect(&ctx).await.unwrap();
        let got = as_pairs(&detected);
        assert!(got.contains(&("cloud.platform", "gcp_kubernetes_engine")));
        assert!(got.contains(&("k8s.cluster.name", "prod")));
        assert!(got.contains(&("cloud.region", "europe-west1")));
    }

    #[tokio::test]
    async fn a_server_that_is_not_gce_is_refused() {
        let server = FakeServer::start(|_| (200, vec![], "hello".into())).await;
        let ctx = DetectContext::for_test(&[("GCE_METADATA_HOST", &server.authority())]);
        assert!(detect(&ctx).await.unwrap_err().contains("Metadata-Flavor"));
    }
}
