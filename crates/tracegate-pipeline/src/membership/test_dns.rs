//! An in-test DNS server on loopback (UDP and TCP on one port) whose
//! records a test changes while it runs: it answers `A` and `AAAA`
//! questions from a table, `NXDOMAIN` for names not in it, and can be told
//! to fail (`SERVFAIL`), to stay silent, or to truncate its UDP answers so
//! clients ask again over TCP. Records carry a TTL of an hour, so a client
//! that cached them would miss every change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Default)]
struct State {
    records: Mutex<HashMap<String, Vec<IpAddr>>>,
    fail: AtomicBool,
    silent: AtomicBool,
    truncate_udp: AtomicBool,
    tcp_questions: AtomicU64,
}

pub(crate) struct TestDns {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TestDns {
    pub(crate) async fn start() -> TestDns {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        // The same port over TCP, for truncated answers; should it be taken,
        // try again on another.
        let tcp = match TcpListener::bind(addr).await {
            Ok(tcp) => tcp,
            Err(_) => return Box::pin(TestDns::start()).await,
        };
        let state = Arc::new(State::default());
        let udp_task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                        return;
                    };
                    if let Some(reply) = state.reply(&buf[..n], true) {
                        let _ = udp.send_to(&reply, from).await;
                    }
                }
            })
        };
        let tcp_task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = tcp.accept().await else {
                        return;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let Ok(len) = conn.read_u16().await else {
                            return;
                        };
                        let mut query = vec![0u8; usize::from(len)];
                        if conn.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        state.tcp_questions.fetch_add(1, Ordering::SeqCst);
                        if let Some(reply) = state.reply(&query, false) {
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            let _ = conn.write_all(&framed).await;
                        }
                    });
                }
            })
        };
        TestDns {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// `name` (no trailing dot) now has these addresses; none removes it.
    pub(crate) fn set(&self, name: &str, addresses: &[IpAddr]) {
        let mut records = self.state.records.lock().unwrap();
        if addresses.is_empty() {
            records.remove(name);
        } else {
            records.insert(name.to_string(), addresses.to_vec());
        }
    }

    /// Answer every question with SERVFAIL.
    pub(crate) fn fail(&self, on: bool) {
        self.state.fail.store(on, Ordering::SeqCst);
    }

    /// Answer nothing at all.
    pub(crate) fn silent(&self, on: bool) {
        self.state.silent.store(on, Ordering::SeqCst);
    }

    pub(crate) fn truncate_udp(&self, on: bool) {
        self.state.truncate_udp.store(on, Ordering::SeqCst);
    }

    pub(crate) fn tcp_questions(&self) -> u64 {
        self.state.tcp_questions.load(Ordering::SeqCst)
    }

    /// The answer to `query` holding those of `addresses` that match its
    /// type.
    pub(crate) fn answer_for(query: &[u8], addresses: &[IpAddr]) -> Vec<u8> {
        let (end, qtype) = question(query).expect("a query with one question");
        response(query, end, 0, qtype, addresses, false)
    }
}

impl State {
    fn reply(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        if self.silent.load(Ordering::SeqCst) {
            return None;
        }
        let (end, qtype) = question(query)?;
        if self.fail.load(Ordering::SeqCst) {
            return Some(response(query, end, 2, qtype, &[], false));
        }
        if udp && self.truncate_udp.load(Ordering::SeqCst) {
            return Some(response(query, end, 0, qtype, &[], true));
        }
        let name = qname(query)?;
        match self.records.lock().unwrap().get(&name) {
            Some(addresses) => Some(response(query, end, 0, qtype, addresses, false)),
            None => Some(response(query, end, 3, qtype, &[], false)),
        }
    }
}

/// The end of the one question of `query` and its type.
fn question(query: &[u8]) -> Option<(usize, u16)> {
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    Some((at + 4, qtype))
}

/// The question's name, lowercase, without a trailing dot.
fn qname(query: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            return Some(labels.join(".").to_ascii_lowercase());
        }
        labels.push(String::from_utf8(query.get(at + 1..at + 1 + len)?.to_vec()).ok()?);
        at += 1 + len;
    }
}

fn response(
    query: &[u8],
    question_end: usize,
    rcode: u8,
    qtype: u16,
    addresses: &[IpAddr],
    truncated: bool,
) -> Vec<u8> {
    let records: Vec<&IpAddr> = addresses
        .iter()
        .filter(|a| match a {
            IpAddr::V4(_) => qtype == 1,
            IpAddr::V6(_) => qtype == 28,
        })
        .collect();
    let mut out = query[..question_end].to_vec();
    let flags = 0x8180u16 | if truncated { 0x0200 } else { 0 } | u16::from(rcode);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
    for address in records {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&3600u32.to_be_bytes());
        match address {
            IpAddr::V4(a) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&a.octets());
            }
        }
    }
    out
}
