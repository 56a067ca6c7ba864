//! A scratch config directory for tests, removed on drop.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use super::interpolate::Var;
use super::{ConfigError, Loaded, load_with_env};

/// A uniquely named temp directory holding a config tree.
pub(super) struct TempTree {
    /// Canonical path of the directory.
    pub(super) dir: PathBuf,
}

impl TempTree {
    /// Creates a fresh, uniquely named directory.
    pub(super) fn new() -> TempTree {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "ductile-config-{}-{n}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempTree {
            dir: fs::canonicalize(&dir).unwrap(),
        }
    }

    /// Writes `text` to `relative`, creating parent directories.
    pub(super) fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.dir.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    /// The absolute path of `relative` inside the tree.
    pub(super) fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// Loads `config.yaml` with variables from `vars` standing in for the process.
    pub(super) fn load_with(&self, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_with_env(&self.path("config.yaml"), &move |name: &str| {
            vars.get(name)
                .map_or(Var::Unset, |value| Var::Set(value.clone()))
        })
    }

    /// Loads `config.yaml` with no variables set.
    pub(super) fn load(&self) -> Result<Loaded, ConfigError> {
        self.load_with(&[])
    }

    /// The message of the error loading `config.yaml` must fail with.
    pub(super) fn error(&self, vars: &[(&str, &str)]) -> String {
        match self.load_with(vars) {
            Ok(_) => panic!("expected the config to be refused"),
            Err(error) => error.to_string(),
        }
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
