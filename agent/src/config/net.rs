//! IP addresses and prefixes as written in the configuration (`"127.0.0.2"`, `"::1"`,
//! `"127.0.0.0/8"`), normalised to the 16-byte v4-mapped form the kernel map uses.

use std::{fmt, net::IpAddr, str::FromStr};

use llmtrace_common::{V4_MAPPED_PREFIX_BITS, v4_mapped};

/// An address prefix; a plain address is a prefix of full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length in bits of `addr`'s own family (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub len: u8,
}

impl IpPrefix {
    /// A host route for one address.
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// The address as 16 bytes, IPv4 v4-mapped.
    pub fn mapped_bytes(&self) -> [u8; 16] {
        match self.addr {
            IpAddr::V4(v4) => v4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// Prefix length over the 128-bit mapped form.
    pub fn mapped_len(&self) -> u32 {
        match self.addr {
            IpAddr::V4(_) => V4_MAPPED_PREFIX_BITS + u32::from(self.len),
            IpAddr::V6(_) => u32::from(self.len),
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if Self::host(self.addr).len == self.len {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// Why a prefix did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("`{0}` is not an IP address")]
    Address(String),
    #[error("`{0}` is not a prefix length for this address family")]
    Length(String),
    #[error("`{0}` has host bits set after the prefix; write the network address")]
    HostBits(String),
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| PrefixError::Address(s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| PrefixError::Length(s.to_owned()))?,
        };
        let prefix = Self { addr, len };
        if masked(prefix) != addr {
            return Err(PrefixError::HostBits(s.to_owned()));
        }
        Ok(prefix)
    }
}

fn masked(p: IpPrefix) -> IpAddr {
    match p.addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(p.len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(p.len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_prefixes() {
        let p: IpPrefix = "127.0.0.2".parse().unwrap();
        assert_eq!(p.len, 32);
        assert_eq!(p.mapped_len(), 128);
        let p: IpPrefix = "127.0.0.0/8".parse().unwrap();
        assert_eq!(p.mapped_len(), 104);
        assert_eq!(p.to_string(), "127.0.0.0/8");
        let p: IpPrefix = "::1".parse().unwrap();
        assert_eq!(p.mapped_len(), 128);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            "nope".parse::<IpPrefix>(),
            Err(PrefixError::Address(_))
        ));
        assert!(matches!(
            "127.0.0.1/33".parse::<IpPrefix>(),
            Err(PrefixError::Length(_))
        ));
        assert!(matches!(
            "127.0.0.1/8".parse::<IpPrefix>(),
            Err(PrefixError::HostBits(_))
        ));
    }
}
