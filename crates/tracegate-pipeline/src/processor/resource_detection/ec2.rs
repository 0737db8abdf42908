//! `ec2` (also `aws`) and `eks`: the EC2 instance metadata service with
//! IMDSv2 — a session token from `PUT /latest/api/token`, then the instance
//! identity document and the host name with that token — falling back to
//! IMDSv1 only where the token call itself is not supported (403/404/405),
//! as the AWS SDK does. `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it, as in
//! the AWS SDKs.

use http::{Method, StatusCode};
use serde::Deserialize;
use tracegate_model::otlp::KeyValue;

use super::{client, string_kv, DetectContext, DetectError};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("cloud.provider", true),
    ("cloud.platform", true),
    ("cloud.region", true),
    ("cloud.availability_zone", true),
    ("cloud.account.id", true),
    ("host.id", true),
    ("host.image.id", true),
    ("host.type", true),
    ("host.name", true),
];

/// EKS: the same identity, on a Kubernetes node.
pub(super) const EKS_ATTRIBUTES: &[(&str, bool)] = &[
    ("cloud.provider", true),
    ("cloud.platform", true),
    ("cloud.region", true),
    ("cloud.availability_zone", true),
    ("cloud.account.id", true),
    ("host.id", true),
];

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_SECONDS: &str = "21600";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    account_id: String,
    availability_zone: String,
    image_id: String,
    instance_id: String,
    instance_type: String,
    region: String,
}

struct Imds {
    base: String,
    token: Option<String>,
}

impl Imds {
    async fn connect(ctx: &DetectContext) -> Result<Imds, String> {
        let base = ctx
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_string();
        let url = format!("{base}/latest/api/token");
        let response = client::send(
            Method::PUT,
            &url,
            &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)],
        )
        .await?;
        let token = match response.status {
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => None,
            _ => Some(response.ok_text("IMDSv2 token")?),
        };
        Ok(Imds { base, token })
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let url = format!("{}{path}", self.base);
        let headers: Vec<(&str, &str)> = match &self.token {
            Some(token) => vec![("X-aws-ec2-metadata-token", token.as_str())],
            None => Vec::new(),
        };
        client::send(Method::GET, &url, &headers)
            .await?
            .ok_text(&url)
    }

    async fn identity(&self) -> Result<IdentityDocument, String> {
        let doc = self
            .get("/latest/dynamic/instance-identity/document")
            .await?;
        serde_json::from_str(&doc).map_err(|e| format!("instance identity document: {e}"))
    }
}

/// As in the collector: when the instance id cannot be read (nothing
/// answers, or something that is not IMDS answers with errors) this is not
/// EC2 and nothing is detected; once it is read, failures are real.
async fn connect(ctx: &DetectContext) -> Result<Imds, DetectError> {
    let absent = |e: String| DetectError::Absent(format!("not on EC2: {e}"));
    let imds = Imds::connect(ctx).await.map_err(absent)?;
    imds.get("/latest/meta-data/instance-id")
        .await
        .map_err(absent)?;
    Ok(imds)
}

/// `tags`: regexes of instance tag keys, read from IMDS, set as
/// `ec2.tag.<key>`.
pub(super) async fn detect(
    ctx: &DetectContext,
    tags: &[regex::Regex],
) -> Result<Vec<KeyValue>, DetectError> {
    let imds = connect(ctx).await?;
    let (doc, host_name) =
        tokio::try_join!(imds.identity(), imds.get("/latest/meta-data/hostname"))?;
    let mut tag_values = Vec::new();
    if !tags.is_empty() {
        let keys = imds
            .get("/latest/meta-data/tags/instance")
            .await
            .map_err(|e| {
                format!("instance tags (is InstanceMetadataTags enabled on the instance?): {e}")
            })?;
        for key in keys.lines().map(str::trim).filter(|k| !k.is_empty()) {
            if tags.iter().any(|r| r.is_match(key)) {
                let value = imds
                    .get(&format!("/latest/meta-data/tags/instance/{key}"))
                    .await?;
                tag_values.push(string_kv(&format!("ec2.tag.{key}"), value));
            }
        }
    }
    let mut out = vec![
        string_kv("cloud.provider", "aws"),
        string_kv("cloud.platform", "aws_ec2"),
        string_kv("cloud.region", doc.region),
        string_kv("cloud.availability_zone", doc.availability_zone),
        string_kv("cloud.account.id", doc.account_id),
        string_kv("host.id", doc.instance_id),
        string_kv("host.image.id", doc.image_id),
        string_kv("host.type", doc.instance_type),
        string_kv("host.name", host_name.trim()),
    ];
    out.extend(tag_values);
    Ok(out)
}

/// EKS: a Kubernetes pod (`KUBERNETES_SERVICE_HOST`) on an EC2 instance.
pub(super) async fn detect_eks(ctx: &DetectContext) -> Result<Vec<KeyValue>, DetectError> {
    if ctx.var("KUBERNETES_SERVICE_HOST").is_none() {
        return Err(DetectError::Absent(
            "not running on Kubernetes (KUBERNETES_SERVICE_HOST is not set)".into(),
        ));
    }
    let doc = connect(ctx).await?.identity().await?;
    Ok(vec![
        string_kv("cloud.provider", "aws"),
        string_kv("cloud.platform", "aws_eks"),
        string_kv("cloud.region", doc.region),
        string_kv("cloud.availability_zone", doc.availability_zone),
        string_kv("cloud.account.id", doc.account_id),
        string_kv("host.id", doc.instance_id),
    ])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::{as_pairs, FakeServer};

    pub(crate) const DOCUMENT: &str = r#"{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "us-west-2b",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-5fb8c835",
  "instanceId" : "i-1234567890abcdef0",
  "instanceType" : "t2.micro",
  "kernelId" : null,
  "pendingTime" : "2016-11-19T16:32:11Z",
  "privateIp" : "10.158.112.84",
  "ramdiskId" : null,
  "region" : "us-west-2",
  "version" : "2017-09-30"
}"#;

    /// IMDSv2 as AWS runs it: a token from PUT (which needs the TTL
    /// header), 401 on any GET without a valid token.
    pub(crate) async fn fake_imds() -> FakeServer {
        FakeServer::start(|req| {
            const TOKEN: &str = "AQAEAFakeToken==";
            if req.path == "/latest/api/token" {
                if req.method != "PUT" {
                    return (405, vec![], String::new());
                }
                if req.header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                    return (400, vec![], String::new());
                }
                return (
                    200,
                    vec![("X-aws-ec2-metadata-token-ttl-seconds", "21600".into())],
                    TOKEN.into(),
                );
            }
            if req.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
                return (401, vec![], String::new());
            }
            match req.path.as_str() {
                "/latest/dynamic/instance-identity/document" => (200, vec![], DOCUMENT.into()),
                "/latest/meta-data/hostname" => (
                    200,
                    vec![],
                    "ip-10-158-112-84.us-west-2.compute.internal".into(),
                ),
                "/latest/meta-data/instance-id" => (200, vec![], "i-1234567890abcdef0".into()),
                "/latest/meta-data/tags/instance" => (200, vec![], "Name\nteam".into()),
                "/latest/meta-data/tags/instance/team" => (200, vec![], "payments".into()),
                "/latest/meta-data/tags/instance/Name" => (200, vec![], "web-1".into()),
                _ => (404, vec![], String::new()),
            }
        })
        .await
    }

    #[tokio::test]
    async fn imds_v2_token_then_identity() {
        let server = fake_imds().await;
        let ctx = DetectContext::for_test(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &server.url())]);
        let detected = detect(&ctx, &[]).await.unwrap();
        assert_eq!(
            as_pairs(&detected),
            [
                ("cloud.provider", "aws"),
                ("cloud.platform", "aws_ec2"),
                ("cloud.region", "us-west-2"),
                ("cloud.availability_zone", "us-west-2b"),
                ("cloud.account.id", "123456789012"),
                ("host.id", "i-1234567890abcdef0"),
                ("host.image.id", "ami-5fb8c835"),
                ("host.type", "t2.micro"),
                ("host.name", "ip-10-158-112-84.us-west-2.compute.internal"),
            ]
        );
        // The fake refuses a token-less read, as IMDSv2 does.
        let bare = client::send(
            Method::GET,
            &format!("{}/latest/meta-data/hostname", server.url()),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(bare.status, StatusCode::UNAUTHORIZED);

        let team = [regex::Regex::new("^team$").unwrap()];
        let with_tags = detect(&ctx, &team).await.unwrap();
        assert_eq!(
            as_pairs(&with_tags).last(),
            Some(&("ec2.tag.team", "payments"))
        );
        assert!(!as_pairs(&with_tags)
            .iter()
            .any(|(k, _)| *k == "ec2.tag.Name"));
        let nowhere =
            DetectContext::for_test(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")]);
        assert!(matches!(
            detect(&nowhere, &[]).await,
            Err(DetectError::Absent(_))
        ));
        // Something at the address that answers every request with 403 (a
        // proxy, another cloud): not EC2 either.
        let forbidding = FakeServer::start(|_| (403, vec![], String::new())).await;
        let other =
            DetectContext::for_test(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &forbidding.url())]);
        assert!(matches!(
            detect(&other, &[]).await,
            Err(DetectError::Absent(_))
        ));
    }

    #[tokio::test]
    async fn eks_needs_kubernetes() {
        let server = fake_imds().await;
        let off = DetectContext::for_test(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &server.url())]);
        assert!(detect_eks(&off).await.is_err());
        let on = DetectContext::for_test(&[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &server.url()),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        let detected = detect_eks(&on).await.unwrap();
        assert!(as_pairs(&detected).contains(&("cloud.platform", "aws_eks")));
    }
}
