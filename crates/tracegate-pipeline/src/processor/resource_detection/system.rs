//! `system`: the host's name (from the configured `hostname_sources`, in
//! order: `dns` gives the fully qualified name as the resolver's hosts file
//! lists it, `os` the kernel's host name), `os.type`, and when enabled
//! `host.id` (the machine id) and `host.arch`.

use tracegate_model::otlp::KeyValue;

use super::{string_kv, DetectContext};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("host.name", true),
    ("os.type", true),
    ("host.id", false),
    ("host.arch", false),
];

pub(super) const HOSTNAME_SOURCES: &[&str] = &["dns", "os"];

pub(super) fn detect(ctx: &DetectContext, sources: &[String]) -> Result<Vec<KeyValue>, String> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let mut host_name = None;
    for source in sources {
        let found = match source.as_str() {
            "dns" => fqdn(ctx),
            _ => os_hostname(ctx),
        };
        match found {
            Ok(name) => {
                host_name = Some(name);
                break;
            }
            Err(e) => failures.push(format!("{source}: {e}")),
        }
    }
    match host_name {
        Some(name) => out.push(string_kv("host.name", name)),
        None => {
            return Err(format!(
                "all hostname sources failed ({})",
                failures.join("; ")
            ))
        }
    }
    out.push(string_kv("os.type", os_type()));
    if let Some(id) = machine_id(ctx) {
        out.push(string_kv("host.id", id));
    }
    out.push(string_kv("host.arch", arch()));
    Ok(out)
}

fn os_hostname(ctx: &DetectContext) -> Result<String, String> {
    ctx.read("proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| ctx.var("HOSTNAME").map(str::to_string))
        .ok_or_else(|| "the kernel's host name is not readable".to_string())
}

/// The canonical name of the host: the first name on the hosts-file line
/// that lists the OS host name, when it is qualified.
fn fqdn(ctx: &DetectContext) -> Result<String, String> {
    let short = os_hostname(ctx)?;
    let hosts = ctx.read("etc/hosts").ok_or("no hosts file")?;
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(_address) = fields.next() else {
            continue;
        };
        let names: Vec<&str> = fields.collect();
        if names.iter().any(|n| n.eq_ignore_ascii_case(&short)) {
            if let Some(canonical) = names.iter().find(|n| n.contains('.')) {
                return Ok(canonical.to_string());
            }
        }
    }
    Err(format!(
        "no fully qualified name for {short} in the hosts file"
    ))
}

fn machine_id(ctx: &DetectContext) -> Option<String> {
    ["etc/machine-id", "var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| ctx.read(p))
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

/// The semantic conventions' `os.type` values (Go's GOOS names).
pub(super) fn os_type() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The semantic conventions' `host.arch` values.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::resource_detection::tests::as_pair;

    #[test]
    fn hostname_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |p: &str, s: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        };
        write("proc/sys/kernel/hostname", "node7\n");
        write(
            "etc/hosts",
            "127.0.0.1 localhost\n10.0.0.7 node7.cluster.example node7 # me\n",
        );
        write("etc/machine-id", "0123abcd\n");
        let ctx = DetectContext::for_test(&[]).with_root(dir.path());
        let get = |sources: &[&str]| {
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            detect(&ctx, &sources).map(|kvs| kvs.iter().map(as_pair).collect::<Vec<_>>())
        };
        let dns_first = get(&["dns", "os"]).unwrap();
        assert_eq!(
            dns_first[0],
            ("host.name".into(), "node7.cluster.example".into())
        );
        assert_eq!(dns_first[1], ("os.type".into(), os_type().to_string()));
        assert_eq!(dns_first[2], ("host.id".into(), "0123abcd".into()));
        assert_eq!(get(&["os"]).unwrap()[0].1, "node7");

        write("etc/hosts", "127.0.0.1 localhost\n");
        assert_eq!(get(&["dns", "os"]).unwrap()[0].1, "node7");
        assert!(get(&["dns"])
            .unwrap_err()
            .contains("all hostname sources failed"));
    }
}
