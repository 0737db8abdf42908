//! `azure`: the Azure instance metadata service's compute document
//! (`Metadata: true` on the request, as IMDS demands).
//! `TRACEGATE_AZURE_METADATA_ENDPOINT` moves it (tracegate's own variable;
//! Azure defines none). As in the collector, any failure to read the
//! document means "not on Azure": the detector contributes nothing.

use http::Method;
use serde::Deserialize;
use tracegate_model::otlp::KeyValue;

use super::{client, string_kv, DetectContext, DetectError};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("cloud.provider", true),
    ("cloud.platform", true),
    ("cloud.region", true),
    // Off by default in the collector.
    ("cloud.availability_zone", false),
    ("cloud.account.id", true),
    ("host.id", true),
    ("host.name", true),
    ("azure.vm.name", true),
    ("azure.vm.size", true),
    ("azure.vm.scaleset.name", true),
    ("azure.resourcegroup.name", true),
];

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const COMPUTE_PATH: &str = "/metadata/instance/compute?api-version=2021-12-13&format=json";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Compute {
    location: String,
    name: String,
    vm_id: String,
    vm_size: String,
    subscription_id: String,
    resource_group_name: String,
    vm_scale_set_name: String,
    zone: String,
    os_profile: OsProfile,
    tags_list: Vec<Tag>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OsProfile {
    computer_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Tag {
    name: String,
    value: String,
}

/// `tags`: regexes of tag names set as `azure.tag.<name>`.
pub(super) async fn detect(
    ctx: &DetectContext,
    tags: &[regex::Regex],
) -> Result<Vec<KeyValue>, DetectError> {
    let base = ctx
        .var("TRACEGATE_AZURE_METADATA_ENDPOINT")
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/');
    let url = format!("{base}{COMPUTE_PATH}");
    let absent = |e: String| DetectError::Absent(format!("not on Azure: {e}"));
    let body = client::send(Method::GET, &url, &[("Metadata", "true")])
        .await
        .and_then(|r| r.ok_text(&url))
        .map_err(absent)?;
    let c: Compute = serde_json::from_str(&body).map_err(|e| absent(format!("{url}: {e}")))?;
    // The OS's computer name; the VM's name where it has none.
    let host_name = if c.os_profile.computer_name.is_empty() {
        c.name.clone()
    } else {
        c.os_profile.computer_name.clone()
    };
    let mut out = vec![
        string_kv("cloud.provider", "azure"),
        string_kv("cloud.platform", "azure_vm"),
        string_kv("host.name", host_name),
        string_kv("cloud.region", c.location),
        string_kv("host.id", c.vm_id),
        string_kv("cloud.account.id", c.subscription_id),
        string_kv("azure.vm.name", c.name),
        string_kv("azure.vm.size", c.vm_size),
        string_kv("azure.resourcegroup.name", c.resource_group_name),
    ];
    if !c.vm_scale_set_name.is_empty() {
        out.push(string_kv("azure.vm.scaleset.name", c.vm_scale_set_name));
    }
    if !c.zone.is_empty() {
        out.push(string_kv("cloud.availability_zone", c.zone));
    }
    for tag in c.tags_list {
        if tags.iter().any(|r| r.is_match(&tag.name)) {
            out.push(string_kv(&format!("azure.tag.{}", tag.name), tag.value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::{as_pairs, FakeServer};

    /// IMDS answers 400 without `Metadata: true`.
    async fn fake_imds() -> FakeServer {
        FakeServer::start(|req| {
            if req.header("metadata") != Some("true") {
                return (
                    400,
                    vec![("Content-Type", "application/json".into())],
                    r#"{"error":"Bad request. Required metadata header not specified"}"#.into(),
                );
            }
            if req.path != COMPUTE_PATH {
                return (404, vec![], String::new());
            }
            let body = r#"{"location":"westeurope","name":"vm-7","vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6",
                "vmSize":"Standard_D2s_v3","subscriptionId":"8d10da13-8125-4ba9-a717-bf7490507b3d",
                "resourceGroupName":"rg-prod","vmScaleSetName":"","zone":"2","osType":"Linux",
                "osProfile":{"computerName":"vm7-host"},
                "tagsList":[{"name":"team","value":"payments"},{"name":"cost-center","value":"42"}]}"#;
            (200, vec![("Content-Type", "application/json".into())], body.into())
        })
        .await
    }

    #[tokio::test]
    async fn compute_document() {
        let server = fake_imds().await;
        let ctx = DetectContext::for_test(&[("TRACEGATE_AZURE_METADATA_ENDPOINT", &server.url())]);
        let team = [regex::Regex::new("^te").unwrap()];
        let detected = detect(&ctx, &team).await.unwrap();
        assert_eq!(
            as_pairs(&detected),
            [
                ("cloud.provider", "azure"),
                ("cloud.platform", "azure_vm"),
                ("host.name", "vm7-host"),
                ("cloud.region", "westeurope"),
                ("host.id", "02aab8a4-74ef-476e-8182-f6d2ba4166a6"),
                ("cloud.account.id", "8d10da13-8125-4ba9-a717-bf7490507b3d"),
                ("azure.vm.name", "vm-7"),
                ("azure.vm.size", "Standard_D2s_v3"),
                ("azure.resourcegroup.name", "rg-prod"),
                ("cloud.availability_zone", "2"),
                ("azure.tag.team", "payments"),
            ]
        );
        let bare = client::send(Method::GET, &format!("{}{COMPUTE_PATH}", server.url()), &[])
            .await
            .unwrap();
        assert_eq!(bare.status, http::StatusCode::BAD_REQUEST);
        // Nothing listening: not on Azure, not an error.
        let nowhere =
            DetectContext::for_test(&[("TRACEGATE_AZURE_METADATA_ENDPOINT", "http://127.0.0.1:1")]);
        assert!(matches!(
            detect(&nowhere, &[]).await,
            Err(DetectError::Absent(_))
        ));
    }
}
