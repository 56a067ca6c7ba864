"""Tests of ductile_plugin (python3 -m unittest, from this directory)."""

import io
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ductile_plugin import (  # noqa: E402
    ConfigError,
    PermanentError,
    Plugin,
    Stopwatch,
    error,
    event,
    ok,
)


def raw(command, **fields):
    body = {"protocol": 2, "job_id": "j", "command": command, "config": {}, "state": {}, "context": {}}
    body.update(fields)
    return json.dumps(body).encode()


def plugin():
    p = Plugin("demo")

    @p.command("health")
    def health(req):
        return ok("healthy")

    @p.command("poll")
    def poll(req):
        print("chatter from a handler")
        return ok("polled", events=[event("demo.polled", {"n": 1}, dedupe_key=7)], state_updates={"n": 1})

    @p.command("needs")
    def needs(req):
        return ok(req.require("url"))

    @p.command("never")
    def never(req):
        raise PermanentError("cannot work")

    @p.command("buggy")
    def buggy(req):
        return {}["missing"]

    @p.command("lookup")
    def lookup(req):
        return ok(req.value("text", "none"))

    return p


class ResponsesTest(unittest.TestCase):
    def test_ok_and_error_shapes(self):
        self.assertEqual(ok("done"), {"status": "ok", "result": "done"})
        self.assertEqual(error("bad", retry=False), {"status": "error", "error": "bad", "retry": False})
        self.assertEqual(event("a.b"), {"type": "a.b", "payload": {}})
        self.assertEqual(event("a.b", {"x": 1}, dedupe_key=3)["dedupe_key"], "3")
        with self.assertRaises(TypeError):
            ok("x", state_updates=[1])

    def test_stopwatch_spans(self):
        sw = Stopwatch()
        with sw.span("demo.work", count=2) as span:
            span["bytes"] = 10
        response = ok("x", stopwatch=sw)
        (sub,) = response["ductile_stopwatch_subs"]
        self.assertEqual((sub["name"], sub["count"], sub["bytes"], sub["status"]), ("demo.work", 2, 10, "ok"))
        self.assertGreaterEqual(sub["dur_ns"], 0)


class RespondTest(unittest.TestCase):
    def test_dispatches_by_command(self):
        response, code, _ = plugin().respond(raw("poll"))
        self.assertEqual(code, 0)
        self.assertEqual(response["state_updates"], {"n": 1})

    def test_unknown_command_is_refused_permanently(self):
        response, code, _ = plugin().respond(raw("nope"))
        self.assertEqual(code, 0)
        self.assertEqual(response["status"], "error")
        self.assertFalse(response["retry"])
        self.assertIn("unknown command `nope`", response["error"])

    def test_protocol_mismatch_exits_78(self):
        response, code, message = plugin().respond(raw("health", protocol=3))
        self.assertEqual((response, code), (None, 78))
        self.assertIn("unsupported protocol 3", message)
        self.assertEqual(plugin().respond(b"not json")[1], 78)

    def test_config_error_exits_78_and_is_not_retried(self):
        response, code, message = plugin().respond(raw("needs"))
        self.assertEqual(code, 78)
        self.assertFalse(response["retry"])
        self.assertIn("`url`", message)
        self.assertEqual(plugin().respond(raw("needs", config={"url": "u"}))[0]["result"], "u")

    def test_permanent_and_unexpected_failures(self):
        self.assertFalse(plugin().respond(raw("never"))[0]["retry"])
        response, code, _ = plugin().respond(raw("buggy"))
        self.assertEqual((response["status"], response["retry"], code), ("error", True, 0))
        self.assertIn("KeyError", response["error"])

    def test_value_reads_payload_then_context(self):
        p = plugin()
        self.assertEqual(p.respond(raw("lookup", event={"payload": {"text": "p"}}, context={"text": "c"}))[0]["result"], "p")
        self.assertEqual(p.respond(raw("lookup", event={"payload": {}}, context={"text": "c"}))[0]["result"], "c")
        self.assertEqual(p.respond(raw("lookup"))[0]["result"], "none")


class MainTest(unittest.TestCase):
    def test_main_writes_one_json_line_and_keeps_prints_off_stdout(self):
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stderr
        sys.stderr = err
        try:
            plugin().main(stdin=io.BytesIO(raw("poll")), stdout=out)
        finally:
            sys.stderr = saved
        self.assertEqual(json.loads(out.getvalue())["result"], "polled")
        self.assertEqual(out.getvalue().count("\n"), 1)
        self.assertIn("chatter from a handler", err.getvalue())

    def test_main_exits_78_on_a_bad_request(self):
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stderr
        sys.stderr = err
        try:
            with self.assertRaises(SystemExit) as exit_:
                plugin().main(stdin=io.BytesIO(raw("health", protocol=1)), stdout=out)
        finally:
            sys.stderr = saved
        self.assertEqual(exit_.exception.code, 78)
        self.assertEqual(out.getvalue(), "")


if __name__ == "__main__":
    unittest.main()
