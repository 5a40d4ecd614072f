//! `apply`: bring the sysctls of a root directory (normally /proc/sys) up to
//! what a target needs. Only ever strengthens a key, so it is idempotent and
//! never lowers what an operator set higher.

use crate::profile::persisted_conf;
use crate::sizing::Requirements;
use crate::spec::{sysctl_specs, SysctlSpec};
use crate::sysctl::{SysctlRoot, SysctlValue};
use serde::Serialize;
use std::io;
use std::path::Path;

/// What `apply` will do with one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The key falls short: `to` is the current value strengthened where needed.
    Change { from: SysctlValue, to: SysctlValue },
    /// Already at least as strong as needed.
    Keep { value: SysctlValue },
    /// Not touched, and why (absent key, unparsable value, read error).
    Skip { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub key: &'static str,
    pub needed: SysctlValue,
    #[serde(flatten)]
    pub action: Action,
    #[serde(skip)]
    pub spec: SysctlSpec,
}

/// Reads every key under `root` and decides, without writing anything.
pub fn plan(r: &Requirements, root: &SysctlRoot) -> Vec<Planned> {
    sysctl_specs(r)
        .into_iter()
        .map(|spec| {
            let action = match root.read(spec.key) {
                Ok(Some(cur)) => match spec.direction.merge(&cur, &spec.needed) {
                    Some(to) if to == cur => Action::Keep { value: cur },
                    Some(to) => Action::Change { from: cur, to },
                    None => Action::Skip {
                        reason: format!("unexpected shape '{cur}'"),
                    },
                },
                Ok(None) if spec.optional => Action::Skip {
                    reason: "not present (module not loaded or older kernel)".into(),
                },
                Ok(None) => Action::Skip {
                    reason: "absent or not numeric on this kernel".into(),
                },
                Err(e) => Action::Skip {
                    reason: format!("cannot read: {e}"),
                },
            };
            Planned {
                key: spec.key,
                needed: spec.needed.clone(),
                action,
                spec,
            }
        })
        .collect()
}

/// The result of writing one key.
#[derive(Debug)]
pub struct Written {
    pub key: &'static str,
    pub result: io::Result<()>,
}

/// Writes every `Change` of `plan` and reads it back: the kernel may reject
/// or clamp a value, and that must not pass for success.
pub fn execute(plan: &[Planned], root: &SysctlRoot) -> Vec<Written> {
    plan.iter()
        .filter_map(|p| match &p.action {
            Action::Change { to, .. } => Some((p.key, to)),
            _ => None,
        })
        .map(|(key, to)| {
            let result = root.write(key, to).and_then(|()| match root.read(key)? {
                Some(v) if &v == to => Ok(()),
                other => Err(io::Error::other(format!(
                    "the kernel kept '{}' after writing '{to}'",
                    other.map_or_else(|| "nothing".to_string(), |v| v.to_string())
                ))),
            });
            Written { key, result }
        })
        .collect()
}

/// The persisted file's text: every planned key with the value in force once
/// the plan is applied (skipped keys are left out).
pub fn persisted_text(r: &Requirements, plan: &[Planned]) -> String {
    let values: Vec<(SysctlSpec, SysctlValue)> = plan
        .iter()
        .filter_map(|p| match &p.action {
            Action::Change { to, .. } => Some((p.spec.clone(), to.clone())),
            Action::Keep { value } => Some((p.spec.clone(), value.clone())),
            Action::Skip { .. } => None,
        })
        .collect();
    persisted_conf(r, &values)
}

/// Writes `text` to `path` unless it already holds exactly that; returns
/// whether the file changed.
pub fn write_if_changed(path: &Path, text: &str) -> io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write beside it and rename, so a crash never leaves half a file for boot.
    let tmp = path.with_extension("conf.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}
