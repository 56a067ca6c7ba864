#!/usr/bin/env python3
"""text_stats: the teaching plugin of docs/PLUGIN_AUTHORING.md.

poll   observes one file and remembers what it saw as a snapshot (a fact);
handle turns an upstream event's text into counts and a downstream event;
health says whether the plugin can do its job, and changes nothing.
"""

import os
import sys

# The helper sits next to this file in a scaffold, or in plugins/_lib beside the template.
# A plugin must not write into its own directory at run time: no .pyc files.
sys.dont_write_bytecode = True
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_here, os.path.join(os.path.dirname(_here), "_lib")]

from ductile_plugin import ConfigError, Plugin, event, ok  # noqa: E402

PLUGIN = "text_stats"
DEFAULT_MAX_TEXT_BYTES = 64 * 1024

plugin = Plugin(PLUGIN)


def snapshot(path, exists, sha256, size):
    """The full snapshot poll returns: the same four keys every time, built only
    from what was observed (no run timestamps, no counters), so an unchanged
    file gives byte-identical snapshots."""
    return {"path": path, "exists": exists, "sha256": sha256, "size": size}


def observe(path, max_text_bytes):
    """(snapshot, text) for the file at ``path``; text is capped at max_text_bytes."""
    if not path:
        return snapshot(None, False, None, 0), ""
    # Imported here: hashlib loads OpenSSL, which health and handle never need
    # (a plugin is a fresh process per job, so start-up time is per job).
    import hashlib

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return snapshot(path, False, None, 0), ""
    text = data[:max_text_bytes].decode("utf-8", errors="replace")
    return snapshot(path, True, hashlib.sha256(data).hexdigest(), len(data)), text


def max_text_bytes(req):
    value = req.config.get("max_text_bytes", DEFAULT_MAX_TEXT_BYTES)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError("max_text_bytes must be a non-negative integer, got %r" % (value,))
    return value


def counts(text):
    return {"words": len(text.split()), "lines": len(text.splitlines()), "chars": len(text)}


@plugin.command("poll")
def poll(req):
    snap, text = observe(req.config.get("path"), max_text_bytes(req))
    events = []
    if snap["exists"] and snap["sha256"] != req.state.get("sha256"):
        payload = {"path": snap["path"], "sha256": snap["sha256"], "size": snap["size"], "text": text}
        # The hash as dedupe key: a retried poll cannot announce the same content twice.
        events.append(event(PLUGIN + ".changed", payload, dedupe_key=snap["sha256"]))
    if not snap["path"]:
        summary = "no path configured"
    elif not snap["exists"]:
        summary = "%s does not exist" % snap["path"]
    else:
        summary = "%s %s" % (snap["path"], "changed" if events else "unchanged")
    return ok(summary, events=events, state_updates=snap)


@plugin.command("handle")
def handle(req):
    # Payload first, then the pipeline's baggage: works whatever step precedes it.
    text = req.value("text", "")
    if not isinstance(text, str):
        text = str(text)
    c = counts(text)
    payload = dict(c, text=text)
    return ok("counted %d words" % c["words"], events=[event(PLUGIN + ".counted", payload)])


@plugin.command("health")
def health(req):
    path = req.config.get("path")
    if path and os.path.exists(path) and not os.access(path, os.R_OK):
        raise ConfigError("%s exists but cannot be read" % path)
    return ok("healthy" if not path else "healthy (watching %s)" % path)


if __name__ == "__main__":
    plugin.main()
