//! Compiling one `schedules:` entry (`ScheduleConf`, as written) into a
//! [`Schedule`]: trigger parsing, jitter, window, timezone, `not_on`, policies,
//! the refusal of cron schedules that can never fire, and the fingerprint that
//! tells a changed definition from an unchanged one.
//!
//! Owns: every rule a schedule must satisfy and the wording of its errors.
//! Must not: read the clock, or decide when a schedule is due (that is `expr`).

use std::fmt;
use std::time::Duration;

use chrono::Timelike;
use chrono_tz::Tz;

use crate::clock::{format_ts, parse_ts};
use crate::config::ScheduleConf;
use crate::config::duration;
use crate::scheduler::cron::CronExpr;
use crate::scheduler::expr::{CatchUp, IfRunning, Schedule, Trigger};
use crate::scheduler::window::{self, Gate, Window};

/// A schedule entry that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// Where the entry was declared (`plugins.echo.schedules[0]`).
    pub origin: String,
    /// What is wrong, one line.
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for ScheduleError {}

/// The shortest `every` interval accepted.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Validates one schedule entry of `plugin` into a [`Schedule`].
pub fn compile(plugin: &str, conf: &ScheduleConf) -> Result<Schedule, ScheduleError> {
    let id = non_empty_or(&conf.id, "default");
    let origin = if conf.origin.is_empty() {
        format!("plugins.{plugin}.schedules.{id}")
    } else {
        conf.origin.clone()
    };
    let fail = |message: String| ScheduleError {
        origin: origin.clone(),
        message,
    };

    let trigger = compile_trigger(conf).map_err(fail)?;
    let jitter = match &conf.jitter {
        Some(text) => duration::parse(text).map_err(|e| fail(format!("jitter: {e}")))?,
        None => Duration::ZERO,
    };
    let window = match &conf.only_between {
        Some(text) => Some(
            Window::parse(text)
                .map_err(|e| fail(format!("invalid only_between `{}`: {e}", text.trim())))?,
        ),
        None => None,
    };
    let tz = match &conf.timezone {
        Some(text) => window::parse_timezone(text).map_err(fail)?,
        None => Tz::UTC,
    };
    let mut not_on = [false; 7];
    for day in &conf.not_on {
        let index = window::parse_weekday(day).map_err(|e| fail(format!("not_on: {e}")))?;
        not_on[index] = true;
    }
    if not_on.iter().all(|&off| off) {
        return Err(fail(
            "not_on excludes every day of the week, so the schedule would never run".to_string(),
        ));
    }
    if let Trigger::Cron(expr) = &trigger {
        let gate = Gate {
            tz,
            window: window.as_ref(),
            not_on: &not_on,
        };
        if let Some(why) = cron_never_fires(expr, &gate) {
            return Err(fail(format!("cron `{expr}` never fires: {why}")));
        }
    }
    let catch_up = match conf.catch_up.as_deref().map(str::trim) {
        None | Some("skip") => CatchUp::Skip,
        Some("run_once") => CatchUp::RunOnce,
        Some("run_all") => CatchUp::RunAll,
        Some(other) => {
            return Err(fail(format!(
                "invalid catch_up `{other}`: expected skip, run_once or run_all"
            )));
        }
    };
    let if_running = match conf.if_running.as_deref().map(str::trim) {
        None | Some("skip") => IfRunning::Skip,
        Some("queue") => IfRunning::Queue,
        Some("cancel") => IfRunning::Cancel,
        Some(other) => {
            return Err(fail(format!(
                "invalid if_running `{other}`: expected skip, queue or cancel"
            )));
        }
    };
    let payload = match &conf.payload {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        other => other.clone(),
    };

    let mut schedule = Schedule {
        plugin: plugin.to_string(),
        id: id.to_string(),
        command: non_empty_or(&conf.command, "poll").to_string(),
        payload,
        trigger,
        jitter,
        window,
        tz,
        not_on,
        catch_up,
        if_running,
        fingerprint: String::new(),
    };
    schedule.fingerprint = fingerprint(&schedule);
    Ok(schedule)
}

/// Why a cron schedule can never fire under its gate, when that can be told
/// from the fields alone.
///
/// Days and times are independent in cron, and `not_on` and the window judge
/// an instant by its own local day and wall time, so the schedule fires iff
/// some reachable weekday is allowed and some cron time lies in the window.
/// In a zone with DST a cron time inside a spring-forward gap moves to the
/// gap's end, which may be inside the window, so there a time up to
/// [`MAX_GAP_MINUTES`] before the window opens counts as a possible hit (such a
/// schedule that still never fires ends its search after one cycle).
fn cron_never_fires(expr: &CronExpr, gate: &Gate<'_>) -> Option<String> {
    if !expr.matches_some_date() {
        return Some("no month it allows has a day it allows".to_string());
    }
    let allowed = (0..7).any(|d| expr.reachable_weekdays() & (1 << d) != 0 && !gate.not_on[d]);
    if !allowed {
        return Some("not_on excludes every weekday it runs on".to_string());
    }
    if let Some(w) = gate.window {
        let margin = if has_fixed_offset(gate.tz) {
            0
        } else {
            MAX_GAP_MINUTES
        };
        let opens = w.start().hour() * 60 + w.start().minute();
        let possible = expr.times_of_day().any(|(h, m)| {
            let before_opening = (opens + 1440 - (h * 60 + m)) % 1440;
            chrono::NaiveTime::from_hms_opt(h, m, 0).is_some_and(|t| w.contains(t))
                || (1..=margin).contains(&before_opening)
        });
        if !possible {
            return Some(format!("none of its times falls inside only_between `{w}`"));
        }
    }
    None
}

/// Longer than any spring-forward gap in the tz database (two hours, in
/// Antarctica/Troll), with room to spare.
const MAX_GAP_MINUTES: u32 = 180;

/// Zones that never change their UTC offset.
fn has_fixed_offset(tz: Tz) -> bool {
    let name = tz.name();
    name.starts_with("Etc/")
        || matches!(
            name,
            "UTC" | "UCT" | "GMT" | "GMT0" | "GMT+0" | "GMT-0" | "Greenwich" | "Universal" | "Zulu"
        )
}

fn non_empty_or<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.trim().is_empty() {
        default
    } else {
        text.trim()
    }
}

/// Exactly one of `every`, `cron`, `at`, `after`, parsed.
fn compile_trigger(conf: &ScheduleConf) -> Result<Trigger, String> {
    let set: Vec<&str> = [
        ("every", &conf.every),
        ("cron", &conf.cron),
        ("at", &conf.at),
        ("after", &conf.after),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some())
    .map(|(name, _)| name)
    .collect();
    if set.len() > 1 {
        return Err(format!(
            "several triggers ({}): set exactly one of every, cron, at or after",
            set.join(", ")
        ));
    }
    if let Some(text) = &conf.every {
        let interval = match text.trim().to_ascii_lowercase().as_str() {
            "hourly" => Duration::from_secs(3600),
            "daily" => Duration::from_secs(86_400),
            "weekly" => Duration::from_secs(7 * 86_400),
            "monthly" => Duration::from_secs(30 * 86_400),
            _ => duration::parse(text).map_err(|e| format!("every: {e}"))?,
        };
        if interval < MIN_INTERVAL {
            return Err(format!(
                "every `{}` is shorter than the 1s minimum",
                text.trim()
            ));
        }
        return Ok(Trigger::Every(interval));
    }
    if let Some(text) = &conf.cron {
        return CronExpr::parse(text)
            .map(Trigger::Cron)
            .map_err(|e| format!("invalid cron expression `{}`: {e}", text.trim()));
    }
    if let Some(text) = &conf.at {
        return parse_ts(text.trim()).map(Trigger::At).ok_or_else(|| {
            format!(
                "invalid at `{}`: expected an RFC 3339 timestamp such as 2026-03-15T14:00:00Z",
                text.trim()
            )
        });
    }
    if let Some(text) = &conf.after {
        return duration::parse(text)
            .map(Trigger::After)
            .map_err(|e| format!("after: {e}"));
    }
    Err("no trigger: set exactly one of every, cron, at or after".to_string())
}

/// BLAKE3 of a canonical text of everything that defines the schedule, so that
/// equivalent spellings (`hourly`/`1h`, `@daily`/`0 0 * * *`, `7`/`sunday`)
/// hash alike and any real change does not.
fn fingerprint(s: &Schedule) -> String {
    let trigger = match &s.trigger {
        Trigger::Every(d) => format!("every {}", d.as_nanos()),
        Trigger::Cron(expr) => format!("cron {}", expr.canonical()),
        Trigger::At(t) => format!("at {}", format_ts(*t)),
        Trigger::After(d) => format!("after {}", d.as_nanos()),
    };
    let mut payload = String::new();
    canonical_json(&s.payload, &mut payload);
    let not_on: String = s
        .not_on
        .iter()
        .map(|&off| if off { '1' } else { '0' })
        .collect();
    let text = format!(
        "v1\nplugin {}\nid {}\ncommand {}\npayload {payload}\n{trigger}\njitter {}\nwindow {}\ntz {}\nnot_on {not_on}\ncatch_up {}\nif_running {}\n",
        s.plugin,
        s.id,
        s.command,
        s.jitter.as_nanos(),
        s.window.map_or_else(|| "-".to_string(), |w| w.to_string()),
        s.tz.name(),
        s.catch_up.as_str(),
        s.if_running.as_str(),
    );
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// JSON with object keys sorted, independent of how serde_json orders maps.
fn canonical_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(value) = map.get(key) {
                    canonical_json(value, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::expr::tests::{build, check_err, check_next, conf, cron, every};

    #[test]
    fn defaults() {
        let s = compile(
            "echo",
            &ScheduleConf {
                every: Some("5m".to_string()),
                payload: serde_json::Value::Null,
                ..ScheduleConf::default()
            },
        )
        .unwrap();
        assert_eq!(s.plugin, "echo");
        assert_eq!(s.id, "default");
        assert_eq!(s.command, "poll");
        assert_eq!(s.payload, serde_json::json!({}));
        assert_eq!(s.trigger, Trigger::Every(Duration::from_secs(300)));
        assert_eq!(s.jitter, Duration::ZERO);
        assert_eq!(s.window, None);
        assert_eq!(s.tz, Tz::UTC);
        assert_eq!(s.not_on, [false; 7]);
        assert_eq!(s.catch_up, CatchUp::Skip);
        assert_eq!(s.if_running, IfRunning::Skip);
        assert!(!s.is_one_shot());
    }

    #[test]
    fn every_aliases_and_durations() {
        let check = |text: &str, secs: u64| {
            assert_eq!(
                build(&every(text)).trigger,
                Trigger::Every(Duration::from_secs(secs)),
                "{text}"
            );
        };
        check("hourly", 3600);
        check("Daily", 86_400);
        check("weekly", 7 * 86_400);
        check("monthly", 30 * 86_400);
        check("5m", 300);
        check("15m", 900);
        check("30m", 1800);
        check("2h", 7200);
        check("1s", 1);
        check("1h30m", 5400);
    }

    #[test]
    fn cron_that_the_gate_always_refuses_is_refused() {
        check_err(
            &ScheduleConf {
                not_on: vec!["sat".to_string(), "sun".to_string()],
                ..cron("0 9 * * 6,7")
            },
            "plugins.echo.schedules[0]: cron `0 9 * * 6,7` never fires: not_on excludes every weekday it runs on",
        );
        check_err(
            &ScheduleConf {
                not_on: vec!["mon".to_string()],
                ..cron("0 0 30 2 mon")
            },
            "plugins.echo.schedules[0]: cron `0 0 30 2 mon` never fires: not_on excludes every weekday it runs on",
        );
        // A date that can fall on any weekday survives any not_on.
        let c = ScheduleConf {
            not_on: ["sun", "mon", "tue", "wed", "thu", "sat"]
                .map(str::to_string)
                .to_vec(),
            ..cron("0 0 13 * *")
        };
        check_next(&c, "2026-03-14T00:00:00Z", Some("2026-11-13T00:00:00Z"));
        // One cron time inside the window is enough.
        let c = ScheduleConf {
            only_between: Some("22:00-06:00".to_string()),
            ..cron("0 3,12 * * *")
        };
        check_next(&c, "2026-03-02T04:00:00Z", Some("2026-03-03T03:00:00Z"));
    }

    #[test]
    fn catch_up_and_if_running_values() {
        let check = |catch_up: &str, if_running: &str, expected: (CatchUp, IfRunning)| {
            let c = ScheduleConf {
                catch_up: Some(catch_up.to_string()),
                if_running: Some(if_running.to_string()),
                ..every("5m")
            };
            let s = build(&c);
            assert_eq!((s.catch_up, s.if_running), expected);
        };
        check("skip", "skip", (CatchUp::Skip, IfRunning::Skip));
        check("run_once", "queue", (CatchUp::RunOnce, IfRunning::Queue));
        check("run_all", "cancel", (CatchUp::RunAll, IfRunning::Cancel));
        assert_eq!(CatchUp::RunOnce.as_str(), "run_once");
        assert_eq!(IfRunning::Cancel.as_str(), "cancel");
    }

    #[test]
    fn fingerprints() {
        let fp = |c: &ScheduleConf| build(c).fingerprint;
        let base = cron("0 9 * * 1-5");
        assert_eq!(fp(&base), fp(&base.clone()));
        assert_eq!(fp(&base).len(), 16);
        assert!(fp(&base).bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(fp(&base), fp(&cron("0 10 * * 1-5")));
        assert_eq!(fp(&cron("@daily")), fp(&cron("0 0 * * *")));
        assert_eq!(fp(&cron("0 0 * * 7")), fp(&cron("0 0 * * sun")));
        assert_eq!(fp(&every("hourly")), fp(&every("1h")));
        assert_ne!(fp(&every("1h")), fp(&every("2h")));
        let zoned = ScheduleConf {
            timezone: Some("Australia/Sydney".to_string()),
            ..base.clone()
        };
        assert_ne!(fp(&base), fp(&zoned));
        let payload_a = ScheduleConf {
            payload: serde_json::json!({"a": 1, "b": [1, {"c": 2, "d": 3}]}),
            ..base.clone()
        };
        let payload_b = ScheduleConf {
            payload: serde_json::json!({"b": [1, {"d": 3, "c": 2}], "a": 1}),
            ..base.clone()
        };
        let payload_c = ScheduleConf {
            payload: serde_json::json!({"a": 2}),
            ..base.clone()
        };
        assert_eq!(fp(&payload_a), fp(&payload_b));
        assert_ne!(fp(&payload_a), fp(&payload_c));
        let other_plugin = compile("other", &base).unwrap().fingerprint;
        assert_ne!(fp(&base), other_plugin);
    }

    #[test]
    fn trigger_display() {
        assert_eq!(build(&every("90m")).trigger.to_string(), "every 1h30m");
        assert_eq!(
            build(&cron("0  9 * * 1-5")).trigger.to_string(),
            "cron 0 9 * * 1-5"
        );
        let at = ScheduleConf {
            at: Some("2026-03-15T14:00:00Z".to_string()),
            ..conf()
        };
        assert_eq!(
            build(&at).trigger.to_string(),
            "at 2026-03-15T14:00:00.000000Z"
        );
    }

    #[test]
    fn error_messages_name_the_schedule() {
        check_err(
            &cron("61 * * * *"),
            "plugins.echo.schedules[0]: invalid cron expression `61 * * * *`: minute 61 out of range 0-59",
        );
        check_err(
            &conf(),
            "plugins.echo.schedules[0]: no trigger: set exactly one of every, cron, at or after",
        );
        check_err(
            &ScheduleConf {
                cron: Some("* * * * *".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: several triggers (every, cron): set exactly one of every, cron, at or after",
        );
        check_err(
            &every("5x"),
            "plugins.echo.schedules[0]: every: invalid duration `5x`: unknown unit `x` (use ms, s, m, h, d or w)",
        );
        check_err(
            &every("500ms"),
            "plugins.echo.schedules[0]: every `500ms` is shorter than the 1s minimum",
        );
        check_err(
            &ScheduleConf {
                at: Some("tomorrow".to_string()),
                ..conf()
            },
            "plugins.echo.schedules[0]: invalid at `tomorrow`: expected an RFC 3339 timestamp such as 2026-03-15T14:00:00Z",
        );
        check_err(
            &ScheduleConf {
                after: Some("soon".to_string()),
                ..conf()
            },
            "plugins.echo.schedules[0]: after: invalid duration `soon`: expected a number before `soon`",
        );
        check_err(
            &ScheduleConf {
                jitter: Some("1q".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: jitter: invalid duration `1q`: unknown unit `q` (use ms, s, m, h, d or w)",
        );
        check_err(
            &ScheduleConf {
                only_between: Some("08:00-08:00".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: invalid only_between `08:00-08:00`: start and end are equal, so the window would never open",
        );
        check_err(
            &ScheduleConf {
                only_between: Some("25:00-06:00".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: invalid only_between `25:00-06:00`: hour 25 out of range 0-23",
        );
        check_err(
            &ScheduleConf {
                timezone: Some("Mars/Base".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: unknown timezone `Mars/Base`",
        );
        check_err(
            &ScheduleConf {
                not_on: vec!["saturday".to_string(), "funday".to_string()],
                ..every("5m")
            },
            "plugins.echo.schedules[0]: not_on: unknown weekday `funday` (use sunday-saturday, sun-sat or 0-7)",
        );
        check_err(
            &ScheduleConf {
                not_on: ["0", "1", "2", "3", "4", "5", "6"]
                    .map(str::to_string)
                    .to_vec(),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: not_on excludes every day of the week, so the schedule would never run",
        );
        check_err(
            &ScheduleConf {
                catch_up: Some("sometimes".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: invalid catch_up `sometimes`: expected skip, run_once or run_all",
        );
        check_err(
            &ScheduleConf {
                if_running: Some("wait".to_string()),
                ..every("5m")
            },
            "plugins.echo.schedules[0]: invalid if_running `wait`: expected skip, queue or cancel",
        );
    }

    #[test]
    fn error_origin_falls_back_to_plugin_and_id() {
        let c = ScheduleConf {
            id: "nightly".to_string(),
            origin: String::new(),
            ..cron("bad")
        };
        assert_eq!(
            compile("echo", &c).unwrap_err().to_string(),
            "plugins.echo.schedules.nightly: invalid cron expression `bad`: expected 5 fields (minute hour day-of-month month day-of-week), found 1"
        );
    }
}
