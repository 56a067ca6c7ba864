//! systemd's service notification protocol, spoken without libsystemd: plain
//! datagrams to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for
//! the abstract namespace). The daemon says `READY=1` once it holds the lock,
//! has recovered and listens; `RELOADING=1` with `MONOTONIC_USEC=` and then
//! `READY=1` around a reload; `STOPPING=1` when it stops; `STATUS=` lines for
//! `systemctl status`.
//!
//! With `$WATCHDOG_USEC` set (systemd's `WatchdogSec=`), a watchdog thread
//! sends `WATCHDOG=1` every half of it, but only while the dispatcher and the
//! scheduler both prove they still turn: each bumps a [`Beat`] every time its
//! loop comes round, and caps its sleep so that it comes round at least every
//! quarter of the watchdog time. A loop that stops turning stops the pings,
//! and the service manager restarts the daemon. Without the variables nothing
//! here costs anything: no socket, no thread, no extra wake-up.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded, select};

/// Where notifications go, read from `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A socket file.
    Path(std::path::PathBuf),
    /// A name in the abstract namespace (`@name`; the `@` is not part of it).
    Abstract(Vec<u8>),
}

/// Reads `$NOTIFY_SOCKET`'s value; `None` when it names no socket.
pub fn parse_address(value: &str) -> Option<Address> {
    if let Some(name) = value.strip_prefix('@') {
        return (!name.is_empty()).then(|| Address::Abstract(name.as_bytes().to_vec()));
    }
    // systemd only ever passes absolute paths; anything else is not for us
    // (a `vsock:` address, for instance, is a VM's, which we do not speak).
    value
        .starts_with('/')
        .then(|| Address::Path(std::path::PathBuf::from(value)))
}

/// The ping period from `$WATCHDOG_USEC` and `$WATCHDOG_PID`: half the
/// watchdog time, as systemd recommends; `None` when no watchdog is asked for
/// or it is meant for another process (`WATCHDOG_PID` is not ours).
pub fn ping_period(usec: Option<&str>, for_pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = for_pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The daemon's side of the protocol; every method is a no-op when systemd
/// did not ask for notifications.
#[derive(Debug)]
pub struct Notify {
    target: Option<(UnixDatagram, SocketAddr)>,
    period: Option<Duration>,
    /// Whether a failed send was logged already (one warning, not one per ping).
    warned: AtomicBool,
}

impl Notify {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notify {
        let var = |name: &str| std::env::var(name).ok();
        let Some(address) = var("NOTIFY_SOCKET").as_deref().and_then(parse_address) else {
            return Notify::disabled();
        };
        let period = ping_period(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match open(&address) {
            Ok(target) => Notify {
                target: Some(target),
                period,
                warned: AtomicBool::new(false),
            },
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET is set but unusable ({e}); not notifying the service manager"
                );
                Notify::disabled()
            }
        }
    }

    /// Sends nothing, ever.
    pub fn disabled() -> Notify {
        Notify {
            target: None,
            period: None,
            warned: AtomicBool::new(false),
        }
    }

    /// How often the watchdog wants a ping, when it is on.
    pub fn ping_period(&self) -> Option<Duration> {
        self.period
    }

    /// Sends one datagram of `KEY=value` lines. A failure is logged once and
    /// otherwise ignored: the service manager being gone must not stop us.
    pub fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("cannot notify the service manager: {e}");
            }
        }
    }

    /// `STATUS=`: what `systemctl status` shows.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` stamped with CLOCK_MONOTONIC, as systemd requires.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the config",
            crate::sys::monotonic_usec()
        ));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }
}

fn open(address: &Address) -> io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match address {
        Address::Path(p) => SocketAddr::from_pathname(p)?,
        Address::Abstract(name) => SocketAddr::from_abstract_name(name)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// A status line must stay one line: a newline would start another variable.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Proof that a loop still turns: its thread bumps it each time round, and
/// sleeps no longer than [`Beat::every`] between bumps.
#[derive(Debug)]
pub struct Beat {
    name: &'static str,
    every: Duration,
    origin: Instant,
    /// Milliseconds after `origin` of the last bump.
    last: AtomicU64,
}

impl Beat {
    /// A beat for loop `name` that must come round every `every`.
    pub fn new(name: &'static str, every: Duration) -> Beat {
        Beat {
            name,
            every,
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// The loop came round.
    pub fn bump(&self) {
        let ms = self.origin.elapsed().as_millis();
        self.last
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The longest the loop may sleep between bumps.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// `wait`, shortened so an optional beat's loop comes round in time.
    pub fn slice(beat: Option<&Beat>, wait: Duration) -> Duration {
        beat.map_or(wait, |b| wait.min(b.every))
    }

    /// How long ago the loop last came round.
    fn age(&self) -> Duration {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// The beats the watchdog watches: `None` each when there is no watchdog.
#[derive(Debug, Default)]
pub struct Beats {
    /// The dispatcher's loop.
    pub dispatch: Option<Arc<Beat>>,
    /// The scheduler's loop.
    pub scheduler: Option<Arc<Beat>>,
}

impl Beats {
    /// Beats that come round every half of `period` (a quarter of the
    /// watchdog time), when there is a period.
    pub fn for_period(period: Option<Duration>) -> Beats {
        let beat = |name| period.map(|p| Arc::new(Beat::new(name, p / 2)));
        Beats {
            dispatch: beat("dispatch"),
            scheduler: beat("scheduler"),
        }
    }

    fn all(&self) -> Vec<Arc<Beat>> {
        [&self.dispatch, &self.scheduler]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// The watchdog thread; stops when [`Watchdog::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct Watchdog {
    // Dropped first: the thread's select sees the channel close and returns.
    stop_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging every [`Notify::ping_period`] while every beat is fresh;
    /// without a period, starts nothing.
    pub fn start(notify: Arc<Notify>, beats: &Beats) -> io::Result<Watchdog> {
        let (Some(period), beats) = (notify.ping_period(), beats.all()) else {
            return Ok(Watchdog {
                stop_tx: None,
                thread: None,
            });
        };
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let thread = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut stalled: Option<&'static str> = None;
                loop {
                    stalled = check(&notify, &beats, period, stalled);
                    select! {
                        recv(stop_rx) -> _ => return,
                        default(period) => {}
                    }
                }
            })?;
        Ok(Watchdog {
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops pinging (the daemon is stopping: the service manager's stop
    /// timeout applies from here, not the watchdog).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop_tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One look at the beats: a ping when all are fresh (a beat is stale once it
/// is older than a ping period: it missed two of its own rounds); otherwise a
/// status line and an error log when a loop first stalls, and another when it
/// turns again. Returns the stalled loop, if any.
fn check(
    notify: &Notify,
    beats: &[Arc<Beat>],
    period: Duration,
    was: Option<&'static str>,
) -> Option<&'static str> {
    let stale = beats
        .iter()
        .map(|b| (b.name, b.age()))
        .find(|(_, age)| *age > period);
    match (stale, was) {
        (None, None) => notify.send("WATCHDOG=1"),
        (None, Some(name)) => {
            log::warn!("watchdog: the {name} loop turns again; pinging the service manager again");
            notify.send("WATCHDOG=1\nSTATUS=running");
        }
        (Some((name, age)), None) => {
            let why = format!(
                "watchdog: the {name} loop has not come round for {}ms; withholding WATCHDOG=1 so the service manager restarts ductile",
                age.as_millis()
            );
            log::error!("{why}");
            notify.status(&why);
        }
        (Some(_), Some(_)) => {}
    }
    stale.map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        assert_eq!(
            parse_address("/run/systemd/notify"),
            Some(Address::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_address("@ductile/notify"),
            Some(Address::Abstract(b"ductile/notify".to_vec()))
        );
        assert_eq!(parse_address("@"), None);
        assert_eq!(parse_address(""), None);
        assert_eq!(parse_address("vsock:2:1234"), None);
        assert_eq!(parse_address("relative/sock"), None);
    }

    #[test]
    fn the_ping_period_is_half_the_watchdog_time_and_only_for_us() {
        assert_eq!(
            ping_period(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            ping_period(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(ping_period(Some("30000000"), Some("8"), 7), None);
        assert_eq!(ping_period(Some("0"), None, 7), None);
        assert_eq!(ping_period(Some("soon"), None, 7), None);
        assert_eq!(ping_period(None, Some("7"), 7), None);
    }

    #[test]
    fn a_slice_is_capped_by_the_beat() {
        let b = Beat::new("dispatch", Duration::from_millis(250));
        assert_eq!(
            Beat::slice(Some(&b), Duration::from_secs(3600)),
            Duration::from_millis(250)
        );
        assert_eq!(
            Beat::slice(Some(&b), Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        assert_eq!(
            Beat::slice(None, Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn status_lines_stay_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn a_stale_beat_withholds_the_ping_and_a_fresh_one_resumes_it() {
        let dir = std::env::temp_dir().join(format!("ductile-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_nonblocking(true).unwrap();
        let notify = Notify {
            target: Some(open(&Address::Path(path.clone())).unwrap()),
            period: Some(Duration::from_secs(1)),
            warned: AtomicBool::new(false),
        };
        let fresh = Arc::new(Beat::new("dispatch", Duration::from_millis(500)));
        fresh.bump();
        // A beat last bumped ten seconds ago (its origin, and so its one
        // bump at 0ms, lie in the past).
        let old = Beat {
            origin: Instant::now().checked_sub(Duration::from_secs(10)).unwrap(),
            ..Beat::new("scheduler", Duration::from_millis(500))
        };
        let stale_beats = vec![fresh.clone(), Arc::new(old)];
        let mut buf = [0u8; 512];
        let mut next = || {
            let n = rx.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let period = Duration::from_secs(1);
        assert_eq!(
            check(&notify, std::slice::from_ref(&fresh), period, None),
            None
        );
        assert_eq!(next(), "WATCHDOG=1");
        assert_eq!(
            check(&notify, &stale_beats, period, None),
            Some("scheduler")
        );
        assert!(next().starts_with("STATUS=watchdog: the scheduler loop has not come round"));
        assert_eq!(
            check(&notify, &stale_beats, period, Some("scheduler")),
            Some("scheduler")
        );
        assert_eq!(check(&notify, &[fresh], period, Some("scheduler")), None);
        assert_eq!(next(), "WATCHDOG=1\nSTATUS=running");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
