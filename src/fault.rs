//! Crash points for the crash-safety tests. A build with the `fault-injection`
//! feature kills its own process with SIGKILL, as `kill -9` would, when it
//! passes the point that `DUCTILE_FAULT=<point>[:<n>]` names, on the n-th pass
//! (the first when `:n` is left out). Nothing is flushed, unwound or committed
//! on the way down: what the ledger holds afterwards is what a crash at that
//! instant leaves.
//!
//! One point wedges instead of killing: `wedge-dispatcher` parks the
//! dispatcher thread for good, as a deadlock would, so the watchdog tests see
//! a daemon that is alive but no longer dispatches.
//!
//! Without the feature, [`hit`] is an empty function and neither the variable
//! nor the point names are in the binary; only the integration tests' build
//! turns the feature on (see docs/DECISIONS.md, "Crash points").

/// A place where an injected crash can happen, in the order a job meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A claimed job (its claim committed) whose plugin is not spawned yet.
    BeforeSpawn,
    /// The plugin answered and the routing plan is made; the completion
    /// transaction has not begun.
    AfterAnswer,
    /// Inside a settled in-process job (a `core.switch` decision, a pipeline
    /// root), written in an open transaction: the row is running, not yet settled.
    Settle,
    /// Inside the completion transaction, after the routed children are
    /// inserted and before the commit.
    ChildrenInserted,
    /// The completion (and the next claim made with it) committed; the
    /// worker has not gone on.
    AfterCommit,
    /// A restore kept a target's old file as `.pre-restore` and has not yet
    /// renamed the verified new one over it (once per file).
    RestoreSwap,
    /// The dispatcher, woken to carry out requests from other processes (each
    /// SIGUSR1; the first pass is at its start): it hangs here for good
    /// instead of dying.
    WedgeDispatcher,
}

/// Passes `point`: in a build with the feature, dies here if the point is armed
/// and this is the pass it names.
#[inline]
pub fn hit(point: Point) {
    #[cfg(feature = "fault-injection")]
    armed::hit(point);
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// Logs which point the environment armed (or why the setting is not
/// understood), so a test sees that its build has the feature before it relies
/// on a crash. Logs nothing without the feature or the variable.
pub fn announce() {
    #[cfg(feature = "fault-injection")]
    armed::announce();
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::Point;

    /// The variable that arms a point.
    const VAR: &str = "DUCTILE_FAULT";

    const ALL: [Point; 7] = [
        Point::BeforeSpawn,
        Point::AfterAnswer,
        Point::Settle,
        Point::ChildrenInserted,
        Point::AfterCommit,
        Point::RestoreSwap,
        Point::WedgeDispatcher,
    ];

    fn name(p: Point) -> &'static str {
        match p {
            Point::BeforeSpawn => "before-spawn",
            Point::AfterAnswer => "after-answer",
            Point::Settle => "settle",
            Point::ChildrenInserted => "children-inserted",
            Point::AfterCommit => "after-commit",
            Point::RestoreSwap => "restore-swap",
            Point::WedgeDispatcher => "wedge-dispatcher",
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Armed {
        point: Point,
        nth: u64,
    }

    /// Passes of the armed point so far (one point is armed per process).
    static PASSES: AtomicU64 = AtomicU64::new(0);
    static SETTING: OnceLock<Option<Result<Armed, String>>> = OnceLock::new();

    fn setting() -> &'static Option<Result<Armed, String>> {
        SETTING.get_or_init(|| std::env::var(VAR).ok().map(|v| parse(&v)))
    }

    fn parse(text: &str) -> Result<Armed, String> {
        let (point, nth) = match text.split_once(':') {
            Some((p, n)) => match n.parse::<u64>() {
                Ok(n) if n >= 1 => (p, n),
                _ => {
                    return Err(format!(
                        "{VAR}={text}: the pass after `:` is a number from 1"
                    ));
                }
            },
            None => (text, 1),
        };
        let known: Vec<&str> = ALL.iter().map(|p| name(*p)).collect();
        ALL.iter()
            .find(|p| name(**p) == point)
            .map(|&point| Armed { point, nth })
            .ok_or_else(|| {
                format!(
                    "{VAR}={text}: no such fault point (known: {})",
                    known.join(", ")
                )
            })
    }

    pub(super) fn announce() {
        match setting() {
            Some(Ok(a)) => {
                log::warn!(
                    "fault injection armed: the process {} at `{}`, pass {}",
                    if a.point == Point::WedgeDispatcher {
                        "wedges a thread"
                    } else {
                        "kills itself"
                    },
                    name(a.point),
                    a.nth
                )
            }
            Some(Err(why)) => log::error!("fault injection not armed: {why}"),
            None => {}
        }
    }

    pub(super) fn hit(point: Point) {
        let Some(Ok(armed)) = setting() else {
            return;
        };
        if armed.point != point {
            return;
        }
        if PASSES.fetch_add(1, Ordering::SeqCst) + 1 != armed.nth {
            return;
        }
        if point == Point::WedgeDispatcher {
            log::warn!(
                "fault injection: wedging this thread at `{}`, pass {}",
                name(point),
                armed.nth
            );
            // Parked for good: nothing unparks it, and a spurious wake-up
            // parks it again.
            loop {
                std::thread::park();
            }
        }
        log::warn!(
            "fault injection: killing this process at `{}`, pass {}",
            name(point),
            armed.nth
        );
        let _ = crate::sys::signal_process(crate::sys::pid(), libc::SIGKILL);
        // SIGKILL cannot be caught or ignored; should sending it fail, this
        // still ends the process without unwinding.
        std::process::abort();
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_setting_names_a_point_and_optionally_its_pass() {
            assert_eq!(
                parse("after-commit"),
                Ok(Armed {
                    point: Point::AfterCommit,
                    nth: 1
                })
            );
            assert_eq!(
                parse("settle:3"),
                Ok(Armed {
                    point: Point::Settle,
                    nth: 3
                })
            );
            assert_eq!(
                parse("settle:0").unwrap_err(),
                "DUCTILE_FAULT=settle:0: the pass after `:` is a number from 1"
            );
            assert_eq!(
                parse("commit").unwrap_err(),
                "DUCTILE_FAULT=commit: no such fault point (known: before-spawn, after-answer, settle, children-inserted, after-commit, restore-swap, wedge-dispatcher)"
            );
        }
    }
}
