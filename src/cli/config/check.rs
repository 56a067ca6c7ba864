//! `ductile config check`: load the whole configuration and plugin set the way
//! the daemon would, report every finding, change nothing.

use serde_json::json;

use crate::cli::{Args, CliError, output};
use crate::runtime::Runtime;

/// `ductile config check [--json]`: exit 0 when clean, 78 on errors (and on
/// warnings under `service.strict_mode`, except "parsed but not yet active",
/// which the spec's own strict examples would trip).
pub fn check(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = match Runtime::load(&root) {
        Ok(rt) => rt,
        Err(e) => {
            if args.json {
                output::json(&json!({"ok": false, "errors": [e.to_string()], "warnings": []}));
                return Err(CliError::Exit(78));
            }
            return Err(e.into());
        }
    };
    let strict = rt.config.service.strict_mode;
    let ok = !strict || rt.warnings.is_empty();
    let warnings: Vec<String> = rt
        .warnings
        .iter()
        .cloned()
        .chain(rt.config.inactive.iter().map(ToString::to_string))
        .collect();
    if args.json {
        output::json(&json!({
            "ok": ok,
            "root": rt.root,
            "files": rt.config.files.iter().map(|f| json!({"path": f.path, "hash": f.hash})).collect::<Vec<_>>(),
            "plugins": rt.registry.plugins().map(|p| p.name.clone()).collect::<Vec<_>>(),
            "errors": if ok { Vec::new() } else { vec!["strict_mode: warnings are errors".to_string()] },
            "warnings": warnings,
        }));
    } else {
        let mut out = String::new();
        for w in &warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out.push_str(&format!(
            "config {}: {} file(s), {} plugin(s) loaded, {} warning(s)\n",
            if ok {
                "ok"
            } else {
                "rejected (strict_mode: warnings are errors)"
            },
            rt.config.files.len(),
            rt.registry.plugins().count(),
            warnings.len()
        ));
        output::text(&out);
    }
    if ok { Ok(()) } else { Err(CliError::Exit(78)) }
}
