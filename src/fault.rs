//! Crash points for the crash-safety tests: with the `fault-injection`
//! feature (which only `make test` enables) and `DUCTILE_FAULT=<point>:<plugin>`
//! in the environment, the process aborts at that point while it handles a
//! job of that plugin, as a power cut or `kill -9` would stop it there.
//! Without the feature every point compiles to nothing.

/// Where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// In a completion's transaction: the job's outcome and its routed
    /// children written, not yet committed.
    ChildrenWritten,
    /// Right after a completion committed, before the worker goes on.
    Committed,
    /// After the plugin answered, before the completion transaction began.
    Answered,
}

#[cfg(feature = "fault-injection")]
impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::ChildrenWritten => "children_written",
            Point::Committed => "committed",
            Point::Answered => "answered",
        }
    }
}

/// Aborts the process if `DUCTILE_FAULT` names this point and `plugin`.
#[cfg(feature = "fault-injection")]
pub fn at(point: Point, plugin: &str) {
    static ARMED: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("DUCTILE_FAULT").ok()?;
        let (p, plugin) = spec.split_once(':')?;
        Some((p.to_string(), plugin.to_string()))
    });
    if let Some((p, target)) = armed {
        if p == point.name() && target == plugin {
            log::error!(target: "fault", "injected crash at {p} for plugin {plugin}");
            std::process::abort();
        }
    }
}

/// Without the feature a crash point costs nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn at(_point: Point, _plugin: &str) {}
