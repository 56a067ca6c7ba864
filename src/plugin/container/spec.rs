//! The `container:` block of a manifest: its fields, their defaults and their rules.
//!
//! Every rule answers with the dotted field under `container` and what was
//! found there, so a refusal names file, plugin and field.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_yaml::{Mapping, Value};

/// Memory limit when the manifest sets none.
pub const DEFAULT_MEMORY: &str = "256m";
/// CPU limit when the manifest sets none.
pub const DEFAULT_CPUS: &str = "1";
/// Process limit when the manifest sets none.
pub const DEFAULT_PIDS: u32 = 128;

/// A validated `container:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The image as written: a digest reference, a local image ID or (when
    /// allowed) a mutable tag.
    pub image: String,
    /// What kind of reference `image` is.
    pub pinning: Pinning,
    /// The wire contract the image speaks.
    pub envelope: Envelope,
    /// What a Stage7 manifest adds (port, health check, API), for [`Envelope::Stage7`].
    pub stage7: Option<Box<super::stage7::Stage7>>,
    /// Engine forced by the manifest (`podman` or `docker`).
    pub engine: Option<String>,
    /// Memory limit, as the engine spells it (`256m`).
    pub memory: String,
    /// CPU limit (`1`, `0.5`).
    pub cpus: String,
    /// Process limit inside the container.
    pub pids: u32,
    /// Network mode.
    pub network: Network,
    /// Host paths mounted, and nothing else.
    pub mounts: Vec<Mount>,
    /// Environment set inside the container, on top of `DUCTILE_JOB_ID`.
    pub env: BTreeMap<String, String>,
    /// `--user`, when set.
    pub user: Option<String>,
    /// `--workdir`, when set.
    pub workdir: Option<String>,
    /// Arguments after the image (the image's own command when empty).
    pub args: Vec<String>,
}

/// How an image reference pins its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    /// `name@sha256:<64 hex>`.
    Digest,
    /// A local image ID (`sha256:<64 hex>` or 64 hex digits).
    ImageId,
    /// A tag, which can move; only with `allow_mutable_tag: true`.
    MutableTag,
}

/// The contract between the core and the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Protocol v2 request on stdin, response on stdout, like a local plugin.
    ProtocolV2,
    /// The "Docker-only processor" envelope, with `/artifacts` ([`super::processor`]).
    ProcessorV1,
    /// The D6E "Docker STF" envelope ([`super::d6e`]).
    D6eStf,
    /// A Stage7 HTTP plugin, declared by its `manifest.json` ([`super::stage7`]).
    Stage7,
}

impl Envelope {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Envelope::ProtocolV2 => "protocol-v2",
            Envelope::ProcessorV1 => "processor-v1",
            Envelope::D6eStf => "d6e-stf",
            Envelope::Stage7 => "stage7",
        }
    }
}

/// `network:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// No interface but loopback (the default).
    None,
    /// The engine's default bridge.
    Bridge,
}

impl Network {
    /// The engine's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Bridge => "bridge",
        }
    }
}

/// One declared bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only unless written `:rw`.
    pub read_only: bool,
}

/// A rule violation: the field below `container` and the message.
pub type SpecError = (String, String);

const KEYS: &[&str] = &[
    "image",
    "envelope",
    "engine",
    "resources",
    "network",
    "mounts",
    "env",
    "user",
    "workdir",
    "pull",
    "allow_mutable_tag",
    "args",
];

/// Validates a `container:` value.
pub fn parse(v: &Value) -> Result<ContainerSpec, SpecError> {
    let Value::Mapping(m) = v else {
        return Err((String::new(), "must be a mapping".to_string()));
    };
    for k in m.keys() {
        let key = k.as_str().unwrap_or("");
        if !KEYS.contains(&key) {
            return Err((
                key.to_string(),
                format!("unknown key (known: {})", KEYS.join(", ")),
            ));
        }
    }
    let allow_mutable_tag = match m.get("allow_mutable_tag") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(("allow_mutable_tag".into(), "must be true or false".into()));
        }
    };
    let image = string(m, "image")?.ok_or(("image".to_string(), "is required".to_string()))?;
    let pinning = pinning(&image);
    if pinning == Pinning::MutableTag && !allow_mutable_tag {
        return Err((
            "image".into(),
            format!(
                "`{image}` is a mutable tag; pin it by digest (`name@sha256:...`) or by local image ID (`ductile plugin build` prints it), or set allow_mutable_tag: true"
            ),
        ));
    }
    let envelope = match string(m, "envelope")?.as_deref() {
        None | Some("protocol-v2") => Envelope::ProtocolV2,
        Some("processor-v1") => Envelope::ProcessorV1,
        Some("d6e-stf") => Envelope::D6eStf,
        Some("stage7") => {
            return Err((
                "envelope".into(),
                "`stage7` is declared by a Stage7 manifest.json in the plugin directory, not in container: (remove manifest.yaml to load the directory as a Stage7 plugin)".into(),
            ));
        }
        Some(e) => {
            return Err((
                "envelope".into(),
                format!("must be one of protocol-v2, d6e-stf, stage7, processor-v1, got `{e}`"),
            ));
        }
    };
    let engine = match string(m, "engine")? {
        None => None,
        Some(e) if e == "podman" || e == "docker" => Some(e),
        Some(e) => {
            return Err((
                "engine".into(),
                format!("must be podman or docker, got `{e}`"),
            ));
        }
    };
    let (memory, cpus, pids) = resources(m.get("resources"))?;
    let network = match string(m, "network")?.as_deref() {
        None | Some("none") => Network::None,
        Some("bridge") => Network::Bridge,
        Some(n) => {
            return Err((
                "network".into(),
                format!("must be none or bridge, got `{n}`"),
            ));
        }
    };
    match string(m, "pull")?.as_deref() {
        None | Some("never") => {}
        Some(p) => {
            return Err((
                "pull".into(),
                format!("must be never (images are built or loaded locally), got `{p}`"),
            ));
        }
    }
    let mounts = mounts(m.get("mounts"))?;
    let env = env(m.get("env"))?;
    let user = string(m, "user")?;
    let workdir = string(m, "workdir")?;
    if let Some(w) = &workdir {
        if !w.starts_with('/') {
            return Err(("workdir".into(), format!("must be absolute, got `{w}`")));
        }
    }
    let args = match m.get("args") {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| scalar(v).ok_or((format!("args[{i}]"), "must be a string".to_string())))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(("args".into(), "must be a list of strings".into())),
    };
    Ok(ContainerSpec {
        image,
        pinning,
        envelope,
        stage7: None,
        engine,
        memory,
        cpus,
        pids,
        network,
        mounts,
        env,
        user,
        workdir,
        args,
    })
}

/// Classifies an image reference.
pub fn pinning(image: &str) -> Pinning {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some((name, digest)) = image.split_once('@') {
        if !name.is_empty() && digest.strip_prefix("sha256:").is_some_and(hex64) {
            return Pinning::Digest;
        }
        return Pinning::MutableTag;
    }
    if hex64(image) || image.strip_prefix("sha256:").is_some_and(hex64) {
        return Pinning::ImageId;
    }
    Pinning::MutableTag
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string(m: &Mapping, key: &str) -> Result<Option<String>, SpecError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err((key.to_string(), "must be a non-empty string".to_string())),
    }
}

fn resources(v: Option<&Value>) -> Result<(String, String, u32), SpecError> {
    let mut out = (
        DEFAULT_MEMORY.to_string(),
        DEFAULT_CPUS.to_string(),
        DEFAULT_PIDS,
    );
    let Some(v) = v else {
        return Ok(out);
    };
    let Value::Mapping(m) = v else {
        return Err(("resources".into(), "must be a mapping".into()));
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or("");
        let field = format!("resources.{key}");
        match key {
            "memory" => {
                let s = scalar(v).unwrap_or_default().to_ascii_lowercase();
                let digits = s.trim_end_matches(['b', 'k', 'm', 'g']);
                let suffix = &s[digits.len()..];
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || suffix.len() > 1
                    || digits.parse::<u64>().is_ok_and(|n| n == 0)
                {
                    return Err((
                        field,
                        format!("must be a size such as 256m or 1g, got `{s}`"),
                    ));
                }
                out.0 = s;
            }
            "cpus" => {
                let s = scalar(v).unwrap_or_default();
                if !s.parse::<f64>().is_ok_and(|c| c > 0.0 && c.is_finite()) {
                    return Err((
                        field,
                        format!("must be a positive number such as 1 or 0.5, got `{s}`"),
                    ));
                }
                out.1 = s;
            }
            "pids" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > 0 => out.2 = n,
                _ => return Err((field, "must be a positive integer".into())),
            },
            _ => return Err((field, "unknown key (known: memory, cpus, pids)".into())),
        }
    }
    Ok(out)
}

fn mounts(v: Option<&Value>) -> Result<Vec<Mount>, SpecError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Value::Sequence(items) = v else {
        return Err((
            "mounts".into(),
            "must be a list of `HOST:CONTAINER[:ro|rw]`".into(),
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let Some(s) = item.as_str() else {
            return Err((field, "must be a string `HOST:CONTAINER[:ro|rw]`".into()));
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [h, c] => (*h, *c, true),
            [h, c, "ro"] => (*h, *c, true),
            [h, c, "rw"] => (*h, *c, false),
            _ => {
                return Err((
                    field,
                    format!("must be `HOST:CONTAINER[:ro|rw]`, got `{s}`"),
                ));
            }
        };
        let host = Path::new(source);
        if !host.is_absolute() || host.components().any(|c| c == Component::ParentDir) {
            return Err((
                field,
                format!("host path must be absolute without `..`, got `{source}`"),
            ));
        }
        if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
            return Err((
                field,
                format!("container path must be absolute without `..`, got `{target}`"),
            ));
        }
        out.push(Mount {
            source: host.to_path_buf(),
            target: target.to_string(),
            read_only,
        });
    }
    Ok(out)
}

fn env(v: Option<&Value>) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    let Some(v) = v else {
        return Ok(out);
    };
    let Value::Mapping(m) = v else {
        return Err(("env".into(), "must be a mapping of NAME: value".into()));
    };
    for (k, v) in m {
        let name = k.as_str().unwrap_or("");
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err((format!("env.{name}"), "is not a valid variable name".into()));
        }
        let Some(value) = scalar(v) else {
            return Err((format!("env.{name}"), "must be a scalar".into()));
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<ContainerSpec, SpecError> {
        parse(&serde_yaml::from_str(yaml).unwrap())
    }

    const ID: &str = "44f2d68caa6d4cf5dec2252ed756e44c9cd85b7bba90409096d63b5fb8b4e8b9";

    #[test]
    fn image_references_are_classified() {
        assert_eq!(pinning(ID), Pinning::ImageId);
        assert_eq!(pinning(&format!("sha256:{ID}")), Pinning::ImageId);
        assert_eq!(pinning(&format!("repo/x@sha256:{ID}")), Pinning::Digest);
        assert_eq!(pinning("alpine:3.20"), Pinning::MutableTag);
        assert_eq!(pinning("alpine"), Pinning::MutableTag);
        assert_eq!(pinning("x@sha256:abc"), Pinning::MutableTag);
    }

    #[test]
    fn defaults_are_locked_down() {
        let s = spec(&format!("image: {ID}")).unwrap();
        assert_eq!(s.network, Network::None);
        assert_eq!(
            (s.memory.as_str(), s.cpus.as_str(), s.pids),
            ("256m", "1", 128)
        );
        assert!(s.mounts.is_empty());
        assert_eq!(s.envelope, Envelope::ProtocolV2);
    }

    #[test]
    fn a_mutable_tag_needs_the_opt_in() {
        let (field, msg) = spec("image: alpine:3.20").unwrap_err();
        assert_eq!(field, "image");
        assert!(msg.contains("mutable tag"), "{msg}");
        let s = spec("image: alpine:3.20\nallow_mutable_tag: true").unwrap();
        assert_eq!(s.pinning, Pinning::MutableTag);
    }

    #[test]
    fn fields_are_checked_by_name() {
        let cases = [
            ("network: host", "network"),
            ("resources: {memory: lots}", "resources.memory"),
            ("resources: {cpus: 0}", "resources.cpus"),
            ("resources: {pids: -1}", "resources.pids"),
            ("mounts: [relative:/data]", "mounts[0]"),
            ("mounts: ['/data:/x:rx']", "mounts[0]"),
            ("pull: always", "pull"),
            ("envelope: stage7", "envelope"),
            ("envelope: soap", "envelope"),
            ("env: {1BAD: x}", "env.1BAD"),
            ("workdir: rel", "workdir"),
            ("volumes: []", "volumes"),
        ];
        for (extra, field) in cases {
            let err = spec(&format!("image: {ID}\n{extra}")).unwrap_err();
            assert_eq!(err.0, field, "{extra}: {err:?}");
        }
    }

    #[test]
    fn mounts_default_to_read_only() {
        let s = spec(&format!(
            "image: {ID}\nmounts: ['/srv/in:/in', '/srv/out:/out:rw']"
        ))
        .unwrap();
        assert!(s.mounts[0].read_only);
        assert!(!s.mounts[1].read_only);
    }
}
