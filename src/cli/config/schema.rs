//! `ductile config schema [--kind K]`: the JSON Schemas (2020-12) of what the
//! core accepts, as shipped in docs/schemas/, compiled into the binary.

use crate::cli::{Args, CliError, output};

/// Every kind, its file's text, and what it describes.
pub const SCHEMAS: &[(&str, &str, &str)] = &[
    (
        "config",
        include_str!("../../../docs/schemas/config.schema.json"),
        "config.yaml and the files it includes",
    ),
    (
        "manifest",
        include_str!("../../../docs/schemas/manifest.schema.json"),
        "a plugin's manifest.yaml",
    ),
    (
        "pipelines",
        include_str!("../../../docs/schemas/pipelines.schema.json"),
        "a pipelines file (pipelines.yaml)",
    ),
    (
        "request",
        include_str!("../../../docs/schemas/protocol-request.schema.json"),
        "the protocol v2 request a plugin reads on stdin",
    ),
    (
        "response",
        include_str!("../../../docs/schemas/protocol-response.schema.json"),
        "the protocol v2 response a plugin writes on stdout",
    ),
];

/// `ductile config schema [--kind config|manifest|pipelines|request|response]`.
pub fn schema(args: &Args) -> Result<(), CliError> {
    let kind = args.flag("kind").unwrap_or("config");
    let Some((_, text, _)) = SCHEMAS.iter().find(|(k, _, _)| *k == kind) else {
        let kinds: Vec<&str> = SCHEMAS.iter().map(|(k, _, _)| *k).collect();
        return Err(CliError::Usage(format!(
            "--kind {kind}: expected one of {}",
            kinds.join(", ")
        )));
    };
    // The file is already formatted JSON; printed as is (`--json` changes nothing).
    output::text(text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SCHEMAS;

    #[test]
    fn every_schema_is_2020_12_json() {
        for (kind, text, _) in SCHEMAS {
            let v: serde_json::Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{kind}: not JSON: {e}"));
            assert_eq!(
                v["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{kind}"
            );
            assert!(
                v["$id"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(".schema.json")),
                "{kind}"
            );
        }
    }
}
