//! A Kubernetes API for processes that run a shipped config with a `k8s`
//! resolver (config/gateway.yaml's hand-over) where the test needs no
//! fleet: an in-test API server listing no EndpointSlices, so the resolver
//! starts with no members and the gateway keeps every trace it is sent.

use std::path::PathBuf;
use std::sync::OnceLock;

use tracegate_pipeline::kube::fake::FakeKubeApi;

/// The environment that points a process's `k8s` resolver at an API: its
/// URL and a service account directory (no token, as through `kubectl
/// proxy`; the namespace `tracegate`, as the manifests deploy to).
pub fn env(api_url: &str, service_account_dir: &str) -> [(&'static str, String); 2] {
    [
        ("TRACEGATE_K8S_API_URL", api_url.to_string()),
        (
            "TRACEGATE_K8S_SERVICE_ACCOUNT_DIR",
            service_account_dir.to_string(),
        ),
    ]
}

/// A service account directory for namespace `tracegate`, kept as long as
/// `dir` is.
pub fn service_account_dir(dir: &tempfile::TempDir) -> String {
    std::fs::write(dir.path().join("namespace"), "tracegate\n").expect("write namespace");
    dir.path().to_str().expect("utf-8 temp path").to_string()
}

/// One API with no EndpointSlices, shared by the whole test process (on a
/// thread of its own, so it outlives each test's runtime).
pub fn idle_api_env() -> &'static [(&'static str, String); 2] {
    static ENV: OnceLock<[(&'static str, String); 2]> = OnceLock::new();
    ENV.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let api = FakeKubeApi::start().await;
                let dir: PathBuf = tempfile::tempdir().expect("temp dir").keep();
                std::fs::write(dir.join("namespace"), "tracegate\n").expect("write namespace");
                tx.send(env(&api.url(), dir.to_str().expect("utf-8 temp path")))
                    .expect("the test waits");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the idle API started")
    })
}
