//! The JSON-lines sink: each alert appended as one line, for SIEM collectors that tail files.
//! The file is opened per alert (append, mode 0600), so a rotated file is simply recreated.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Appends `json` and a newline in one write, so concurrent appenders never interleave lines.
pub fn append(path: &Path, json: &str) -> std::io::Result<()> {
    let mut line = String::with_capacity(json.len() + 1);
    line.push_str(json);
    line.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?
        .write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn appends_lines_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        append(&path, "{\"a\":1}").unwrap();
        append(&path, "{\"a\":2}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
