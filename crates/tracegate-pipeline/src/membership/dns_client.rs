//! A small DNS stub resolver for the `dns` resolver: the IPv4 and IPv6
//! addresses of a name, asked of the nameservers of `/etc/resolv.conf`
//! every time, with no cache, as Go's resolver (which the collector uses)
//! asks them.
//!
//! What it follows of the system's configuration, as glibc does:
//! `/etc/hosts` first; then `nameserver` (up to three, tried in turn;
//! `127.0.0.1` when none), `search`/`domain` and `options ndots: timeout:
//! attempts:` of `/etc/resolv.conf`. A name with a trailing dot is asked
//! as it is; one with at least `ndots` dots is asked as it is first, then
//! with each search domain; a shorter one with the search domains first.
//! `A` and `AAAA` are asked together over UDP; an answer marked truncated
//! is asked again over TCP.
//!
//! Why not the C library's `getaddrinfo`: the resolver's tests run an
//! in-test DNS server whose answers change, and point this client at it
//! ([`StubResolver::with_nameservers`]); `getaddrinfo` cannot be pointed
//! anywhere but the system's configuration.
//!
//! Answers are untrusted input: every read is bounds-checked, and a
//! malformed answer is an error, never a panic.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    /// Every nameserver that answered said the name (with each search
    /// domain) does not exist or has no addresses.
    #[error("{0}: no such host")]
    NotFound(String),
    #[error("{name:?} is not a valid hostname: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// No usable answer: timeouts, server failures, malformed answers.
    #[error("{name}: {reason}")]
    Failed { name: String, reason: String },
}

/// Where and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StubResolver {
    nameservers: Vec<SocketAddr>,
    search: Vec<String>,
    ndots: usize,
    /// Time limit of one question to one nameserver.
    per_try: Duration,
    /// Rounds over the nameservers.
    attempts: usize,
    /// Read `/etc/hosts` first.
    hosts_file: bool,
}

impl StubResolver {
    /// The system's configuration, read now from `/etc/resolv.conf` (glibc's
    /// defaults when it cannot be read).
    pub(crate) fn system() -> StubResolver {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        StubResolver {
            hosts_file: true,
            ..parse_resolv_conf(&text)
        }
    }

    /// Asks only `nameservers`, with no search domains and no hosts file:
    /// for tests, which run their own DNS server.
    pub(crate) fn with_nameservers(nameservers: Vec<SocketAddr>) -> StubResolver {
        StubResolver {
            nameservers,
            search: Vec::new(),
            ndots: 1,
            per_try: Duration::from_secs(5),
            attempts: 2,
            hosts_file: false,
        }
    }

    /// The addresses of `name`, IPv4 and IPv6, in the order the answers
    /// gave them. The caller bounds the time taken.
    pub(crate) async fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if self.hosts_file {
            let hosts = tokio::fs::read_to_string("/etc/hosts")
                .await
                .unwrap_or_default();
            let found = hosts_lookup(&hosts, name);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        for candidate in self.candidates(name)? {
            let (v4, v6) = tokio::join!(
                self.ask(&candidate, TYPE_A),
                self.ask(&candidate, TYPE_AAAA)
            );
            // Half an answer is a failure: a member list without the
            // addresses of one family would move their traces elsewhere.
            // And a name later in the search order is no answer for one
            // that could not be asked.
            let (mut v4, v6) = match (v4, v6) {
                (Ok(v4), Ok(v6)) => (v4, v6),
                (Err(reason), _) | (_, Err(reason)) => {
                    return Err(LookupError::Failed {
                        name: candidate,
                        reason,
                    })
                }
            };
            if !v4.is_empty() || !v6.is_empty() {
                v4.extend(v6);
                return Ok(v4);
            }
        }
        Err(LookupError::NotFound(name.to_string()))
    }

    /// The names to ask, in order (see the module docs).
    fn candidates(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let invalid = |reason| LookupError::InvalidName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() || name == "." {
            return Err(invalid("empty"));
        }
        if let Some(absolute) = name.strip_suffix('.') {
            encode_name(absolute).map_err(invalid)?;
            return Ok(vec![absolute.to_string()]);
        }
        encode_name(name).map_err(invalid)?;
        let searched = self
            .search
            .iter()
            .map(|domain| format!("{name}.{}", domain.trim_end_matches('.')))
            .filter(|n| encode_name(n).is_ok());
        let dots = name.matches('.').count();
        Ok(if dots >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        })
    }

    /// One question: `Ok` with the addresses (empty when the name does not
    /// exist or has none of this type), `Err` when no nameserver answered
    /// usefully.
    async fn ask(&self, name: &str, qtype: u16) -> Result<Vec<IpAddr>, String> {
        let id = random_id();
        let query = encode_query(id, name, qtype).map_err(str::to_string)?;
        let mut last = format!("no nameserver to ask for {name}");
        for _ in 0..self.attempts.max(1) {
            for &server in &self.nameservers {
                match tokio::time::timeout(self.per_try, exchange(server, &query, id, qtype)).await
                {
                    Ok(Ok(Answer::Found(addresses))) => return Ok(addresses),
                    Ok(Ok(Answer::NoSuchName)) => return Ok(Vec::new()),
                    Ok(Ok(Answer::ServerError(rcode))) => {
                        last = format!("nameserver {server} answered {}", rcode_name(rcode));
                    }
                    Ok(Ok(Answer::Truncated)) => {
                        last = format!("nameserver {server}: truncated answer over TCP");
                    }
                    Ok(Err(e)) => last = format!("nameserver {server}: {e}"),
                    Err(_) => {
                        last = format!(
                            "nameserver {server}: no answer within {}",
                            crate::duration::format(self.per_try)
                        )
                    }
                }
            }
        }
        Err(last)
    }
}

/// A question's outcome as one nameserver gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// NOERROR, with the addresses of the asked type (possibly none).
    Found(Vec<IpAddr>),
    NoSuchName,
    Truncated,
    /// Any other response code: SERVFAIL, REFUSED...
    ServerError(u8),
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("rcode {other}"),
    }
}

/// Asks `server` over UDP, and over TCP when the answer is truncated.
async fn exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    qtype: u16,
) -> std::io::Result<Answer> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let answer = loop {
        let n = socket.recv(&mut buf).await?;
        // Datagrams that are not the answer to this question (late answers
        // to an earlier one, noise) are ignored; the caller's time limit
        // ends the wait.
        if let Ok(answer) = parse_response(&buf[..n], id, qtype) {
            break answer;
        }
    };
    if answer != Answer::Truncated {
        return Ok(answer);
    }
    let mut tcp = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    tcp.write_all(&framed).await?;
    let len = tcp.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    tcp.read_exact(&mut message).await?;
    parse_response(&message, id, qtype)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn random_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState's keys are random per process; hashing a counter with
    // them gives ids an off-path attacker cannot predict.
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed)) as u16
}

/// The wire form of `name` (no trailing dot): length-prefixed labels.
fn encode_name(name: &str) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' may be used");
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 255 {
        return Err("longer than 255 bytes");
    }
    Ok(out)
}

/// A standard query with recursion desired.
pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, &'static str> {
    let qname = encode_name(name)?;
    let mut out = Vec::with_capacity(12 + qname.len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0; 6]); // AN, NS, AR
    out.extend_from_slice(&qname);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// Reads a response to question `id`: its code and the addresses of type
/// `qtype` in its answer section (whatever their owner name: a resolver
/// answers a CNAME chain with the chain and the final addresses).
fn parse_response(msg: &[u8], id: u16, qtype: u16) -> Result<Answer, &'static str> {
    let u16_at = |at: usize| -> Result<u16, &'static str> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or("truncated message")
    };
    if u16_at(0)? != id {
        return Err("not the answer to this question");
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response");
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match (flags & 0x000f) as u8 {
        0 => {}
        3 => return Ok(Answer::NoSuchName),
        rcode => return Ok(Answer::ServerError(rcode)),
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let class = u16_at(at + 2)?;
        let rdlen = usize::from(u16_at(at + 8)?);
        let rdata = msg
            .get(at + 10..at + 10 + rdlen)
            .ok_or("truncated record")?;
        at += 10 + rdlen;
        if class != CLASS_IN || rtype != qtype {
            continue;
        }
        match (rtype, rdata.len()) {
            (TYPE_A, 4) => found.push(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]])),
            (TYPE_AAAA, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(rdata);
                found.push(IpAddr::from(octets));
            }
            _ => return Err("an address record of the wrong length"),
        }
    }
    Ok(Answer::Found(found))
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, &'static str> {
    loop {
        let len = *msg.get(at).ok_or("truncated name")?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(at + 1),
            0x00 => at += 1 + usize::from(len),
            // A pointer ends the name here, wherever it points.
            0xc0 => {
                msg.get(at + 1).ok_or("truncated name")?;
                return Ok(at + 2);
            }
            _ => return Err("unknown label type"),
        }
    }
}

/// `nameserver`, `search`/`domain` and `options` of a resolv.conf, with
/// glibc's defaults and limits.
fn parse_resolv_conf(text: &str) -> StubResolver {
    let mut nameservers = Vec::new();
    let mut search = Vec::new();
    let mut ndots = 1;
    let mut timeout = 5;
    let mut attempts = 2;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // A link-local address's zone (`fe80::1%eth0`) is dropped.
                let address = words.next().and_then(|a| a.split('%').next());
                if let Some(ip) = address.and_then(|a| a.parse::<IpAddr>().ok()) {
                    if nameservers.len() < 3 {
                        nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
            }
            Some("search") => search = words.map(str::to_string).collect(),
            Some("domain") => search = words.next().map(str::to_string).into_iter().collect(),
            Some("options") => {
                for option in words {
                    let (key, value) = option.split_once(':').unwrap_or((option, ""));
                    let value = value.parse::<usize>().ok();
                    match (key, value) {
                        ("ndots", Some(n)) => ndots = n.min(15),
                        ("timeout", Some(n)) => timeout = n.clamp(1, 30),
                        ("attempts", Some(n)) => attempts = n.clamp(1, 5),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if nameservers.is_empty() {
        nameservers.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53));
    }
    StubResolver {
        nameservers,
        search,
        ndots,
        per_try: Duration::from_secs(timeout as u64),
        attempts,
        hosts_file: false,
    }
}

/// The addresses `/etc/hosts` (its text) gives `name`, in file order.
fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('#').next()?.split_whitespace();
            let ip = fields.next()?.split('%').next()?.parse::<IpAddr>().ok()?;
            fields
                .any(|alias| alias.trim_end_matches('.').eq_ignore_ascii_case(name))
                .then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::test_dns::TestDns;

    #[test]
    fn resolv_conf_as_glibc_reads_it() {
        let r = parse_resolv_conf(
            "# kubelet\nnameserver 10.96.0.10\nnameserver fe80::1%eth0 ; zone\n\
             search observability.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:2 attempts:9 rotate\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
        );
        assert_eq!(
            r.nameservers,
            vec![
                "10.96.0.10:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "10.0.0.3:53".parse().unwrap(),
            ],
            "at most three"
        );
        assert_eq!(r.search.len(), 3);
        assert_eq!(r.ndots, 5);
        assert_eq!(r.per_try, Duration::from_secs(2));
        assert_eq!(r.attempts, 5, "capped");
        let empty = parse_resolv_conf("");
        assert_eq!(empty.nameservers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!((empty.ndots, empty.attempts), (1, 2));
        assert_eq!(
            parse_resolv_conf("domain corp\nsearch a b\n").search,
            ["a", "b"]
        );
        assert_eq!(
            parse_resolv_conf("search a b\ndomain corp\n").search,
            ["corp"]
        );
    }

    #[test]
    fn search_order_follows_ndots() {
        let mut r = parse_resolv_conf("search ns.svc.cluster.local cluster.local\noptions ndots:2");
        r.hosts_file = false;
        assert_eq!(
            r.candidates("gateway").unwrap(),
            [
                "gateway.ns.svc.cluster.local",
                "gateway.cluster.local",
                "gateway"
            ]
        );
        assert_eq!(
            r.candidates("gateway.ns.svc").unwrap(),
            [
                "gateway.ns.svc",
                "gateway.ns.svc.ns.svc.cluster.local",
                "gateway.ns.svc.cluster.local"
            ]
        );
        assert_eq!(r.candidates("gateway.test.").unwrap(), ["gateway.test"]);
        for bad in ["", ".", "a..b", "white space", &"x".repeat(64), "über"] {
            assert!(
                matches!(r.candidates(bad), Err(LookupError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hosts_file_lines() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 gateway\n10.0.0.1 gateway gw # first\n\
                     fd00::1 Gateway.\n10.0.0.2\tother gateway\n";
        assert_eq!(
            hosts_lookup(hosts, "gateway"),
            ["10.0.0.1", "fd00::1", "10.0.0.2"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert!(hosts_lookup(hosts, "nothing").is_empty());
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let query = encode_query(7, "gw.test", TYPE_A).unwrap();
        let mut answer = query.clone();
        answer[2] |= 0x80; // a response
        answer[7] = 1; // one answer...
        assert!(
            parse_response(&answer, 7, TYPE_A).is_err(),
            "...that is missing"
        );
        assert!(parse_response(&answer, 8, TYPE_A).is_err(), "another id");
        assert!(
            parse_response(&query, 7, TYPE_A).is_err(),
            "a query, not a response"
        );
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 3, 10, 0, 0]);
        assert!(
            parse_response(&answer, 7, TYPE_A).is_err(),
            "an A record of 3 bytes"
        );
        // Every prefix of a valid answer and every byte flipped: no panic.
        let good = TestDns::answer_for(&query, &["10.0.0.1".parse().unwrap()]);
        assert_eq!(
            parse_response(&good, 7, TYPE_A),
            Ok(Answer::Found(vec!["10.0.0.1".parse().unwrap()]))
        );
        for n in 0..good.len() {
            let _ = parse_response(&good[..n], 7, TYPE_A);
            let mut flipped = good.clone();
            flipped[n] ^= 0xff;
            let _ = parse_response(&flipped, 7, TYPE_A);
        }
        assert_eq!(skip_name(&[0x40, 0], 0), Err("unknown label type"));
    }

    #[tokio::test]
    async fn asks_a_and_aaaa_and_falls_back_to_tcp() {
        let dns = TestDns::start().await;
        dns.set(
            "gw.test",
            &["10.0.0.1", "fd00::1", "10.0.0.2"].map(|a| a.parse().unwrap()),
        );
        let r = StubResolver::with_nameservers(vec![dns.addr]);
        let mut got = r.lookup_ip("gw.test").await.unwrap();
        got.sort();
        assert_eq!(
            got,
            ["10.0.0.1", "10.0.0.2", "fd00::1"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        dns.truncate_udp(true);
        let mut got = r.lookup_ip("gw.test.").await.unwrap();
        got.sort();
        assert_eq!(got.len(), 3, "asked again over TCP");
        assert!(dns.tcp_questions() >= 2);
        assert_eq!(
            r.lookup_ip("nothing.test").await,
            Err(LookupError::NotFound("nothing.test".into()))
        );
        assert_eq!(
            r.lookup_ip("10.1.2.3").await.unwrap(),
            ["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        dns.fail(true);
        let err = r.lookup_ip("gw.test").await.unwrap_err();
        assert!(err.to_string().contains("SERVFAIL"), "{err}");
    }
}
