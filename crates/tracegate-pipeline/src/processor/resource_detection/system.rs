//! `system`: the host's name (from the configured `hostname_sources`, in
//! order: `dns` gives the fully qualified name — the hosts file's
//! canonical name, else the resolver's canonical name (CNAME), else a
//! reverse lookup of the host's addresses; `cname` the canonical name;
//! `lookup` the reverse lookup; `os` the kernel's host name), `os.type`,
//! and when switched on `host.id` (the machine id), `host.arch`,
//! `host.ip`, `host.mac`, `host.interface` and the first CPU's `host.cpu.*`.

use std::net::IpAddr;

use tracegate_model::otlp::{any_value, AnyValue, ArrayValue, KeyValue};

use super::resolve::Resolver;
use super::{string_kv, DetectContext};

pub(super) const ATTRIBUTES: &[(&str, bool)] = &[
    ("host.name", true),
    ("os.type", true),
    ("host.id", false),
    ("host.arch", false),
    ("host.ip", false),
    ("host.mac", false),
    ("host.interface", false),
    ("host.cpu.vendor.id", false),
    ("host.cpu.family", false),
    ("host.cpu.model.id", false),
    ("host.cpu.model.name", false),
    ("host.cpu.stepping", false),
    ("host.cpu.cache.l2.size", false),
    ("os.description", false),
    ("os.name", false),
    ("os.version", false),
    ("os.build.id", false),
];

/// Switches the collector has that tracegate refuses to turn on.
pub(super) const NOT_IMPLEMENTED: &[&str] =
    &["os.description", "os.name", "os.version", "os.build.id"];

pub(super) const HOSTNAME_SOURCES: &[&str] = &["dns", "cname", "lookup", "os"];

pub(super) fn detect(
    ctx: &DetectContext,
    sources: &[String],
    resolver: &dyn Resolver,
) -> Result<Vec<KeyValue>, String> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let mut host_name = None;
    for source in sources {
        let found = match source.as_str() {
            "dns" => fqdn(ctx, resolver),
            "cname" => os_hostname(ctx).and_then(|h| resolver.canonical_name(&h)),
            "lookup" => os_hostname(ctx).and_then(|h| reverse_lookup(&h, resolver)),
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
    let interfaces = interfaces(ctx);
    let macs: Vec<String> = interfaces.iter().filter_map(|i| i.mac.clone()).collect();
    out.push(list_kv("host.mac", macs));
    out.push(list_kv(
        "host.interface",
        interfaces.iter().map(|i| i.name.clone()).collect(),
    ));
    out.push(list_kv(
        "host.ip",
        host_ips(ctx).iter().map(IpAddr::to_string).collect(),
    ));
    out.extend(cpu_info(ctx));
    Ok(out)
}

fn list_kv(key: &str, values: Vec<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: values
                    .into_iter()
                    .map(|v| AnyValue {
                        value: Some(any_value::Value::StringValue(v)),
                    })
                    .collect(),
            })),
        }),
        ..Default::default()
    }
}

fn os_hostname(ctx: &DetectContext) -> Result<String, String> {
    ctx.read("proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| ctx.var("HOSTNAME").map(str::to_string))
        .ok_or_else(|| "the kernel's host name is not readable".to_string())
}

/// The fully qualified name: the hosts file's, else the resolver's
/// canonical name when it is qualified, else a reverse lookup.
fn fqdn(ctx: &DetectContext, resolver: &dyn Resolver) -> Result<String, String> {
    let short = os_hostname(ctx)?;
    if let Some(name) = fqdn_from_hosts(ctx, &short) {
        return Ok(name);
    }
    let mut failures = vec![format!(
        "no fully qualified name for {short} in the hosts file"
    )];
    match resolver.canonical_name(&short) {
        Ok(name) if name.contains('.') => return Ok(name),
        Ok(name) => failures.push(format!("canonical name {name} is not qualified")),
        Err(e) => failures.push(e),
    }
    match reverse_lookup(&short, resolver) {
        Ok(name) => Ok(name),
        Err(e) => {
            failures.push(e);
            Err(failures.join("; "))
        }
    }
}

/// The first name any of the host's addresses resolves back to.
fn reverse_lookup(host: &str, resolver: &dyn Resolver) -> Result<String, String> {
    let mut last = format!("{host}: no addresses");
    for ip in resolver.addresses(host)? {
        match resolver.name_of(ip) {
            Ok(name) => return Ok(name),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The canonical name of the host: the first name on the hosts-file line
/// that lists the OS host name, when it is qualified.
fn fqdn_from_hosts(ctx: &DetectContext, short: &str) -> Option<String> {
    let hosts = ctx.read("etc/hosts")?;
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(_address) = fields.next() else {
            continue;
        };
        let names: Vec<&str> = fields.collect();
        if names.iter().any(|n| n.eq_ignore_ascii_case(short)) {
            if let Some(canonical) = names.iter().find(|n| n.contains('.')) {
                return Some(canonical.to_string());
            }
        }
    }
    None
}

fn machine_id(ctx: &DetectContext) -> Option<String> {
    ["etc/machine-id", "var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| ctx.read(p))
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

struct Interface {
    name: String,
    mac: Option<String>,
}

/// Network interfaces that are up and not loopback, from sysfs.
fn interfaces(ctx: &DetectContext) -> Vec<Interface> {
    let Ok(entries) = std::fs::read_dir(ctx.root.join("sys/class/net")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let read = |f: &str| ctx.read(&format!("sys/class/net/{name}/{f}"));
        let flags = read("flags")
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        const IFF_UP: u32 = 0x1;
        const IFF_LOOPBACK: u32 = 0x8;
        if flags & IFF_UP == 0 || flags & IFF_LOOPBACK != 0 {
            continue;
        }
        // The collector writes MACs as IEEE RA hex: upper case, dashes.
        let mac = read("address")
            .map(|m| m.trim().to_ascii_uppercase().replace(':', "-"))
            .filter(|m| !m.is_empty() && m != "00-00-00-00-00-00");
        out.push(Interface { name, mac });
    }
    out
}

/// The host's own addresses, loopback ones left out: IPv4 from the
/// kernel's local routes (/proc/net/fib_trie), IPv6 from
/// /proc/net/if_inet6.
fn host_ips(ctx: &DetectContext) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Some(trie) = ctx.read("proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in trie.lines() {
            let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
            if let Ok(ip) = line.parse::<IpAddr>() {
                last = Some(ip);
            } else if line.starts_with("/32 host LOCAL") {
                if let Some(ip) = last.filter(|ip| !ip.is_loopback() && !out.contains(ip)) {
                    out.push(ip);
                }
            }
        }
    }
    if let Some(table) = ctx.read("proc/net/if_inet6") {
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(hex), Some(name)) = (fields.first(), fields.last()) else {
                continue;
            };
            if *name == "lo" || hex.len() != 32 {
                continue;
            }
            let Ok(bits) = u128::from_str_radix(hex, 16) else {
                continue;
            };
            let ip = IpAddr::from(std::net::Ipv6Addr::from(bits));
            if !ip.is_loopback() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The first CPU's identity from /proc/cpuinfo, as the collector names it.
fn cpu_info(ctx: &DetectContext) -> Vec<KeyValue> {
    let Some(info) = ctx.read("proc/cpuinfo") else {
        return Vec::new();
    };
    let first = info.split("\n\n").next().unwrap_or("");
    let field = |name: &str| {
        first.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let mut out = Vec::new();
    for (key, name) in [
        ("host.cpu.vendor.id", "vendor_id"),
        ("host.cpu.family", "cpu family"),
        ("host.cpu.model.id", "model"),
        ("host.cpu.model.name", "model name"),
        ("host.cpu.stepping", "stepping"),
    ] {
        if let Some(v) = field(name) {
            out.push(string_kv(key, v));
        }
    }
    // "cache size : 512 KB" → bytes, an int as in the collector.
    if let Some(size) = field("cache size").and_then(|v| {
        let kb: i64 = v.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    }) {
        out.push(KeyValue {
            key: "host.cpu.cache.l2.size".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(size)),
            }),
            ..Default::default()
        });
    }
    out
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
    use crate::processor::resource_detection::resolve::FakeResolver;
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
            detect(&ctx, &sources, &FakeResolver::default())
                .map(|kvs| kvs.iter().map(as_pair).collect::<Vec<_>>())
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

    #[test]
    fn dns_falls_back_to_cname_then_reverse_lookup_and_both_are_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/hostname"), "web3\n").unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        let ctx = DetectContext::for_test(&[]).with_root(dir.path());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let mut r = FakeResolver::default();
        r.addresses.insert("web3".into(), vec![ip]);
        r.names.insert(ip, "web3.prod.example".into());
        let host = |sources: &[&str], r: &FakeResolver| {
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            detect(&ctx, &sources, r).map(|kvs| as_pair(&kvs[0]).1)
        };
        // No hosts-file entry, no CNAME: dns takes the reverse lookup.
        assert_eq!(host(&["dns"], &r).unwrap(), "web3.prod.example");
        assert_eq!(host(&["lookup"], &r).unwrap(), "web3.prod.example");
        assert!(host(&["cname"], &r).is_err());
        assert_eq!(host(&["cname", "os"], &r).unwrap(), "web3");
        // A qualified canonical name wins over the reverse lookup.
        r.canonical
            .insert("web3".into(), "web3.cname.example".into());
        assert_eq!(host(&["dns"], &r).unwrap(), "web3.cname.example");
        assert_eq!(host(&["cname"], &r).unwrap(), "web3.cname.example");
    }
}
