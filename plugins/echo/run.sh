#!/bin/sh
# echo: ductile's bundled smoke-test plugin (protocol v2), POSIX sh builtins only.
#
# The request is one line of compact JSON that starts with protocol, job_id and
# command, followed by config and then state, so pattern matching on the text is
# enough: the command is the first "command" string, and the message is the first
# "message" string inside config (top-level string values; default below).
# Strings are copied still JSON-escaped, so they can be pasted into the response.

DEFAULT_MESSAGE='hello from ductile'

fail() {
    printf 'echo: %s\n' "$1" >&2
    exit 78
}

# Sets REPLY to the raw, still-escaped contents of the JSON string whose text
# (just after the opening quote) starts at $1. Fails if it never closes.
json_string() {
    rest=$1
    REPLY=
    while :; do
        case $rest in
            *\"*) ;;
            *) return 1 ;;
        esac
        part=${rest%%\"*}
        rest=${rest#*\"}
        REPLY=$REPLY$part
        # An odd run of backslashes before the quote escapes it.
        tail=${part##*[!\\]}
        if [ $((${#tail} % 2)) -eq 1 ]; then
            REPLY=$REPLY\"
        else
            return 0
        fi
    done
}

IFS= read -r request || [ -n "$request" ] || fail "no request on stdin"

case $request in
    '{"protocol":2,'*) ;;
    *) fail "unsupported request: this plugin speaks protocol 2" ;;
esac

case $request in
    *\"command\":\"*) json_string "${request#*\"command\":\"}" || fail "malformed command in request" ;;
    *) fail "request has no command" ;;
esac
command=$REPLY

message=$DEFAULT_MESSAGE
config=${request#*\"config\":}
config=${config%%,\"state\":*}
case $config in
    *\"message\":\"*)
        json_string "${config#*\"message\":\"}" && message=$REPLY
        ;;
esac

case $command in
    poll)
        printf '{"status":"ok","result":"echo: %s","events":[{"type":"echo.poll","payload":{"message":"%s"}}],"state_updates":{"message":"%s"}}\n' \
            "$message" "$message" "$message"
        ;;
    handle)
        printf '{"status":"ok","result":"echo: handled","events":[{"type":"echo.handled","payload":{"message":"%s"}}]}\n' \
            "$message"
        ;;
    health)
        printf '%s\n' '{"status":"ok","result":"healthy"}'
        ;;
    *)
        fail "unknown command \`$command\` (this plugin knows poll, handle and health)"
        ;;
esac
