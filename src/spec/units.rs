//! Value syntaxes shared by spec keys: sizes, durations, signals, capabilities, rlimits.

use std::str::FromStr;
use std::time::Duration;

/// Parses a size: a number (decimals allowed) with an optional suffix. `K`, `M`, `G`, `T` (any
/// case, optionally followed by `iB` or `i`) are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers
/// of 1000; `B` or no suffix is bytes. Returns bytes (rounded down).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let num = num.replace('_', "");
    if num.is_empty() {
        return Err("a size must start with a number".into());
    }
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit \"{other}\"")),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| "the size is too large".to_string());
    }
    let f: f64 = num
        .parse()
        .map_err(|_| format!("\"{num}\" is not a number"))?;
    let bytes = f * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("the size is too large".into());
    }
    Ok(bytes as u64)
}

/// Parses a duration: one or more `<number><unit>` parts (`1m30s`), units `ns`, `us`, `ms`, `s`,
/// `m`, `h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the duration is empty".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return secs_to_duration(secs);
    }
    let mut rest = t;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n_end == 0 {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let num: f64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("\"{}\" is not a number", &rest[..n_end]))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..u_end].trim();
        rest = &rest[u_end..];
        let secs = match unit {
            "ns" => num / 1e9,
            "us" | "µs" => num / 1e6,
            "ms" => num / 1e3,
            "s" | "sec" => num,
            "m" | "min" => num * 60.0,
            "h" => num * 3600.0,
            "" => return Err("a unit is missing after a number".into()),
            other => return Err(format!("unknown time unit \"{other}\"")),
        };
        total += secs_to_duration(secs)?;
    }
    Ok(total)
}

fn secs_to_duration(secs: f64) -> Result<Duration, String> {
    if secs < 0.0 {
        return Err("a duration cannot be negative".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| "the duration is too large".to_string())
}

/// Parses a signal: a name with or without `SIG` (any case, `RTMIN+3` too) or a number 1..=SIGRTMAX.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return check_signal_number(n);
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = bare.strip_prefix("RTMIN") {
        let off = parse_rt_offset(rt, '+')?;
        return check_signal_number(libc::SIGRTMIN() + off);
    }
    if let Some(rt) = bare.strip_prefix("RTMAX") {
        let off = parse_rt_offset(rt, '-')?;
        return check_signal_number(libc::SIGRTMAX() - off);
    }
    nix::sys::signal::Signal::from_str(&format!("SIG{bare}"))
        .map(|s| s as i32)
        .map_err(|_| format!("\"{t}\" is not a signal name"))
}

fn parse_rt_offset(rest: &str, sign: char) -> Result<i32, String> {
    if rest.is_empty() {
        return Ok(0);
    }
    rest.strip_prefix(sign)
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("expected RTMIN+N or RTMAX-N, found \"{rest}\""))
}

fn check_signal_number(n: i32) -> Result<i32, String> {
    let max = libc::SIGRTMAX();
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("signal numbers go from 1 to {max}, found {n}"))
    }
}

/// Names of all signals `parse_signal` knows by name (for suggestions), without `SIG`.
pub(crate) fn signal_names() -> Vec<String> {
    nix::sys::signal::Signal::iterator()
        .map(|s| s.as_str().trim_start_matches("SIG").to_string())
        .collect()
}

/// Every Linux capability name, in number order (CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// rlimit names accepted in `[process] rlimits` (without `RLIMIT_`), with their resource ids.
pub(crate) fn rlimit_resources() -> Vec<(&'static str, i32)> {
    vec![
        ("AS", libc::RLIMIT_AS as i32),
        ("CORE", libc::RLIMIT_CORE as i32),
        ("CPU", libc::RLIMIT_CPU as i32),
        ("DATA", libc::RLIMIT_DATA as i32),
        ("FSIZE", libc::RLIMIT_FSIZE as i32),
        ("LOCKS", libc::RLIMIT_LOCKS as i32),
        ("MEMLOCK", libc::RLIMIT_MEMLOCK as i32),
        ("MSGQUEUE", libc::RLIMIT_MSGQUEUE as i32),
        ("NICE", libc::RLIMIT_NICE as i32),
        ("NOFILE", libc::RLIMIT_NOFILE as i32),
        ("NPROC", libc::RLIMIT_NPROC as i32),
        ("RSS", libc::RLIMIT_RSS as i32),
        ("RTPRIO", libc::RLIMIT_RTPRIO as i32),
        ("RTTIME", libc::RLIMIT_RTTIME as i32),
        ("SIGPENDING", libc::RLIMIT_SIGPENDING as i32),
        ("STACK", libc::RLIMIT_STACK as i32),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("10 fortnights").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("RTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert!(parse_signal("SIGTREM").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
    }
}
