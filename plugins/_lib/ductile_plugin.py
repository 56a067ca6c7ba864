"""ductile_plugin: write a ductile protocol v2 plugin in Python (standard library only).

A plugin is an executable that reads one JSON request on stdin, writes one JSON
response on stdout and exits. This module does the protocol part: it reads the
request to its end, checks the protocol version, calls the handler registered
for the command, and writes exactly one JSON object to stdout. Anything a
handler prints goes to stderr, so stray output can never corrupt the response.

    from ductile_plugin import Plugin, ok

    plugin = Plugin("greet")

    @plugin.command("health")
    def health(req):
        return ok("healthy")

    if __name__ == "__main__":
        plugin.main()

Copy this file next to your entrypoint (``ductile plugin new`` does) or keep
it in ``plugins/_lib/``; it has no dependencies beyond Python 3.8.
"""

import json
import sys
import time

PROTOCOL_VERSION = 2
EX_CONFIG = 78

__all__ = [
    "PROTOCOL_VERSION",
    "EX_CONFIG",
    "ConfigError",
    "PermanentError",
    "Plugin",
    "Request",
    "Stopwatch",
    "error",
    "event",
    "ok",
]


class ConfigError(Exception):
    """The plugin's config is wrong: exit 78, never retried."""


class PermanentError(Exception):
    """Retrying the same request cannot succeed: status error, retry false."""


def ok(result, events=None, state_updates=None, logs=None, stopwatch=None):
    """A successful response; ``result`` is a short human-readable summary."""
    response = {"status": "ok", "result": result}
    if events:
        response["events"] = list(events)
    if state_updates is not None:
        if not isinstance(state_updates, dict):
            raise TypeError("state_updates must be a dict (a full snapshot)")
        response["state_updates"] = state_updates
    if logs:
        response["logs"] = list(logs)
    if stopwatch is not None and stopwatch.spans:
        response["ductile_stopwatch_subs"] = stopwatch.spans
    return response


def error(message, retry=True, logs=None):
    """A failed response; ``retry=False`` when the same request can never succeed."""
    response = {"status": "error", "error": str(message), "retry": bool(retry)}
    if logs:
        response["logs"] = list(logs)
    return response


def event(event_type, payload=None, dedupe_key=None):
    """One event envelope for ``ok(events=[...])``: name it ``<plugin>.<past_tense_verb>``."""
    envelope = {"type": event_type, "payload": payload if payload is not None else {}}
    if dedupe_key is not None:
        envelope["dedupe_key"] = str(dedupe_key)
    return envelope


def log(message, level="info"):
    """One ``{level, message}`` entry for ``ok(logs=[...])``; stored with the job."""
    return {"level": level, "message": str(message)}


class Request:
    """The request envelope, with the lookups plugins need."""

    def __init__(self, raw):
        self.raw = raw
        self.protocol = raw.get("protocol")
        self.job_id = raw.get("job_id", "")
        self.command = raw.get("command", "")
        self.config = raw.get("config") or {}
        self.state = raw.get("state") or {}
        self.context = raw.get("context") or {}
        self.event = raw.get("event")
        self.deadline_at = raw.get("deadline_at")

    @property
    def payload(self):
        """The triggering event's payload (``{}`` when there is none)."""
        if isinstance(self.event, dict) and isinstance(self.event.get("payload"), dict):
            return self.event["payload"]
        return {}

    def value(self, name, default=None):
        """``name`` from the event payload, else from the pipeline context (baggage)."""
        for source in (self.payload, self.context):
            if source.get(name) is not None:
                return source[name]
        return default

    def require(self, key):
        """A config key that must be set; raises :class:`ConfigError` otherwise."""
        value = self.config.get(key)
        if value is None or value == "":
            raise ConfigError("config key `%s` is required" % key)
        return value


class Stopwatch:
    """Optional sub-spans (``ductile_stopwatch_subs``) for a handler's phases.

        sw = Stopwatch()
        with sw.span("greet.render") as span:
            span["count"] = 3
        return ok("done", stopwatch=sw)
    """

    def __init__(self):
        self.spans = []

    def span(self, name, **fields):
        return _Span(self, name, fields)


class _Span:
    def __init__(self, stopwatch, name, fields):
        self._stopwatch = stopwatch
        self._fields = dict(fields)
        self._fields["name"] = name

    def __enter__(self):
        self._start = time.perf_counter_ns()
        return self._fields

    def __exit__(self, exc_type, exc, tb):
        self._fields["dur_ns"] = time.perf_counter_ns() - self._start
        self._fields.setdefault("status", "err" if exc_type else "ok")
        self._stopwatch.spans.append(self._fields)
        return False


class Plugin:
    """Command name -> handler; :meth:`main` runs one request."""

    def __init__(self, name):
        self.name = name
        self.handlers = {}

    def command(self, name):
        """Decorator registering ``handler(request) -> response`` for command ``name``."""

        def register(handler):
            self.handlers[name] = handler
            return handler

        return register

    def respond(self, raw_bytes):
        """Runs one request given as bytes; returns ``(response or None, exit_code, message)``.

        This is the whole protocol, without touching stdin or stdout, so tests
        can call it directly.
        """
        try:
            raw = json.loads(raw_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return None, EX_CONFIG, "%s: stdin is not a protocol request: %s" % (self.name, e)
        if not isinstance(raw, dict):
            return None, EX_CONFIG, "%s: the request is not a JSON object" % self.name
        if raw.get("protocol") != PROTOCOL_VERSION:
            return None, EX_CONFIG, "%s: unsupported protocol %r: this plugin speaks protocol %d" % (
                self.name,
                raw.get("protocol"),
                PROTOCOL_VERSION,
            )
        req = Request(raw)
        handler = self.handlers.get(req.command)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return error("unknown command `%s` (this plugin knows %s)" % (req.command, known), retry=False), 0, None
        try:
            response = handler(req)
        except ConfigError as e:
            return error(str(e), retry=False), EX_CONFIG, "%s: %s" % (self.name, e)
        except PermanentError as e:
            return error(str(e), retry=False), 0, None
        except Exception as e:  # a handler bug is a retryable failure, not a crash
            return error("%s: %s: %s" % (req.command, type(e).__name__, e)), 0, None
        if not isinstance(response, dict) or response.get("status") not in ("ok", "error"):
            return error("%s returned %r, not ok(...) or error(...)" % (req.command, response), retry=False), 0, None
        return response, 0, None

    def main(self, stdin=None, stdout=None):
        """Reads stdin to its end, answers on stdout, exits with the right code."""
        stdin = stdin if stdin is not None else sys.stdin.buffer
        stdout = stdout if stdout is not None else sys.stdout
        raw = stdin.read()
        # Handlers that print() must not corrupt the one JSON response.
        sys.stdout = sys.stderr
        try:
            response, code, message = self.respond(raw)
        finally:
            sys.stdout = stdout
        if message:
            sys.stderr.write(message + "\n")
        if response is not None:
            stdout.write(json.dumps(response, separators=(",", ":"), sort_keys=False) + "\n")
            stdout.flush()
        if code:
            sys.exit(code)
