"""Tests of text_stats: the snapshot constructor, the response shapes, and one
real run of the entrypoint (python3 -m unittest, from this directory)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_here, os.path.join(os.path.dirname(_here), "_lib")]

import run  # noqa: E402


def request(command, config=None, state=None, event=None, context=None):
    raw = {"protocol": 2, "job_id": "test", "command": command, "config": config or {},
           "state": state or {}, "context": context or {}, "deadline_at": "2026-01-01T00:00:00Z"}
    if event is not None:
        raw["event"] = event
    return json.dumps(raw).encode()


class TextStatsTest(unittest.TestCase):
    def respond(self, *args, **kwargs):
        response, code, message = run.plugin.respond(request(*args, **kwargs))
        self.assertEqual(code, 0, message)
        return response

    def test_snapshot_has_the_same_keys_every_time(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "notes.txt")
            missing = self.respond("poll", config={"path": path})["state_updates"]
            with open(path, "w") as f:
                f.write("one two three\n")
            present = self.respond("poll", config={"path": path})["state_updates"]
        self.assertEqual(sorted(missing), sorted(present))
        self.assertEqual(present["size"], 14)
        self.assertFalse(missing["exists"])

    def test_poll_emits_only_on_change(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "notes.txt")
            with open(path, "w") as f:
                f.write("hello world")
            first = self.respond("poll", config={"path": path})
            self.assertEqual([e["type"] for e in first["events"]], ["text_stats.changed"])
            self.assertEqual(first["events"][0]["payload"]["text"], "hello world")
            second = self.respond("poll", config={"path": path}, state=first["state_updates"])
            self.assertNotIn("events", second)
            self.assertEqual(second["state_updates"], first["state_updates"])

    def test_handle_counts_payload_then_context(self):
        from_payload = self.respond("handle", event={"type": "x", "payload": {"text": "a b\nc"}})
        self.assertEqual(from_payload["events"][0]["payload"]["words"], 3)
        self.assertEqual(from_payload["events"][0]["payload"]["lines"], 2)
        from_context = self.respond("handle", event={"type": "x", "payload": {}}, context={"text": "a"})
        self.assertEqual(from_context["result"], "counted 1 words")

    def test_health_keeps_no_state(self):
        self.assertNotIn("state_updates", self.respond("health"))

    def test_bad_config_is_permanent(self):
        response, code, _ = run.plugin.respond(request("poll", config={"max_text_bytes": "lots"}))
        self.assertEqual(code, 78)
        self.assertFalse(response["retry"])

    def test_the_entrypoint_speaks_the_protocol(self):
        out = subprocess.run([os.path.join(_here, "run.py")], input=request("health"),
                             capture_output=True, check=True)
        self.assertEqual(json.loads(out.stdout)["status"], "ok")


if __name__ == "__main__":
    unittest.main()
