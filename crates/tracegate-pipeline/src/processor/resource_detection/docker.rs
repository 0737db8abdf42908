//! `docker`: the Docker daemon's host (`GET /info`: its name and OS type)
//! over `DOCKER_HOST` (`unix://` or `tcp://`), by default the socket at
//! /var/run/docker.sock.

use std::path::Path;

use http::Method;
use serde::Deserialize;
use tracegate_model::otlp::KeyValue;

use super::{client, string_kv, DetectContext, DetectError};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[("host.name", true), ("os.type", true)];

const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "OSType")]
    os_type: String,
}

/// No daemon to talk to (no socket, nothing listening) is "not on
/// Docker": the detector contributes nothing. A daemon that answers
/// wrongly is a failure.
pub(super) async fn detect(ctx: &DetectContext) -> Result<Vec<KeyValue>, DetectError> {
    let host = ctx.var("DOCKER_HOST").unwrap_or(DEFAULT_HOST);
    let response = if let Some(path) = host.strip_prefix("unix://") {
        client::send_unix(Path::new(path), Method::GET, "/info", &[]).await
    } else if let Some(address) = host.strip_prefix("tcp://") {
        client::send(Method::GET, &format!("http://{address}/info"), &[]).await
    } else {
        return Err(DetectError::Failed(format!(
            "DOCKER_HOST {host}: only unix:// and tcp:// are supported"
        )));
    };
    let response = response.map_err(|e| DetectError::Absent(format!("no Docker daemon: {e}")))?;
    let info: Info = serde_json::from_str(&response.ok_text("docker /info")?)
        .map_err(|e| format!("docker /info: {e}"))?;
    Ok(vec![
        string_kv("host.name", info.name),
        string_kv("os.type", info.os_type.to_lowercase()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::{as_pairs, FakeServer};

    fn answer(
        req: &crate::processor::resource_detection::tests::FakeRequest,
    ) -> (u16, Vec<(&'static str, String)>, String) {
        if req.path != "/info" {
            return (404, vec![], r#"{"message":"page not found"}"#.into());
        }
        let body = r#"{"ID":"7TRN:IPZB","Containers":14,"Name":"docker-host-1","OSType":"linux","OperatingSystem":"Ubuntu 24.04"}"#;
        (
            200,
            vec![("Content-Type", "application/json".into())],
            body.into(),
        )
    }

    #[tokio::test]
    async fn daemon_over_tcp_and_unix_socket() {
        let tcp = FakeServer::start(answer).await;
        let ctx =
            DetectContext::for_test(&[("DOCKER_HOST", &format!("tcp://{}", tcp.authority()))]);
        let expected = [("host.name", "docker-host-1"), ("os.type", "linux")];
        assert_eq!(as_pairs(&detect(&ctx).await.unwrap()), expected);

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let _unix = FakeServer::start_unix(&socket, answer).await;
        let ctx =
            DetectContext::for_test(&[("DOCKER_HOST", &format!("unix://{}", socket.display()))]);
        assert_eq!(as_pairs(&detect(&ctx).await.unwrap()), expected);

        let missing =
            DetectContext::for_test(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
        assert!(matches!(
            detect(&missing).await,
            Err(DetectError::Absent(_))
        ));
    }
}
