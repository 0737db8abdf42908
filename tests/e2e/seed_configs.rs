//! The seed configs run by the real binary, unchanged but for their listen
//! addresses (every `0.0.0.0:PORT` becomes `127.0.0.1:0`). Each either
//! starts, or refuses to start naming only components whose issue has not
//! landed yet. The table printed says which start, so progress is visible.

use std::process::{Command, Stdio};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/seed-configs");

/// Collector configs among the seeds (the rest are Kubernetes manifests,
/// Tempo's own config and a shell script).
const COLLECTOR_CONFIGS: &[&str] = &["jaeger-v2-collector.yaml", "otel-collector-daemonset.yaml"];

fn local_listeners(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(i) = rest.find("0.0.0.0:") {
        out.push_str(&rest[..i]);
        out.push_str("127.0.0.1:0");
        rest = rest[i + "0.0.0.0:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[test]
fn seed_configs_start_or_name_only_unimplemented_components() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Vec::new();
    for name in COLLECTOR_CONFIGS {
        let yaml = std::fs::read_to_string(format!("{SEEDS}/{name}")).expect("seed config");
        let path = dir.path().join(name);
        std::fs::write(&path, local_listeners(&yaml)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracegate"))
            .arg(format!("--config={}", path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Vec<String> = std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map_while(Result::ok)
            .take_while(|l| !l.contains("tracegate is ready"))
            .collect();
        let exited = child.try_wait().unwrap();
        let started = match exited {
            None => {
                let _ = child.kill();
                let _ = child.wait();
                true
            }
            Some(_) => {
                let status = child.wait().unwrap();
                assert!(!status.success());
                let problems: Vec<&String> = lines
                    .iter()
                    .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_lowercase()))
                    .filter(|l| l.contains("::"))
                    .collect();
                assert!(
                    !problems.is_empty(),
                    "{name}: exited without naming why:\n{lines:#?}"
                );
                for p in &problems {
                    assert!(
                        p.contains("is not implemented yet"),
                        "{name}: refused for something other than a missing component: {p}"
                    );
                }
                false
            }
        };
        table.push(format!(
            "{name}: {}",
            if started {
                "starts"
            } else {
                "waits for unimplemented components"
            }
        ));
    }
    println!("{}", table.join("\n"));
}
