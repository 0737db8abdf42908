//! Host name lookups for the `system` detector's `dns`, `cname` and
//! `lookup` sources, through the C library's resolver (`getaddrinfo`,
//! `getnameinfo`, by way of the `dns-lookup` crate): the hosts file and DNS, as the machine is configured —
//! what the collector's Go resolver consults too. Blocking: call them off
//! the async threads.

#[cfg(test)]
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Name lookups; tests put a fake in their place.
pub(crate) trait Resolver: Send + Sync + std::fmt::Debug {
    /// The canonical name of `host`, CNAMEs followed.
    fn canonical_name(&self, host: &str) -> Result<String, String>;
    /// The addresses `host` resolves to.
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String>;
    /// The name `ip` resolves back to (a PTR record or the hosts file).
    fn name_of(&self, ip: IpAddr) -> Result<String, String>;
}

/// The C library's resolver.
#[derive(Debug, Default)]
pub(crate) struct SystemResolver;

impl Resolver for SystemResolver {
    fn canonical_name(&self, host: &str) -> Result<String, String> {
        let hints = dns_lookup::AddrInfoHints {
            flags: libc::AI_CANONNAME,
            socktype: libc::SOCK_STREAM,
            ..Default::default()
        };
        let mut answers = dns_lookup::getaddrinfo(Some(host), None, Some(hints))
            .map_err(|e| format!("{host}: {}", std::io::Error::from(e)))?;
        answers
            .next()
            .and_then(|first| first.ok())
            .and_then(|first| first.canonname)
            .map(|c| c.trim_end_matches('.').to_string())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("{host}: no canonical name"))
    }

    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let mut out: Vec<IpAddr> = Vec::new();
        for address in (host, 0)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
        {
            if !out.contains(&address.ip()) {
                out.push(address.ip());
            }
        }
        Ok(out)
    }

    fn name_of(&self, ip: IpAddr) -> Result<String, String> {
        let (name, _) = dns_lookup::getnameinfo(&SocketAddr::new(ip, 0), libc::NI_NAMEREQD)
            .map_err(|e| format!("{ip}: {}", std::io::Error::from(e)))?;
        let name = name.trim_end_matches('.').to_string();
        if name.is_empty() {
            return Err(format!("{ip}: no name"));
        }
        Ok(name)
    }
}

/// A resolver answering from tables, for tests.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct FakeResolver {
    pub canonical: HashMap<String, String>,
    pub addresses: HashMap<String, Vec<IpAddr>>,
    pub names: HashMap<IpAddr, String>,
}

#[cfg(test)]
impl Resolver for FakeResolver {
    fn canonical_name(&self, host: &str) -> Result<String, String> {
        self.canonical
            .get(host)
            .cloned()
            .ok_or_else(|| format!("{host}: no such host"))
    }
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        self.addresses
            .get(host)
            .cloned()
            .ok_or_else(|| format!("{host}: no such host"))
    }
    fn name_of(&self, ip: IpAddr) -> Result<String, String> {
        self.names
            .get(&ip)
            .cloned()
            .ok_or_else(|| format!("{ip}: no name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real resolver on names every machine has: localhost resolves to
    /// a loopback address, and 127.0.0.1 back to a name.
    #[test]
    fn the_system_resolver_answers_for_localhost() {
        let r = SystemResolver;
        let addresses = r.addresses("localhost").unwrap();
        assert!(addresses.iter().all(|a| a.is_loopback()), "{addresses:?}");
        assert!(!r.canonical_name("localhost").unwrap().is_empty());
        assert!(!r.name_of(IpAddr::from([127, 0, 0, 1])).unwrap().is_empty());
        assert!(r.canonical_name("no-such-host.invalid").is_err());
    }
}
