//! The OpenAPI documents of a real runtime, checked by a real validator:
//! `openapi-spec-validator` from PyPI, installed into `target/pyenv` by
//! `scripts/python-tools` (which `.ci/run` calls; this test calls it too when
//! the venv is missing, so a fresh clone's `cargo test` still validates).

use std::path::{Path, PathBuf};
use std::process::Command;

use ductile::http::openapi;
use ductile::runtime::Runtime;

use crate::support::TestDir;
use crate::tools::both;

/// The validator's path, installing it first when the venv is not complete.
fn validator() -> PathBuf {
    crate::tools::tool("openapi-spec-validator")
}

fn validate(files: &[&Path]) {
    let out = Command::new(validator())
        .args(["--schema", "3.1"])
        .args(files)
        .output()
        .unwrap();
    let text = both(&out);
    assert!(
        out.status.success(),
        "openapi-spec-validator refused a document:\n{text}"
    );
    for f in files {
        assert!(
            text.contains(&format!("{}: OK", f.display())),
            "no verdict for {}:\n{text}",
            f.display()
        );
    }
}

#[test]
fn served_openapi_documents_are_valid_openapi_3_1() {
    let dir = TestDir::new("openapi");
    dir.echo();
    dir.fixture("schemas");
    dir.config("plugins:\n  echo: {}\n  schemas: {}\n  mailer:\n    uses: schemas\n");
    let rt = Runtime::load(&dir.path.join("config.yaml")).unwrap();

    let doc = openapi::document(&rt);
    for path in [
        "/plugin/{plugin}/{command}",
        "/plugin/echo/poll",
        "/plugin/schemas/fetch",
        "/plugin/schemas/send",
        "/plugin/mailer/send",
        "/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(
        doc["paths"]["/plugin/mailer/send"]["post"]["operationId"],
        "mailer__send"
    );
    let mut files = vec![dir.write("openapi.json", &doc.to_string())];
    for plugin in ["echo", "schemas", "mailer"] {
        let scoped = openapi::plugin_document(&rt, plugin).unwrap();
        files.push(dir.write(&format!("{plugin}.openapi.json"), &scoped.to_string()));
    }
    assert!(openapi::plugin_document(&rt, "nope").is_none());
    assert!(openapi::plugin_detail(&rt, "nope").is_none());
    assert_eq!(
        openapi::plugin_detail(&rt, "mailer").unwrap()["commands"][1]["input_schema"]["required"],
        serde_json::json!(["to"])
    );
    validate(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
}
