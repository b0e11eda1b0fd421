//! User namespace id maps, written by the parent for the holder process.
//!
//! Rootless with a `/etc/subuid` and `/etc/subgid` range and `newuidmap`/`newgidmap`: container
//! id 0 is the caller and ids 1.. come from the range (a full 65536-id map). Otherwise a single
//! mapping caller -> 0, with `setgroups` denied as the kernel requires.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

/// How the user namespace's ids are mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMap {
    /// Only container root, mapped to the caller.
    Single {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
    },
    /// Root = caller, 1.. = the subordinate ranges.
    Full {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
        /// First subordinate uid and how many.
        subuid: (u32, u32),
        /// First subordinate gid and how many.
        subgid: (u32, u32),
    },
}

fn find_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || (f[0] != name && f[0] != id.to_string()) {
            return None;
        }
        let start: u32 = f[1].parse().ok()?;
        let count: u32 = f[2].parse().ok()?;
        (count > 0).then_some((start, count.min(65535)))
    })
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

fn have(prog: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(prog).exists())
}

impl IdMap {
    /// The best map available to the calling user.
    pub fn detect() -> IdMap {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = user_name(uid).unwrap_or_default();
        let sub = (
            find_range("/etc/subuid", &name, uid),
            find_range("/etc/subgid", &name, uid),
        );
        match sub {
            (Some(subuid), Some(subgid)) if have("newuidmap") && have("newgidmap") => IdMap::Full {
                uid,
                gid,
                subuid,
                subgid,
            },
            _ => IdMap::Single { uid, gid },
        }
    }

    /// Writes the maps of process `pid`, which has just entered its new user namespace.
    pub fn write(&self, pid: Pid) -> Result<()> {
        match *self {
            IdMap::Single { uid, gid } => {
                let proc = format!("/proc/{pid}");
                std::fs::write(format!("{proc}/setgroups"), "deny")
                    .with_context(|| format!("writing {proc}/setgroups"))?;
                std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))
                    .with_context(|| format!("writing {proc}/uid_map"))?;
                std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n"))
                    .with_context(|| format!("writing {proc}/gid_map"))?;
            }
            IdMap::Full {
                uid,
                gid,
                subuid,
                subgid,
            } => {
                run_map("newuidmap", pid, uid, subuid)?;
                run_map("newgidmap", pid, gid, subgid)?;
            }
        }
        Ok(())
    }
}

fn run_map(prog: &str, pid: Pid, id: u32, (start, count): (u32, u32)) -> Result<()> {
    let out = Command::new(prog)
        .arg(pid.to_string())
        .args([
            "0",
            &id.to_string(),
            "1",
            "1",
            &start.to_string(),
            &count.to_string(),
        ])
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {pid} 0 {id} 1 1 {start} {count} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
