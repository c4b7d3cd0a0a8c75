//! The syslog sink: one RFC 5424 message per alert, over UDP or a unix datagram socket
//! (`/dev/log`). The message is the alert's JSON; a structured-data element repeats the
//! fields a SIEM filters on.

use std::{fmt::Write as _, net::SocketAddr, time::SystemTime};

use tokio::net::{UdpSocket, UnixDatagram};

use super::{
    config::{SyslogConfig, SyslogTarget as Target},
    model::Alert,
    time::rfc3339,
};

/// SD-ID of our structured data: the example private enterprise number of RFC 5612, as no
/// number is registered for llmtrace.
const SD_ID: &str = "llmtrace@32473";

/// Syslog severity (RFC 5424 §6.2.1) of an alert severity.
fn syslog_severity(severity: &str) -> u8 {
    match severity {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 6,
    }
}

/// Escapes a PARAM-VALUE (RFC 5424 §6.3.3: `"`, `\` and `]`).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable ASCII, at most `max` characters, `-` when empty.
fn field(v: &str, max: usize) -> String {
    let s: String = v.chars().filter(char::is_ascii_graphic).take(max).collect();
    if s.is_empty() { "-".into() } else { s }
}

/// The RFC 5424 message of `alert` (`json` is its serialisation).
pub fn format(alert: &Alert, json: &str, facility: u8, app_name: &str, at: SystemTime) -> String {
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(&alert.severity));
    let msgid = match alert.trigger {
        super::model::Trigger::Finding => "finding",
        super::model::Trigger::Anomaly => "anomaly",
        super::model::Trigger::Limit => "limit",
        super::model::Trigger::Health => "health",
    };
    let mut sd = format!(
        "[{SD_ID} rule=\"{}\" severity=\"{}\" alert_id=\"{}\"",
        escape(&alert.rule),
        escape(&alert.severity),
        alert.id
    );
    if let Some(t) = alert.trace_id {
        let _ = write!(sd, " trace_id=\"{t}\"");
    }
    if let Some(f) = &alert.finding {
        let _ = write!(sd, " kind=\"{}\"", escape(&f.kind));
    }
    let _ = write!(sd, " suppressed=\"{}\"]", alert.suppressed);
    format!(
        "<{pri}>1 {} {} {} {} {msgid} {sd} \u{feff}{json}",
        rfc3339(at),
        field(&alert.agent_host, 255),
        field(app_name, 48),
        std::process::id(),
    )
}

/// A connected syslog socket.
#[derive(Debug)]
pub enum Syslog {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Syslog {
    /// Opens a socket to `target`.
    pub async fn connect(target: &Target) -> std::io::Result<Self> {
        Ok(match target {
            Target::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(local).await?;
                s.connect(addr).await?;
                Self::Udp(s)
            }
            Target::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                Self::Unix(s)
            }
        })
    }

    /// Sends one message (one datagram).
    pub async fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp(s) => s.send(msg).await.map(drop),
            Self::Unix(s) => s.send(msg).await.map(drop),
        }
    }
}

/// Builds the message for `cfg` and sends it, connecting on each call (a restarted syslog
/// daemon gets a new socket, and alerts are rare).
pub async fn deliver(cfg: &SyslogConfig, alert: &Alert, json: &str) -> std::io::Result<()> {
    let target = Target::parse(&cfg.address).map_err(std::io::Error::other)?;
    let msg = format(alert, json, cfg.facility, &cfg.app_name, SystemTime::now());
    Syslog::connect(&target).await?.send(msg.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::alerts::model::{FindingView, Trigger};

    fn alert() -> Alert {
        Alert {
            id: Uuid::nil(),
            time: String::new(),
            rule: "sec\"rets]".into(),
            trigger: Trigger::Finding,
            severity: "high".into(),
            summary: "s".into(),
            trace_id: Some(Uuid::nil()),
            identity: None,
            finding: Some(FindingView {
                kind: "secret.aws_access_key".into(),
                severity: "high".into(),
                location: "request".into(),
                excerpt: "AKIA****(20)".into(),
            }),
            limit: None,
            health: None,
            dedup_key: "k".into(),
            suppressed: 2,
            agent_host: "node 1".into(),
        }
    }

    #[test]
    fn rfc5424_layout() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_178_125);
        let msg = format(&alert(), "{\"a\":1}", 16, "llmtrace", at);
        let pid = std::process::id();
        assert_eq!(
            msg,
            format!(
                "<131>1 2026-12-02T02:22:05.000000Z node1 llmtrace {pid} finding \
                 [llmtrace@32473 rule=\"sec\\\"rets\\]\" severity=\"high\" \
                 alert_id=\"00000000-0000-0000-0000-000000000000\" \
                 trace_id=\"00000000-0000-0000-0000-000000000000\" \
                 kind=\"secret.aws_access_key\" suppressed=\"2\"] \u{feff}{{\"a\":1}}"
            )
        );
    }

    #[tokio::test]
    async fn sends_one_datagram_over_loopback_udp() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg: SyslogConfig = toml::from_str(&format!(
            "name = \"s\"\naddress = \"udp://{}\"",
            rx.local_addr().unwrap()
        ))
        .unwrap();
        deliver(&cfg, &alert(), "{}").await.unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("<131>1 "), "{text}");
        assert!(text.ends_with("\u{feff}{}"), "{text}");
    }
}
