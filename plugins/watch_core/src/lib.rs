//! What the two watchers share: how a file is fingerprinted, how durations and
//! globs are written in config, and the bounded directory walk.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use glob::{MatchOptions, Pattern};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How a change is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The content's SHA-256: exact, reads every byte.
    Sha256,
    /// Modification time and size: cheap, misses same-size edits within one mtime tick.
    MtimeSize,
}

impl Strategy {
    /// Reads `strategy` (default sha256).
    pub fn parse(v: Option<&Value>, at: &str) -> Result<Strategy, String> {
        match v {
            None | Some(Value::Null) => Ok(Strategy::Sha256),
            Some(Value::String(s)) if s == "sha256" => Ok(Strategy::Sha256),
            Some(Value::String(s)) if s == "mtime_size" || s == "mtime" => Ok(Strategy::MtimeSize),
            Some(v) => Err(format!(
                "{at}.strategy must be `sha256` or `mtime_size`, got {v}"
            )),
        }
    }

    /// The name as written in snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Sha256 => "sha256",
            Strategy::MtimeSize => "mtime_size",
        }
    }
}

/// One regular file, observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// SHA-256 hex, or `<mtime_ns>-<size>` for mtime_size.
    pub fingerprint: String,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Bytes read to fingerprint it.
    pub bytes_read: u64,
}

/// Fingerprints the regular file at `path` (`Ok(None)` when it does not exist
/// or is not a regular file).
pub fn observe(path: &Path, strategy: Strategy) -> io::Result<Option<Observed>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let size = meta.len();
    let (fingerprint, bytes_read) = match strategy {
        Strategy::MtimeSize => (format!("{mtime_ns}-{size}"), 0),
        Strategy::Sha256 => match sha256_file(path) {
            Ok(x) => x,
            // Gone between the stat and the open: as if never there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    Ok(Some(Observed {
        fingerprint,
        size,
        mtime_ns,
        bytes_read,
    }))
}

fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 hex of `text`.
pub fn sha256_hex(text: &[u8]) -> String {
    hex(&Sha256::digest(text))
}

/// Whether a file modified at `mtime_ns` has been left alone for `min_age` by `now`.
pub fn is_stable(mtime_ns: i128, min_age: Duration, now: SystemTime) -> bool {
    if min_age.is_zero() {
        return true;
    }
    let now_ns = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    now_ns - mtime_ns >= min_age.as_nanos() as i128
}

/// Reads a duration: seconds as a number, or text like `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(v: Option<&Value>, at: &str) -> Result<Duration, String> {
    let bad = |v: &Value| format!("{at} must be a duration (`30s`, `5m`, or seconds), got {v}");
    match v {
        None | Some(Value::Null) => Ok(Duration::ZERO),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if (0.0..=31_536_000.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
            _ => Err(bad(&Value::Number(n.clone()))),
        },
        Some(Value::String(s)) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad(&Value::String(s.clone())))?;
            let scale = match unit.trim() {
                "ms" => 0.001,
                "" | "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad(&Value::String(s.clone()))),
            };
            let secs = n * scale;
            if !(0.0..=31_536_000.0).contains(&secs) {
                return Err(bad(&Value::String(s.clone())));
            }
            Ok(Duration::from_secs_f64(secs))
        }
        Some(v) => Err(bad(v)),
    }
}

/// Reads a boolean with a default.
pub fn parse_bool(v: Option<&Value>, default: bool, at: &str) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("{at} must be true or false, got {v}")),
    }
}

/// Reads a non-empty string.
pub fn parse_string(v: Option<&Value>, at: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(format!("{at} must be a non-empty string, got {v}")),
    }
}

/// Include and exclude globs over paths relative to a root (`/`-separated).
#[derive(Debug, Clone)]
pub struct Globs {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

const GLOB_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Globs {
    /// Reads `include_globs` (default: everything) and `exclude_globs` (default: none).
    pub fn parse(
        include: Option<&Value>,
        exclude: Option<&Value>,
        at: &str,
    ) -> Result<Globs, String> {
        let list = |v: Option<&Value>, key: &str| -> Result<Vec<Pattern>, String> {
            let items: Vec<String> = match v {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("{at}.{key} must hold strings, got {x}"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(v) => return Err(format!("{at}.{key} must be a list of globs, got {v}")),
            };
            items
                .iter()
                .map(|g| Pattern::new(g).map_err(|e| format!("{at}.{key}: bad glob {g:?}: {e}")))
                .collect()
        };
        Ok(Globs {
            include: list(include, "include_globs")?,
            exclude: list(exclude, "exclude_globs")?,
        })
    }

    /// Whether `rel` is watched.
    pub fn accepts(&self, rel: &str) -> bool {
        let hit = |p: &Pattern| p.matches_with(rel, GLOB_OPTIONS);
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }
}

/// Why a walk stopped.
#[derive(Debug)]
pub enum WalkError {
    /// A directory could not be read.
    Io(PathBuf, io::Error),
    /// More files than the cap.
    TooMany(usize),
}

/// Regular files under `root` (relative `/`-separated paths, sorted), into
/// subdirectories only when `recursive`. Symlinks are not followed: a link
/// could lead the watcher anywhere on the machine.
pub fn walk(root: &Path, recursive: bool, max_files: usize) -> Result<Vec<String>, WalkError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| WalkError::Io(dir.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| WalkError::Io(dir.clone(), e))?;
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if kind.is_dir() {
                if recursive {
                    stack.push((entry.path(), rel));
                }
            } else if kind.is_file() {
                out.push(rel);
                if out.len() > max_files {
                    return Err(WalkError::TooMany(max_files));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("watch-core-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn fingerprints_follow_content_or_mtime_and_size() {
        let d = tmp("fp");
        let f = d.join("a.txt");
        fs::write(&f, "hello").unwrap();
        let o = observe(&f, Strategy::Sha256).unwrap().unwrap();
        assert_eq!(
            o.fingerprint,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!((o.size, o.bytes_read), (5, 5));
        let m = observe(&f, Strategy::MtimeSize).unwrap().unwrap();
        assert_eq!(m.fingerprint, format!("{}-5", m.mtime_ns));
        assert!(
            observe(&d.join("none"), Strategy::Sha256)
                .unwrap()
                .is_none()
        );
        assert!(
            observe(&d, Strategy::Sha256).unwrap().is_none(),
            "a directory"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn durations_read_numbers_and_units() {
        let d = |v: Value| parse_duration(Some(&v), "x");
        assert_eq!(d(json!(2)).unwrap(), Duration::from_secs(2));
        assert_eq!(d(json!("500ms")).unwrap(), Duration::from_millis(500));
        assert_eq!(d(json!("5m")).unwrap(), Duration::from_secs(300));
        assert_eq!(d(json!("1h")).unwrap(), Duration::from_secs(3600));
        assert!(d(json!("5 parsecs")).is_err());
        assert!(d(json!(-1)).is_err());
        assert_eq!(parse_duration(None, "x").unwrap(), Duration::ZERO);
    }

    #[test]
    fn stability_is_age_since_the_last_write() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let at = |s: i128| s * 1_000_000_000;
        assert!(is_stable(at(100), Duration::ZERO, now));
        assert!(!is_stable(at(95), Duration::from_secs(10), now));
        assert!(is_stable(at(90), Duration::from_secs(10), now));
    }

    #[test]
    fn globs_include_then_exclude_with_double_star() {
        let g = Globs::parse(Some(&json!(["**/*.md"])), Some(&json!(["drafts/**"])), "w").unwrap();
        assert!(g.accepts("a.md"));
        assert!(g.accepts("x/y/a.md"));
        assert!(!g.accepts("a.txt"));
        assert!(!g.accepts("drafts/a.md"));
        let top = Globs::parse(Some(&json!("*.md")), None, "w").unwrap();
        assert!(top.accepts("a.md") && !top.accepts("x/a.md"));
        assert!(
            Globs::parse(None, None, "w")
                .unwrap()
                .accepts("anything/at/all")
        );
        assert!(Globs::parse(Some(&json!(["[bad"])), None, "w").is_err());
    }

    #[test]
    fn walk_lists_sorted_files_without_following_links() {
        let d = tmp("walk");
        fs::create_dir_all(d.join("sub/deeper")).unwrap();
        fs::write(d.join("b.txt"), "").unwrap();
        fs::write(d.join("sub/a.txt"), "").unwrap();
        fs::write(d.join("sub/deeper/c.txt"), "").unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("link")).unwrap();
        assert_eq!(
            walk(&d, true, 100).unwrap(),
            ["b.txt", "sub/a.txt", "sub/deeper/c.txt"]
        );
        assert_eq!(walk(&d, false, 100).unwrap(), ["b.txt"]);
        assert!(matches!(walk(&d, true, 2), Err(WalkError::TooMany(2))));
        fs::remove_dir_all(&d).unwrap();
    }
}
