//! The committed profile files are exactly what `shardcast-tune profile`
//! renders, so they cannot drift from the sizing arithmetic. After changing
//! the arithmetic, regenerate with `UPDATE_PROFILES=1 cargo test -p shardcast-tuning --test profiles`.

mod common;

use common::run;
use std::path::Path;

const PROFILES: &[(&str, &str)] = &[
    (
        "sysctl.d/60-shardcast-100k.conf",
        "profile --kind sysctl --target 100000",
    ),
    (
        "sysctl.d/60-shardcast-1m.conf",
        "profile --kind sysctl --target 1000000",
    ),
    (
        "sysctl.d/60-shardcast-loadgen.conf",
        "profile --kind sysctl --target 1000000 --role loadgen",
    ),
    (
        "limits.d/60-shardcast-100k.conf",
        "profile --kind limits --target 100000",
    ),
    (
        "limits.d/60-shardcast-1m.conf",
        "profile --kind limits --target 1000000",
    ),
    (
        "limits.d/60-shardcast-loadgen.conf",
        "profile --kind limits --target 1000000 --role loadgen",
    ),
    (
        "systemd/shardcast.service.d/limits.conf",
        "profile --kind systemd --target 1000000",
    ),
];

#[test]
fn committed_profiles_match_the_arithmetic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_PROFILES").is_some();
    for (file, cmd) in PROFILES {
        let (code, rendered, err) = run(&format!("shardcast-tune {cmd}"), None);
        assert_eq!(code, 0, "{err}");
        let path = dir.join(file);
        if update {
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "{file} is stale: run `shardcast-tune {cmd} > tuning/{file}`"
        );
    }
}

#[test]
fn profiles_have_a_reason_for_every_value() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, _) in PROFILES {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let setting = !l.is_empty() && !l.starts_with('#') && !l.starts_with('[');
            // A setting follows a comment, or a run of settings that does.
            let explained = lines[..i]
                .iter()
                .rev()
                .take_while(|p| !p.is_empty())
                .any(|p| p.starts_with('#'));
            assert!(
                !setting || explained,
                "{file}:{}: '{l}' has no comment",
                i + 1
            );
        }
    }
}
