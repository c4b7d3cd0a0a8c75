//! The container runtime that made a process's cgroup, as an enum until the encoding edge.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sink::column::{Column, DecodeError, Reader, put_str};

/// Which container runtime a process runs under, as its cgroup name shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ContainerRuntime {
    /// Not in a container, or a runtime the cgroup name does not reveal (stored as empty).
    #[default]
    Unknown,
    /// Docker (`docker-<id>.scope`, `/docker/<id>`).
    Docker,
    /// containerd's CRI plugin (`cri-containerd-<id>.scope`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    CriO,
    /// Podman (`libpod-<id>.scope`).
    Podman,
}

impl ContainerRuntime {
    /// Every variant, for parsing and tests.
    pub const ALL: [Self; 5] = [
        Self::Unknown,
        Self::Docker,
        Self::Containerd,
        Self::CriO,
        Self::Podman,
    ];

    /// The stored name: the column value and the JSON string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "",
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }

    /// The variant stored as `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl Serialize for ContainerRuntime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ContainerRuntime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown container runtime {s:?}")))
    }
}

/// `LowCardinality(String)` (18.16: `String`).
impl Column for ContainerRuntime {
    fn put(&self, out: &mut Vec<u8>) {
        put_str(out, self.as_str());
    }

    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        let s = String::get(r, col)?;
        Self::from_name(&s).ok_or(DecodeError::Unknown(col, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_json_and_rowbinary() {
        for rt in ContainerRuntime::ALL {
            let json = serde_json::to_string(&rt).unwrap();
            assert_eq!(json, format!("\"{}\"", rt.as_str()));
            assert_eq!(serde_json::from_str::<ContainerRuntime>(&json).unwrap(), rt);
            let mut buf = Vec::new();
            rt.put(&mut buf);
            let back = ContainerRuntime::get(&mut Reader::new(&buf), "container_runtime");
            assert_eq!(back.unwrap(), rt);
        }
        let mut buf = Vec::new();
        put_str(&mut buf, "lxc");
        assert!(matches!(
            ContainerRuntime::get(&mut Reader::new(&buf), "container_runtime"),
            Err(DecodeError::Unknown("container_runtime", _))
        ));
    }
}
