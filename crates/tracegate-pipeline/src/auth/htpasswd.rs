//! htpasswd content, with the hash formats the collector's `basicauth`
//! accepts (its go-htpasswd parsers): bcrypt (`$2a$`, `$2b$`, `$2x$`,
//! `$2y$`), Apache MD5 (`$apr1$`), `{SHA}`, `{SSHA}`, and anything else
//! as a plain-text password (also matched with a `{PLAIN}` prefix, as
//! nginx writes them). Other crypt(3) formats (`$1$`, `$5$`, `$6$`,
//! `$argon2id$`, ...) are refused with an error instead of being taken
//! for plain text.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// One user's stored password.
#[derive(Debug)]
enum Hash {
    /// Checked on the blocking pool (see [`Htpasswd::matches`]).
    Bcrypt(String),
    Apr1 {
        salt: String,
        hash: String,
    },
    Sha([u8; 20]),
    Ssha {
        hash: [u8; 20],
        salt: Vec<u8>,
    },
    Plain(String),
}

/// Parsed htpasswd content: users and their password hashes, and the
/// bcrypt checks that succeeded (a client sends the same credentials with
/// every request; without this each would cost a bcrypt computation,
/// tens of milliseconds at the usual costs).
#[derive(Debug)]
pub(crate) struct Htpasswd {
    users: HashMap<String, Hash>,
    /// User → SHA-256 of the password last verified by bcrypt.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl Htpasswd {
    /// Reads `user:hash` lines; a later line for the same user wins, as
    /// in the collector (where `inline` comes after `file`). Blank lines
    /// are skipped. `Err` names the line (never its hash).
    pub fn parse(text: &str, source: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{source}, line {}", number + 1);
            let (user, encoded) = line
                .split_once(':')
                .ok_or_else(|| format!("{}: malformed line, no colon", at()))?;
            let hash = parse_hash(encoded).map_err(|e| format!("{} (user {user:?}): {e}", at()))?;
            users.insert(user.to_string(), hash);
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `password` is `user`'s. A bcrypt hash is checked on the
    /// blocking pool, so that a slow hash never holds up other requests.
    pub async fn matches(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        match hash {
            Hash::Bcrypt(hash) => {
                let digest = sha256(password);
                let known = self
                    .verified
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(user)
                    .copied();
                if known.is_some_and(|d| bool::from(d.ct_eq(&digest))) {
                    return true;
                }
                let (hash, password) = (hash.clone(), password.to_string());
                let ok = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                if ok {
                    self.verified
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(user.to_string(), digest);
                }
                ok
            }
            Hash::Apr1 { salt, hash } => {
                bool::from(apr1(password, salt).as_bytes().ct_eq(hash.as_bytes()))
            }
            Hash::Sha(hash) => bool::from(sha1(&[password.as_bytes()]).ct_eq(hash)),
            Hash::Ssha { hash, salt } => bool::from(sha1(&[password.as_bytes(), salt]).ct_eq(hash)),
            Hash::Plain(plain) => {
                let prefixed = format!("{{PLAIN}}{password}");
                bool::from(
                    password.as_bytes().ct_eq(plain.as_bytes())
                        | prefixed.as_bytes().ct_eq(plain.as_bytes()),
                )
            }
        }
    }
}

fn parse_hash(encoded: &str) -> Result<Hash, String> {
    if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| encoded.starts_with(p))
    {
        encoded
            .parse::<bcrypt::HashParts>()
            .map_err(|e| format!("malformed bcrypt hash: {e}"))?;
        return Ok(Hash::Bcrypt(encoded.to_string()));
    }
    if let Some(rest) = encoded.strip_prefix("$apr1$") {
        let (salt, hash) = rest
            .split_once('$')
            .ok_or("malformed $apr1$ (Apache MD5) hash")?;
        return Ok(Hash::Apr1 {
            salt: salt.to_string(),
            hash: hash.to_string(),
        });
    }
    if let Some(b64) = encoded.strip_prefix("{SHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("malformed {{SHA}} hash: {e}"))?;
        let hash: [u8; 20] = bytes
            .try_into()
            .map_err(|_| "malformed {SHA} hash: wrong length")?;
        return Ok(Hash::Sha(hash));
    }
    if let Some(b64) = encoded.strip_prefix("{SSHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("malformed {{SSHA}} hash: {e}"))?;
        if bytes.len() < 20 {
            return Err("malformed {SSHA} hash: too short".into());
        }
        let (hash, salt) = bytes.split_at(20);
        return Ok(Hash::Ssha {
            hash: hash.try_into().unwrap_or([0; 20]),
            salt: salt.to_vec(),
        });
    }
    if let Some(scheme) = crypt_scheme(encoded) {
        return Err(format!(
            "the ${scheme}$ hash format is not supported; use bcrypt (htpasswd -B), \
             $apr1$, {{SHA}} or {{SSHA}}"
        ));
    }
    Ok(Hash::Plain(encoded.to_string()))
}

/// The scheme id of a crypt(3)-style hash (`$6$...` → `6`).
fn crypt_scheme(encoded: &str) -> Option<&str> {
    let rest = encoded.strip_prefix('$')?;
    let (scheme, after) = rest.split_once('$')?;
    let plausible = !scheme.is_empty()
        && scheme.len() <= 16
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !after.is_empty();
    plausible.then_some(scheme)
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn sha256(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    out
}

/// Apache's MD5-crypt (`$apr1$`): the hash part for `password` and `salt`.
fn apr1(password: &str, salt: &str) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let pw = password.as_bytes();
    let salt = salt.as_bytes();
    let alternate = Md5::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = pw.len();
    while left > 0 {
        let take = left.min(16);
        ctx.update(&alternate[..take]);
        left -= take;
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(pw);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(pw);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(pw);
        }
        digest = ctx.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |a: u8, b: u8, c: u8, chars: usize| {
        let mut v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        for _ in 0..chars {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let d = digest;
    put(d[0], d[6], d[12], 4);
    put(d[1], d[7], d[13], 4);
    put(d[2], d[8], d[14], 4);
    put(d[3], d[9], d[15], 4);
    put(d[4], d[10], d[5], 4);
    put(0, 0, d[11], 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published hashes of known passwords (Apache's htpasswd, OpenLDAP's
    /// slappasswd, bcrypt's reference), and one made here.
    #[tokio::test]
    async fn every_accepted_format_matches_its_password_only() {
        let bcrypt_here = bcrypt::hash("hunter2", 4).unwrap();
        let text = format!(
            "apr:$apr1$gxNb79DX$6wi9QaGNM5TA0kBKiC4710\n\
             sha:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
             ssha:{{SSHA}}/lLSOXpMWipWr3ifiighLCpqBiFoMzBM\n\
             \n\
             by:$2y$05$bWBMg3oUStnhfy5rFvoyreviPySU6hvEmBub5wIlM/D.c5FeYJQ6O\n\
             bb:{bcrypt_here}\n\
             plain:opensesame\n\
             nginx:{{PLAIN}}opensesame\n"
        );
        let h = Htpasswd::parse(&text, "inline").unwrap();
        for (user, right) in [
            ("apr", "mickey5"),
            ("sha", "password"),
            ("ssha", "password"),
            ("by", "bar"),
            ("bb", "hunter2"),
            ("plain", "opensesame"),
            ("nginx", "opensesame"),
        ] {
            assert!(h.matches(user, right).await, "{user}");
            assert!(!h.matches(user, "wrong").await, "{user}");
            // Twice: the second bcrypt check is the remembered one.
            assert!(h.matches(user, right).await, "{user}");
            assert!(!h.matches(user, &format!("{right}x")).await, "{user}");
        }
        assert!(!h.matches("nobody", "").await);
    }

    #[test]
    fn unsupported_and_malformed_lines_are_errors_naming_the_line() {
        for (line, says) in [
            ("u:$6$salt$abcdef", "the $6$ hash format is not supported"),
            ("u:$5$rounds=5000$salt$abc", "the $5$ hash format"),
            ("u:$1$salt$abc", "the $1$ hash format"),
            ("u:$argon2id$v=19$m=65536$x", "the $argon2id$ hash format"),
            ("u:$2y$0", "malformed bcrypt hash"),
            ("u:{SHA}short", "malformed {SHA} hash"),
            ("u:$apr1$nodollar", "malformed $apr1$"),
            ("no colon here", "malformed line, no colon"),
        ] {
            let e = Htpasswd::parse(&format!("ok:pw\n{line}\n"), "htpasswd.inline").unwrap_err();
            assert!(e.starts_with("htpasswd.inline, line 2"), "{e}");
            assert!(e.contains(says), "{line}: {e}");
            assert!(!e.contains("abcdef"), "the hash is not shown: {e}");
        }
        // A plain password may contain dollars.
        assert!(Htpasswd::parse("u:pa$$word", "x").is_ok());
    }

    #[tokio::test]
    async fn a_later_line_for_a_user_wins() {
        let h = Htpasswd::parse("u:old\nu:new\n", "x").unwrap();
        assert!(h.matches("u", "new").await);
        assert!(!h.matches("u", "old").await);
    }
}
