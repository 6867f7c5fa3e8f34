"""The command a swarm task runs: bash (every build image has it, with curl, tar and coreutils)
wrapped around the step's own, talking to the handoff listener (``_handoff.py``).

Inputs come first, from the URL or from a config file. With ``ORCHESTRATOR_STEP_PUSH`` the
command's stdout and stderr each go into a pipe read by a pusher: one read's worth at a time
(``dd`` with one block: whatever the pipe holds) is written on to the task's own stream (so the
service logs hold every byte: the fallback, ``_pushed.py``) and PUT to the listener at its
offset in that stream. While curl sends, the pipe fills and the command waits: the pipe and one
chunk are all that is buffered. A refused or broken send is tried again (the listener trims what
it has already, so nothing is told twice); one it still cannot make, or an answer other than a
2xx, turns the pusher's pushing off (it goes on writing the task's stream). Once the command and
both pushers are done, the wrapper reports the exit code, whether the kernel OOM-killed a
process in the task's cgroup, the KiB under the working directory and the bytes each pusher
read. ``X-Orchestrator-Run`` tells one task of the service from another (a task run again).

The command runs in the background of the wrapper, which passes Swarm's SIGTERM on to it and,
with ``ORCHESTRATOR_STEP_STOP``, waits on the listener for ``kill``'s stop (``_swarmstop.py``).

Cache volumes (``_swarmvolumes.py``) are unpacked from their archives before the command and
sent back, streamed, after the outputs. The outputs go back after the command, whatever its exit
code (the cache report matters most when a build failed). The token leaves the environment before
the command runs; a build that digs it out of /proc can only spoil its own results. Sending back
retries a refused connection too (a service restarting: the next one takes the exchange over),
but only briefly: the tar is streamed, so a send that began cannot be made again.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..timeouts import (
    HANDOFF_FETCH_ATTEMPTS,
    HANDOFF_SEND_ATTEMPTS,
    HANDOFF_SEND_MAX_S,
    HANDOFF_SEND_RETRY_S,
    HANDOFF_STOP_RETRY_S,
    HANDOFF_STOP_TICK_S,
    HANDOFF_STREAM_SEND_ATTEMPTS,
    PUSH_ATTEMPTS,
    PUSH_CONNECT_TIMEOUT_S,
    PUSH_DRAIN_S,
    PUSH_REQUEST_TIMEOUT_S,
    PUSH_RETRY_S,
)

_WRAPPER_TEMPLATE = r"""set -u -o pipefail
url=$ORCHESTRATOR_STEP_URL
auth="Authorization: Bearer $ORCHESTRATOR_STEP_TOKEN"
push=${ORCHESTRATOR_STEP_PUSH:-}
stop=${ORCHESTRATOR_STEP_STOP:-}
unset ORCHESTRATOR_STEP_URL ORCHESTRATOR_STEP_TOKEN ORCHESTRATOR_STEP_PUSH ORCHESTRATOR_STEP_STOP
run="X-Orchestrator-Run: ${HOSTNAME:-task}.$$.$RANDOM$RANDOM"
if [ -n "${ORCHESTRATOR_STEP_DIR:-}" ]; then
  mkdir -p "$ORCHESTRATOR_STEP_DIR" && cd "$ORCHESTRATOR_STEP_DIR" || exit 125
fi
unset ORCHESTRATOR_STEP_DIR
case "${ORCHESTRATOR_STEP_INPUTS:-}" in
  "") ;;
  fetch) curl -fsS --retry @FETCH@ --retry-connrefused -H "$auth" "$url/inputs" | tar -x -f - \
           || { echo "orchestrator: could not fetch the step's inputs from $url" >&2; exit 125; } ;;
  *) tar -x -f "$ORCHESTRATOR_STEP_INPUTS" \
           || { echo "orchestrator: could not unpack the step's inputs" >&2; exit 125; } ;;
esac
unset ORCHESTRATOR_STEP_INPUTS
# Cache volumes, made here from their archives (a volume with none starts empty). One that
# cannot be unpacked whole is emptied: the build runs without it rather than with half of it.
volumes=${ORCHESTRATOR_STEP_VOLUMES:-}
unset ORCHESTRATOR_STEP_VOLUMES ORCHESTRATOR_STEP_VOLUME_NAMES
v=0
for dir in $volumes; do
  got=$(curl -sS -I -o /dev/null -w '%{http_code}' --retry @FETCH@ --retry-connrefused \
        -H "$auth" "$url/volumes/$v")
  mkdir -p "$dir"
  if [ "$got" = 200 ]; then
    curl -fsS -H "$auth" "$url/volumes/$v" | zstd -dcq | tar -x -f - -C "$dir" \
      || { echo "orchestrator: could not unpack the cache at $dir: building without it" >&2
           find "$dir" -mindepth 1 -delete 2>/dev/null; }
  fi
  v=$((v + 1))
done
# kill's stop (``Handoff.stop``): asked again after a failure (the service restarting: the next
# one takes the step over) until it comes, or the listener says the step is not its any more.
# The header goes through stdin: not in curl's command line, which the build could read.
stop_watch() {
  local answer ticks
  while :; do
    answer=$(printf 'header = "%s"\n' "$auth" \
               | curl -sS -K - -w ' %{http_code}' "$url/stop" 2>/dev/null)
    case $answer in
      *" 200") break ;;
      *" 403" | *" 404") return 0 ;;
    esac
    sleep @STOP_RETRY@
  done
  ticks=${answer% 200}
  if [ "$ticks" -gt 0 ] 2>/dev/null; then
    kill -TERM "$build" 2>/dev/null
    while [ "$ticks" -gt 0 ] && kill -0 "$build" 2>/dev/null; do
      sleep @TICK@
      ticks=$((ticks - 1))
    done
  fi
  kill -KILL $$  # this shell's end is the container's: its init exits, the kernel kills the rest
}
# The command runs in the background (with the signals a foreground one has) so that this shell
# can pass a SIGTERM on to it (Swarm's stop, sent to the init, reaches this shell only): a shell
# that died of it would have the kernel SIGKILL the command at once, cutting its grace short.
# The stop watch holds none of the command's streams (the pushers end when those close).
run() {
  { trap - INT QUIT; exec "$@"; } &
  build=$!
  # Not ``[ ... ] || stop_watch &``: that forks the whole list, and the forked shell keeps the
  # command's streams open (saved around the function call), so the pushers never end.
  if [ -n "$stop" ]; then stop_watch </dev/null >/dev/null 2>&1 & fi
  trap 'kill -TERM "$build" 2>/dev/null' TERM
  while kill -0 "$build" 2>/dev/null; do wait "$build"; done
  wait "$build"
}
tell() {
  curl -s -o /dev/null -w '%{http_code}' --connect-timeout @CONNECT@ --max-time @REQUEST@ \
    -H "$auth" -H "$run" "$@" 2>/dev/null
}
# A plain http:// listener is spoken to over one kept-alive connection per stream, bash's own
# /dev/tcp: a curl per chunk costs a process start, which is most of a chunk's time.
host= port= hostport= path=
case $url in
  http://*/*)
    hostport=${url#http://} && path=/${hostport#*/} && hostport=${hostport%%/*}
    host=${hostport%:*} port=${hostport##*:}
    [ "$host" != "$hostport" ] || port=80
    host=${host#[} && host=${host%]} ;;
esac
answer() {
  local line length=0 body
  IFS= read -r -t @REQUEST@ line <&3 || return 1
  status=${line#* } && status=${status%% *}
  while IFS= read -r -t @REQUEST@ line <&3; do
    line=${line%$'\r'}
    [ -n "$line" ] || break
    case ${line,,} in content-length:*) length=${line//[!0-9]/} ;; esac
  done
  [ "${length:-0}" = 0 ] || IFS= read -r -N "$length" -t @REQUEST@ body <&3
}
put_tcp() {
  status=000
  if [ -z "$connected" ]; then
    { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 0
    connected=1
  fi
  printf 'PUT %s/output/%s?offset=%s HTTP/1.1\r\nHost: %s\r\n%s\r\n%s\r\n%s\r\n\r\n' \
    "$path" "$1" "$2" "$hostport" "$auth" "$run" "Content-Length: $3" >&3 2>/dev/null \
    && cat "$4" >&3 2>/dev/null && answer && case $status in 2??) return 0 ;; esac
  exec 3>&- && connected=
}
push() {
  local tries=1
  while :; do
    if [ -n "$host" ]; then put_tcp "$@"
    else status=$(tell -T "$4" "$url/output/$1?offset=$2"); fi
    case $status in 2??) return 0 ;; 000|5??) ;; *) return 1 ;; esac
    [ $tries -lt @PUSH_TRIES@ ] || return 1
    tries=$((tries + 1)) && sleep @PUSH_DELAY@
  done
}
pusher() {
  local stream=$1 sent=0 size stats on=1 chunk=$spool/$1.chunk connected=
  trap '' PIPE
  while stats=$(LC_ALL=C dd bs=1M count=1 of="$chunk" 2>&1); do
    size=${stats##*$'\n'} && size=${size%% *}
    [ "${size:-0}" -gt 0 ] 2>/dev/null || break
    cat "$chunk"
    [ $on = 0 ] || push "$stream" "$sent" "$size" "$chunk" || on=0
    sent=$((sent + size))
  done
  echo "$sent" >"$spool/$stream.sent"
}
report() {
  local oom=0 key value disk=0 out=-1 err=-1 f
  for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
    [ -r "$f" ] || continue
    while read -r key value; do
      if [ "$key" = oom_kill ] && [ "${value:-0}" != 0 ]; then oom=1; fi
    done <"$f"
  done
  read -r disk _ < <(du -skx . 2>/dev/null) || disk=0
  read -r out 2>/dev/null <"$spool/stdout.sent" || out=-1
  read -r err 2>/dev/null <"$spool/stderr.sent" || err=-1
  tell -X PUT --retry @PUSH_TRIES@ --retry-delay @PUSH_DELAY@ --retry-all-errors \
    --retry-connrefused \
    "$url/report?exit=$1&oom=$oom&disk_kib=${disk:-0}&stdout=$out&stderr=$err" >/dev/null
}
spool=
if [ -n "$push" ] && spool=$(mktemp -d 2>/dev/null) && mkfifo "$spool/stdout" "$spool/stderr"
then
  pusher stdout <"$spool/stdout" &
  pushing_out=$!
  pusher stderr <"$spool/stderr" >&2 &
  pushing_err=$!
  run "$@" >"$spool/stdout" 2>"$spool/stderr"
  code=$?
  # A process the command left behind may hold the pipes open: the pushers get so long to end.
  ( sleep @DRAIN@; kill $pushing_out $pushing_err 2>/dev/null ) &
  drain=$!
  wait $pushing_out $pushing_err
  kill $drain 2>/dev/null
  report $code
else
  run "$@"
  code=$?
fi
pack() {
  if [ -d "$out" ]; then tar -c -f "$1" -C "$out" .; else tar -c -f "$1" -T /dev/null; fi
}
send() {
  curl -fsS --retry-connrefused -T "$1" -H "$auth" -H "Content-Type: application/x-tar" \
    "${@:2}" "$url/outputs/$i" >/dev/null
}
i=0
for out in ${ORCHESTRATOR_STEP_OUTPUTS:-}; do
  # Spooled to a file, so that curl can send it again: while the service restarts (an upgrade,
  # a crash) nobody listens, and the next one takes the step over within the hour.
  tarball=$(mktemp 2>/dev/null) || tarball=
  if [ -n "$tarball" ] && pack "$tarball"; then
    send "$tarball" --retry @SEND@ --retry-delay @DELAY@ --retry-max-time @MAX@
  else
    pack - | send - --retry @STREAM@
  fi || echo "orchestrator: could not send $out back" >&2
  [ -z "$tarball" ] || rm -f "$tarball"
  i=$((i + 1))
done
v=0
for dir in $volumes; do
  # Streamed, so sent once: a volume not sent stays as the last build that ended left it.
  { tar -c -f - -C "$dir" . | zstd -q -1 -T0 | curl -fsS -T - -H "$auth" \
      -H "Content-Type: application/zstd" "$url/volumes/$v" >/dev/null; } \
    || echo "orchestrator: could not send the cache at $dir back" >&2
  v=$((v + 1))
done
exit $code
"""
_WRAPPER = (
    _WRAPPER_TEMPLATE.replace("@FETCH@", str(HANDOFF_FETCH_ATTEMPTS - 1))
    .replace("@SEND@", str(HANDOFF_SEND_ATTEMPTS - 1))
    .replace("@DELAY@", str(HANDOFF_SEND_RETRY_S))
    .replace("@MAX@", str(HANDOFF_SEND_MAX_S))
    .replace("@STREAM@", str(HANDOFF_STREAM_SEND_ATTEMPTS - 1))
    .replace("@PUSH_TRIES@", str(PUSH_ATTEMPTS - 1))
    .replace("@PUSH_DELAY@", str(PUSH_RETRY_S))
    .replace("@CONNECT@", str(PUSH_CONNECT_TIMEOUT_S))
    .replace("@REQUEST@", str(PUSH_REQUEST_TIMEOUT_S))
    .replace("@DRAIN@", str(PUSH_DRAIN_S))
    .replace("@STOP_RETRY@", str(HANDOFF_STOP_RETRY_S))
    .replace("@TICK@", str(HANDOFF_STOP_TICK_S))
)


def wrapper_command(command: tuple[str, ...]) -> list[str]:
    return ["bash", "-c", _WRAPPER, "orchestrator-step", *command]


def wrapper_env(
    url: str,
    handle: str,
    token: str,
    inputs: str | None,
    outputs: tuple[str, ...],
    push: bool = False,
    *,
    stop: bool = False,
    volumes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``inputs``: "fetch" (from the URL), a file's path in the task, or None. ``push``: the
    task pushes its output to the listener (it can reach it). ``stop``: the task reaches the
    listener, so its wrapper waits there for ``Handoff.stop``. ``volumes``: cache volume name →
    its mount path (the order is their index at the listener)."""
    paths = (*outputs, *(volumes or {}).values())
    if any(not p.startswith("/") or any(c.isspace() for c in p) for p in paths):
        raise ValueError(f"output and volume paths must be absolute, without blanks: {paths}")
    env = {
        "ORCHESTRATOR_STEP_URL": f"{url}/steps/{handle}",
        "ORCHESTRATOR_STEP_TOKEN": token,
        "ORCHESTRATOR_STEP_OUTPUTS": " ".join(outputs),
    }
    if inputs is not None:
        env["ORCHESTRATOR_STEP_INPUTS"] = inputs
    if push:
        env["ORCHESTRATOR_STEP_PUSH"] = "1"
    if stop:
        env["ORCHESTRATOR_STEP_STOP"] = "1"
    if volumes:
        env["ORCHESTRATOR_STEP_VOLUMES"] = " ".join(volumes.values())
        # Read back by a later process that takes the step over (``outputs_of``).
        env["ORCHESTRATOR_STEP_VOLUME_NAMES"] = " ".join(volumes)
    return env
