//! Stamps the binary with the commit it was built from and the build date, for
//! `ductile version`: `DUCTILE_COMMIT` (`git rev-parse --short HEAD`, or
//! `unknown` outside a git checkout) and `DUCTILE_BUILD_DATE` (RFC 3339 UTC,
//! from `SOURCE_DATE_EPOCH` when set so that builds can be reproduced, else
//! the time this script ran). `DUCTILE_TARGET` is the target triple.
//!
//! The script reruns only when HEAD moves or `SOURCE_DATE_EPOCH` changes, not
//! on every edit: a fresh date on each run would rebuild the whole crate.

// Cargo reads a build script's instructions from its stdout.
#![allow(clippy::print_stdout)]

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // HEAD, the branch it points at, and packed-refs (where a branch's ref
    // goes after `git gc`); only files that exist, since cargo treats a
    // missing one as always changed.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=DUCTILE_COMMIT={commit}");
    println!("cargo:rustc-env=DUCTILE_BUILD_DATE={}", rfc3339(epoch));
    println!(
        "cargo:rustc-env=DUCTILE_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
}

/// One line of `git` output, or `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (no crate in a build
/// script: the civil-from-days conversion of Howard Hinnant's date algorithms).
fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
