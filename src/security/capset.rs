//! Capability names and sets: Docker's default set, modified by `cap_add` / `cap_drop`.

use std::str::FromStr;

use caps::Capability;

use super::SecurityError;

/// Docker's default capability set (CapEff `00000000a80425fb` for root in a container).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> Result<u8, SecurityError> {
    const PATH: &str = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(PATH).map_err(|e| SecurityError::Proc {
        path: PATH.into(),
        source: e,
    })?;
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|&n| n < 64)
        .ok_or_else(|| SecurityError::Proc {
            path: PATH.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a capability number: {:?}", text.trim()),
            ),
        })
}

/// A mask with every capability from 0 to `last` set.
pub fn all_mask(last: u8) -> u64 {
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// True when `name` is the special "ALL" entry.
fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// Resolves one capability name (`CAP_X`, case-insensitive, the `CAP_` prefix optional) to its
/// number, checking that the running kernel knows it.
pub fn cap_number(name: &str, last: u8) -> Result<u8, SecurityError> {
    let canonical = caps::to_canonical(name);
    let cap = Capability::from_str(&canonical).map_err(|_| SecurityError::UnknownCapability {
        name: name.to_string(),
    })?;
    let n = cap.index();
    if n > last {
        return Err(SecurityError::CapabilityNotInKernel {
            name: name.to_string(),
            last,
        });
    }
    Ok(n)
}

/// The name of capability number `n` (`CAP_X`), or `CAP_<n>` for one newer than the caps crate.
pub fn cap_name(n: u8) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() == n)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("CAP_{n}"))
}

fn mask_of(names: &[String], last: u8) -> Result<u64, SecurityError> {
    names
        .iter()
        .filter(|n| !is_all(n))
        .try_fold(0u64, |m, n| Ok(m | (1u64 << cap_number(n, last)?)))
}

/// The resolved capability set: `required` must be granted; `optional` (what "ALL" adds beyond
/// the named capabilities) is granted where the runtime itself holds it, as Docker does for
/// nested containers whose bounding set is already reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapRequest {
    /// Capabilities named (or Docker defaults): applying fails if one is not held.
    pub required: u64,
    /// Capabilities from "ALL": granted when held, silently left out otherwise.
    pub optional: u64,
}

impl CapRequest {
    /// Everything asked for.
    pub fn all(&self) -> u64 {
        self.required | self.optional
    }
}

/// The final capability set, following Docker's rules: "ALL" in `add` means every capability
/// the kernel knows except those dropped; otherwise "ALL" in `drop` means only the added ones;
/// otherwise the default set minus `drop`, plus `add`. Unknown names are errors.
pub fn resolve(add: &[String], drop: &[String], last: u8) -> Result<CapRequest, SecurityError> {
    let add_mask = mask_of(add, last)?;
    let drop_mask = mask_of(drop, last)?;
    if add.iter().any(|n| is_all(n)) {
        let required = add_mask & !drop_mask;
        return Ok(CapRequest {
            required,
            optional: all_mask(last) & !drop_mask & !required,
        });
    }
    let required = if drop.iter().any(|n| is_all(n)) {
        add_mask
    } else {
        let defaults: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        (mask_of(&defaults, last)? & !drop_mask) | add_mask
    };
    Ok(CapRequest {
        required,
        optional: 0,
    })
}

/// Names of the capabilities in `mask`, in number order.
pub fn names(mask: u64) -> Vec<String> {
    (0u8..64)
        .filter(|&n| mask & (1u64 << n) != 0)
        .map(cap_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_set_is_dockers() {
        assert_eq!(resolve(&[], &[], 40).unwrap().all(), 0xa804_25fb);
    }

    #[test]
    fn add_and_drop() {
        assert_eq!(
            resolve(&v(&["CAP_SYS_ADMIN"]), &v(&["CAP_CHOWN"]), 40)
                .unwrap()
                .all(),
            0xa804_25fb - 1 + (1 << 21)
        );
        // Docker: drop first, then add: a name in both lists stays.
        assert_eq!(
            resolve(&v(&["CAP_CHOWN"]), &v(&["CAP_CHOWN"]), 40)
                .unwrap()
                .all(),
            0xa804_25fb
        );
    }

    #[test]
    fn all_in_add_and_drop() {
        assert_eq!(
            resolve(&v(&["ALL"]), &[], 40).unwrap().all(),
            (1u64 << 41) - 1
        );
        assert_eq!(
            resolve(&v(&["ALL"]), &v(&["CAP_CHOWN"]), 40).unwrap().all(),
            (1u64 << 41) - 2
        );
        assert_eq!(resolve(&[], &v(&["ALL"]), 40).unwrap().all(), 0);
        assert_eq!(
            resolve(&v(&["CAP_KILL"]), &v(&["ALL"]), 40).unwrap().all(),
            1 << 5
        );
        assert_eq!(
            resolve(&v(&["ALL"]), &[], 37).unwrap().all(),
            (1u64 << 38) - 1
        );
    }

    #[test]
    fn unknown_and_too_new_names_are_rejected() {
        let e = resolve(&v(&["CAP_BOGUS"]), &[], 40).unwrap_err();
        assert!(e.to_string().contains("CAP_BOGUS"), "{e}");
        let e = resolve(&[], &v(&["CAP_BPF"]), 37).unwrap_err();
        assert!(e.to_string().contains("CAP_BPF"), "{e}");
    }

    #[test]
    fn names_round_trip() {
        let n = names(0xa804_25fb);
        assert_eq!(n.len(), DEFAULT_CAPS.len());
        for d in DEFAULT_CAPS {
            assert!(n.iter().any(|x| x == d), "{d} missing from {n:?}");
        }
    }
}
