use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;

use super::*;

fn node(yaml: &str) -> Node {
    let mut n = tree::parse(yaml).unwrap();
    split_keys(&mut n);
    n
}

fn merged(docs: &[&str], append: bool) -> serde_json::Value {
    let mut root = Node::new(0, Value::Map(Vec::new()));
    for d in docs {
        merge(&mut root, node(d), &mut Vec::new(), append);
    }
    root.to_json()
}

fn sources(configs: &[&str], sets: &[&str]) -> Sources {
    Sources {
        configs: configs.iter().map(|s| s.to_string()).collect(),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        feature_gates: Vec::new(),
    }
}

const PIPELINE: &str = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";

#[test]
fn uris_are_read_as_the_collector_reads_them() {
    let file = |p: &str| Ok(Location::File(p.into()));
    assert_eq!(Location::parse("config.yaml"), file("config.yaml"));
    assert_eq!(
        Location::parse("/etc/otel/c.yaml"),
        file("/etc/otel/c.yaml")
    );
    assert_eq!(Location::parse("file:/etc/c.yaml"), file("/etc/c.yaml"));
    assert_eq!(
        Location::parse("C:\\otel\\c.yaml"),
        file("C:\\otel\\c.yaml")
    );
    assert_eq!(Location::parse("env:CFG"), Ok(Location::Env("CFG".into())));
    assert_eq!(
        Location::parse("yaml:processors::batch::timeout: 2s"),
        Ok(Location::Yaml("processors::batch::timeout: 2s".into()))
    );
    assert_eq!(
        Location::parse("https://h/c.yaml"),
        Ok(Location::Http("https://h/c.yaml".into()))
    );
    let e = Location::parse("s3://bucket/c.yaml").unwrap_err();
    assert!(e.contains("unsupported scheme on URI"), "{e}");
    let e = Location::parse("./dir:x/c.yaml").unwrap_err();
    assert!(e.contains("invalid uri"), "{e}");
}

#[test]
fn set_flags_become_yaml_uris() {
    assert_eq!(
        set_to_uri("processors.batch.timeout=2s").unwrap(),
        "yaml:processors::batch::timeout: 2s"
    );
    assert_eq!(set_to_uri(" a::b = [x, y] ").unwrap(), "yaml:a::b: [x, y]");
    // Only the first `=` splits.
    assert_eq!(set_to_uri("a.b=c=d").unwrap(), "yaml:a::b: c=d");
    assert!(set_to_uri("a.b")
        .unwrap_err()
        .contains("missing equal sign"));
}

#[test]
fn feature_gates_follow_the_collector_syntax() {
    let gates = parse_gates(&["confmap.enableMergeAppendOption,-other.gate".into()]).unwrap();
    assert!(gates.merge_append);
    assert_eq!(gates.warnings.len(), 1);
    assert!(
        gates.warnings[0].contains("\"other.gate\""),
        "{:?}",
        gates.warnings
    );
    let gates = parse_gates(&[
        "+confmap.enableMergeAppendOption".into(),
        "-confmap.enableMergeAppendOption".into(),
    ])
    .unwrap();
    assert!(!gates.merge_append);
    assert!(gates.warnings.is_empty());
    let e = parse_gates(&["a,,b".into()]).unwrap_err();
    assert!(
        e.contains("empty feature gate identifier at index 1"),
        "{e}"
    );
    assert_eq!(parse_gates(&["".into()]).unwrap(), Gates::default());
}

#[test]
fn maps_merge_deeply_and_later_sources_win() {
    let got = merged(
        &[
            "a:\n  x: 1\n  y: {p: 1, q: [1, 2]}\nb: keep\nl: [1, 2, 3]\n",
            "a:\n  y: {q: [9], r: 2}\n  z: 3\nl: [4]\nc: new\n",
        ],
        false,
    );
    assert_eq!(
        got,
        serde_json::json!({
            "a": {"x": 1, "y": {"p": 1, "q": [9], "r": 2}, "z": 3},
            "b": "keep",
            "l": [4],
            "c": "new",
        })
    );
    // Null replaces, as koanf's merge does; an empty map changes nothing.
    assert_eq!(
        merged(&["a: {x: 1}\nb: {y: 2}\n", "a:\nb: {}\n"], false),
        serde_json::json!({"a": null, "b": {"y": 2}})
    );
    // A mapping over a scalar and a scalar over a mapping replace.
    assert_eq!(
        merged(&["a: 1\nb: {x: 1}\n", "a: {x: 2}\nb: 3\n"], false),
        serde_json::json!({"a": {"x": 2}, "b": 3})
    );
}

#[test]
fn merge_append_joins_only_the_component_lists() {
    let first = "service:\n  extensions: [health_check]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n";
    let second = "service:\n  extensions: [health_check, pprof]\n  pipelines:\n    traces:\n      receivers: [zipkin]\n      processors: [tail_sampling]\n      exporters: [debug, otlp]\n";
    assert_eq!(
        merged(&[first, second], true)["service"],
        serde_json::json!({
            "extensions": ["health_check", "pprof"],
            "pipelines": {"traces": {
                "receivers": ["otlp", "zipkin"],
                "processors": ["tail_sampling"],
                "exporters": ["otlp", "debug"],
            }},
        })
    );
    // Without the gate, lists are replaced.
    assert_eq!(
        merged(&[first, second], false)["service"]["pipelines"]["traces"]["receivers"],
        serde_json::json!(["zipkin"])
    );
}

#[test]
fn double_colon_keys_are_paths() {
    assert_eq!(
        node("a::b::c: 1\na:\n  d: 2\nl:\n  - x::y: 1\n").to_json(),
        serde_json::json!({"a": {"b": {"c": 1}, "d": 2}, "l": [{"x::y": 1}]})
    );
    assert_eq!(
        node("outer:\n  in::ner: v\n").to_json(),
        serde_json::json!({"outer": {"in": {"ner": "v"}}})
    );
}

fn resolve_with(s: &Sources, env: &[(&str, &str)]) -> Resolved {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    resolve(s, &|k| env.get(k).cloned())
}

#[test]
fn configs_merge_in_order_and_sets_come_last() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(&base, PIPELINE).unwrap();
    let over = dir.path().join("over.yaml");
    std::fs::write(
        &over,
        "processors:\n  batch:\n    timeout: 1s\nservice:\n  pipelines:\n    traces:\n      processors: [batch]\n",
    )
    .unwrap();
    let s = sources(
        &[
            base.to_str().unwrap(),
            &format!("file:{}", over.display()),
            "env:EXTRA",
            "yaml:processors::batch::send_batch_size: 7",
        ],
        &["processors.batch.timeout=${env:T}"],
    );
    let r = resolve_with(
        &s,
        &[
            ("EXTRA", "processors:\n  batch:\n    timeout: 5s\n"),
            ("T", "3s"),
        ],
    );
    let loaded = r.loaded.unwrap();
    // The pipeline's processors came from the second file, the batch
    // settings from the env source, the yaml URI and the --set (last).
    assert_eq!(loaded.config.service.pipelines[0].processors.len(), 1);
    let batch = loaded.config.processors.values().next().unwrap();
    let tracegate_pipeline::processor::ProcessorConfig::Batch(batch) = batch else {
        panic!("{batch:?}")
    };
    assert_eq!(batch.timeout, Duration::from_secs(3));
    assert_eq!(batch.send_batch_size, 7);
    assert!(
        r.origin.starts_with(&base.display().to_string()),
        "{}",
        r.origin
    );
    assert!(r.origin.contains("--set"), "{}", r.origin);
}

#[test]
fn lines_point_into_the_first_config_only() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(
        &base,
        format!("{PIPELINE}processors:\n  batch:\n    timeot: 1s\n"),
    )
    .unwrap();
    let e = resolve_with(&sources(&[base.to_str().unwrap()], &[]), &[])
        .loaded
        .unwrap_err();
    assert!(e.to_string().contains("(line 15)"), "{e}");
    // A key from --set has no line in the first file.
    std::fs::write(&base, PIPELINE).unwrap();
    let e = resolve_with(
        &sources(&[base.to_str().unwrap()], &["processors.batch.sendbatch=1"]),
        &[],
    )
    .loaded
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("merged with --set"), "{text}");
    assert!(text.contains("unknown field \"sendbatch\""), "{text}");
    assert!(!text.contains("(line"), "{text}");
}

#[test]
fn bad_sources_are_clear_errors() {
    let e = resolve_with(&sources(&["/nonexistent/tracegate.yaml"], &[]), &[])
        .loaded
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/tracegate.yaml"),
        "{e}"
    );
    let e = resolve_with(&sources(&["yaml:just a string"], &[]), &[])
        .loaded
        .unwrap_err();
    assert!(e.to_string().contains("not a mapping"), "{e}");
    let e = resolve_with(&sources(&["ftp://x/y"], &[]), &[])
        .loaded
        .unwrap_err();
    assert!(e.to_string().contains("unsupported scheme"), "{e}");
    let e = resolve_with(&sources(&[], &["nothing"]), &[])
        .loaded
        .unwrap_err();
    assert!(e.to_string().contains("missing equal sign"), "{e}");
    // An unset env source is an empty document, with a warning.
    let r = resolve_with(&sources(&["yaml:{}", "env:NOPE"], &[]), &[]);
    assert!(r.loaded.is_err(), "no pipeline");
}

#[test]
fn sets_alone_apply_to_the_embedded_default() {
    let r = resolve_with(&sources(&[], &["service.telemetry.logs.level=debug"]), &[]);
    let loaded = r.loaded.unwrap();
    assert_eq!(loaded.config.service.telemetry.log_level, "debug");
    assert!(
        r.origin.starts_with("embedded default config"),
        "{}",
        r.origin
    );
}

#[test]
fn file_and_yaml_references_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let with_newline = dir.path().join("token-nl");
    std::fs::write(&with_newline, "s3cr3t\n").unwrap();
    let snippet = dir.path().join("exporters.yaml");
    std::fs::write(&snippet, "debug:\n  verbosity: basic\n").unwrap();
    let yaml = format!(
        "a: ${{file:{s}}}\nb: Bearer ${{file:{s}}}\nc: ${{file:{n}}}\nd: ${{yaml:[x, y]}}\ne: ${{file:{snip}}}\n",
        s = secret.display(),
        n = with_newline.display(),
        snip = snippet.display()
    );
    let mut root = node(&yaml);
    let expansion = super::super::expand::expand_document(&mut root, &|_| None);
    assert!(expansion.errors.is_empty(), "{:?}", expansion.errors);
    let json = root.to_json();
    assert_eq!(json["a"], "s3cr3t");
    assert_eq!(json["b"], "Bearer s3cr3t");
    // The content as it is, as the collector reads it: no trimming.
    assert_eq!(json["c"], "s3cr3t\n");
    assert_eq!(json["d"], serde_json::json!(["x", "y"]));
    assert_eq!(
        json["e"],
        serde_json::json!({"debug": {"verbosity": "basic"}})
    );
    assert_eq!(expansion.warnings.len(), 1, "{:?}", expansion.warnings);
    assert_eq!(expansion.warnings[0].0.to_string(), "c");
    assert!(expansion.warnings[0].1.contains("ends with a newline"));
}

/// Serves each connection from `answers` in turn: a tiny HTTP/1.1 server
/// on an ephemeral port.
fn serve(answers: Vec<String>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let mut request = Vec::new();
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn http_sources_are_fetched() {
    let addr = serve(vec![
        "HTTP/1.1 302 Found\r\nLocation: /real.yaml\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        ok(PIPELINE),
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    ]);
    let r = resolve_with(&sources(&[&format!("http://{addr}/c.yaml")], &[]), &[]);
    let loaded = r.loaded.unwrap();
    assert_eq!(loaded.config.service.pipelines.len(), 1);
    let e = fetch(&format!("http://{addr}/gone"), HTTP_TIMEOUT).unwrap_err();
    assert!(e.contains("status code: 404"), "{e}");
}

#[test]
fn http_fetches_time_out() {
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = std::time::Instant::now();
    let e = fetch(&format!("http://{addr}/slow"), Duration::from_millis(200)).unwrap_err();
    assert!(e.contains("no answer within"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(listener);
}
