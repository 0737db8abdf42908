//! The checker: joins the sender's manifest (every trace sent: id, class,
//! span count) with the sink's record (every span received: trace id, span
//! id) and says, per class, what share of traces was kept, whether that
//! agrees with the expected share, and how whole the kept traces are.
//!
//! A trace with every span received is *complete*; with none, *dropped*;
//! with some: *incomplete* when at least half arrived (kept, but spans went
//! missing), otherwise its spans are *leaked* spans of a dropped trace.
//! Kept = complete + incomplete. A span received twice is a duplicate;
//! a span of a trace not in the manifest is unknown.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::template::Class;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The sender's manifest (`send --manifest`).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The sink's record (`sink --record`).
    #[arg(long)]
    pub record: PathBuf,
    /// Expected kept share of a class, e.g. `error=1 slow=0.25 normal=0.05`.
    #[arg(long = "expect", value_parser = parse_expectation)]
    pub expect: Vec<(Class, f64)>,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.99)]
    pub confidence: f64,
}

pub fn parse_expectation(s: &str) -> Result<(Class, f64), String> {
    let (class, share) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write class=share"))?;
    let class = Class::parse(class.trim())
        .ok_or_else(|| format!("{class:?}: classes are normal, error, slow"))?;
    let share: f64 = share
        .trim()
        .parse()
        .map_err(|_| format!("{share:?}: not a number"))?;
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("{share}: a share is between 0 and 1"));
    }
    Ok((class, share))
}

#[derive(Debug, Clone, Copy)]
pub struct SentTrace {
    pub id: u128,
    pub class: Class,
    pub spans: u32,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct ClassResult {
    pub traces: u64,
    pub kept: u64,
    pub complete: u64,
    pub incomplete: u64,
    pub dropped: u64,
    pub leaked_spans: u64,
    pub kept_share: f64,
    pub interval: (f64, f64),
    pub expected: Option<f64>,
    /// The expected share lies inside the interval.
    pub agrees: Option<bool>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub confidence: f64,
    pub classes: BTreeMap<&'static str, ClassResult>,
    pub spans_received: u64,
    pub duplicate_spans: u64,
    pub unknown_spans: u64,
    pub ok: bool,
}

/// The two-sided standard normal quantile for `confidence` (e.g. 0.99 →
/// 2.576), by bisection on the error function's complement.
pub fn z_for(confidence: f64) -> f64 {
    let tail = (1.0 - confidence) / 2.0;
    let (mut lo, mut hi) = (0.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if upper_tail(mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// P(Z > z) for a standard normal Z (Abramowitz–Stegun 7.1.26 erfc, error
/// below 1.5e-7: plenty for an interval's width).
fn upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-x * x).exp()
}

/// Wilson score interval for `k` successes in `n` trials: unlike the normal
/// approximation it stays inside [0, 1] and is sound for shares near 0 or 1
/// (5 % baselines, 100 % errors).
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At k = 0 or k = n the bound is exactly 0 or 1; rounding must not
    // move it inside and exclude an expected share of 0 or 1.
    let lo = if k == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if k as f64 == n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    (lo, hi)
}

/// Joins what was sent with what was received (trace id, span id).
pub fn join(
    sent: &[SentTrace],
    mut received: Vec<(u128, u64)>,
    expect: &[(Class, f64)],
    confidence: f64,
) -> Summary {
    let spans_received = received.len() as u64;
    received.sort_unstable();
    let before = received.len();
    received.dedup();
    let duplicate_spans = (before - received.len()) as u64;
    let mut per_trace: HashMap<u128, u32> = HashMap::with_capacity(sent.len());
    for (trace, _) in &received {
        *per_trace.entry(*trace).or_default() += 1;
    }
    let z = z_for(confidence);
    let mut classes: BTreeMap<&'static str, ClassResult> = BTreeMap::new();
    let mut known = 0u64;
    for t in sent {
        let got = per_trace.get(&t.id).copied().unwrap_or(0);
        known += got as u64;
        let c = classes.entry(t.class.name()).or_default();
        c.traces += 1;
        if got >= t.spans {
            c.complete += 1;
        } else if got == 0 {
            c.dropped += 1;
        } else if 2 * got >= t.spans {
            c.incomplete += 1;
        } else {
            c.dropped += 1;
            c.leaked_spans += got as u64;
        }
    }
    let mut ok = duplicate_spans == 0;
    for (class, share) in expect {
        classes.entry(class.name()).or_default().expected = Some(*share);
    }
    for c in classes.values_mut() {
        c.kept = c.complete + c.incomplete;
        c.kept_share = if c.traces == 0 {
            0.0
        } else {
            c.kept as f64 / c.traces as f64
        };
        c.interval = wilson(c.kept, c.traces, z);
        if let Some(e) = c.expected {
            let agrees = c.traces > 0 && c.interval.0 <= e && e <= c.interval.1;
            c.agrees = Some(agrees);
            ok &= agrees;
        }
    }
    Summary {
        confidence,
        classes,
        spans_received,
        duplicate_spans,
        unknown_spans: received.len() as u64 - known,
        ok,
    }
}

pub fn read_manifest(path: &std::path::Path) -> anyhow::Result<Vec<SentTrace>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let mut fields = line.split_whitespace();
        let (Some(id), Some(class), Some(spans)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!(
                "{}:{}: expected `trace-id class spans`",
                path.display(),
                n + 1
            );
        };
        out.push(SentTrace {
            id: u128::from_str_radix(id, 16)
                .with_context(|| format!("{}:{}: trace id", path.display(), n + 1))?,
            class: Class::parse(class)
                .with_context(|| format!("{}:{}: class {class:?}", path.display(), n + 1))?,
            spans: spans.parse()?,
        });
    }
    Ok(out)
}

pub fn read_record(path: &std::path::Path) -> anyhow::Result<Vec<(u128, u64)>> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("open {}", path.display()))?
        .read_to_end(&mut raw)?;
    if raw.len() % 24 != 0 {
        bail!(
            "{}: not a sink record (length not a multiple of 24)",
            path.display()
        );
    }
    Ok(raw
        .chunks_exact(24)
        .map(|c| {
            (
                u128::from_be_bytes(c[..16].try_into().expect("16 bytes")),
                u64::from_be_bytes(c[16..].try_into().expect("8 bytes")),
            )
        })
        .collect())
}

pub fn check(args: &Args) -> anyhow::Result<Summary> {
    let sent = read_manifest(&args.manifest)?;
    let received = read_record(&args.record)?;
    Ok(join(&sent, received, &args.expect, args.confidence))
}

/// Human-readable lines for a summary.
pub fn describe(s: &Summary) -> String {
    let mut out = format!(
        "{:<7} {:>9} {:>9} {:>8} {:>22} {:>9} {:>9} {:>10} {:>7} {:>7}\n",
        "class",
        "traces",
        "kept",
        "share",
        "interval",
        "expected",
        "complete",
        "incomplete",
        "leaked",
        "verdict"
    );
    for (name, c) in &s.classes {
        out += &format!(
            "{:<7} {:>9} {:>9} {:>8.4} {:>22} {:>9} {:>9} {:>10} {:>7} {:>7}\n",
            name,
            c.traces,
            c.kept,
            c.kept_share,
            format!("[{:.4}, {:.4}]", c.interval.0, c.interval.1),
            c.expected.map_or("-".into(), |e| format!("{e}")),
            c.complete,
            c.incomplete,
            c.leaked_spans,
            match c.agrees {
                Some(true) => "ok",
                Some(false) => "OFF",
                None => "-",
            }
        );
    }
    out += &format!(
        "spans received {}, duplicates {}, unknown {}; {}% intervals (Wilson)\n",
        s.spans_received,
        s.duplicate_spans,
        s.unknown_spans,
        s.confidence * 100.0
    );
    out
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let summary = check(&args)?;
    eprint!("{}", describe(&summary));
    println!("{}", serde_json::to_string(&summary)?);
    if !summary.ok {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_quantiles() {
        assert!((z_for(0.95) - 1.95996).abs() < 1e-3);
        assert!((z_for(0.99) - 2.57583).abs() < 1e-3);
    }

    #[test]
    fn wilson_matches_published_values() {
        // 10 of 100 at 95 %: Wilson gives [0.0552, 0.1744].
        let (lo, hi) = wilson(10, 100, z_for(0.95));
        assert!((lo - 0.0552).abs() < 5e-4, "{lo}");
        assert!((hi - 0.1744).abs() < 5e-4, "{hi}");
        // All of 50 kept: the interval reaches 1 and excludes 0.9.
        let (lo, hi) = wilson(50, 50, z_for(0.95));
        assert_eq!(hi, 1.0);
        assert!((lo - 0.9287).abs() < 5e-4, "{lo}");
        // None kept: starts at 0.
        assert_eq!(wilson(0, 50, 1.96).0, 0.0);
    }

    fn trace(id: u128, class: Class, spans: u32) -> SentTrace {
        SentTrace { id, class, spans }
    }

    #[test]
    fn join_classifies_traces_and_spans() {
        let sent = vec![
            trace(1, Class::Error, 4),  // complete
            trace(2, Class::Error, 4),  // 2 of 4: incomplete, kept
            trace(3, Class::Normal, 4), // 1 of 4: dropped, 1 leaked span
            trace(4, Class::Normal, 4), // nothing: dropped
            trace(5, Class::Slow, 2),   // complete, one span twice
        ];
        let received = vec![
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2),
            (3, 9),
            (5, 1),
            (5, 2),
            (5, 2),
            (99, 1), // unknown trace
        ];
        let s = join(&sent, received, &[(Class::Error, 1.0)], 0.95);
        let e = &s.classes["error"];
        assert_eq!((e.traces, e.kept, e.complete, e.incomplete), (2, 2, 1, 1));
        assert_eq!(e.agrees, Some(true));
        let n = &s.classes["normal"];
        assert_eq!((n.kept, n.dropped, n.leaked_spans), (0, 2, 1));
        assert_eq!(s.classes["slow"].complete, 1);
        assert_eq!(s.spans_received, 11);
        assert_eq!(s.duplicate_spans, 1);
        assert_eq!(s.unknown_spans, 1);
        assert!(!s.ok, "a duplicate fails the check");
    }

    #[test]
    fn expected_share_is_judged_by_its_interval() {
        // 1000 normal traces, every 20th kept: 5 %.
        let sent: Vec<_> = (0..1000).map(|i| trace(i, Class::Normal, 1)).collect();
        let received: Vec<_> = (0..1000u128)
            .filter(|i| i % 20 == 0)
            .map(|i| (i, 1))
            .collect();
        let s = join(&sent, received.clone(), &[(Class::Normal, 0.05)], 0.99);
        assert!(s.ok);
        assert_eq!(s.classes["normal"].kept_share, 0.05);
        // 10 % is far outside a 5 % result's interval at n = 1000.
        let s = join(&sent, received.clone(), &[(Class::Normal, 0.10)], 0.99);
        assert!(!s.ok);
        assert_eq!(s.classes["normal"].agrees, Some(false));
        // A class expected but never sent cannot agree.
        let s = join(&sent, received, &[(Class::Error, 1.0)], 0.99);
        assert_eq!(s.classes["error"].agrees, Some(false));
    }
}
