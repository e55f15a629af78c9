#!/usr/bin/env python3
"""A hostile vendor SSH server for tests/it/hostile.rs: paramiko, so neither russh nor OpenSSH.

It listens on 127.0.0.1 (a port the kernel picks), accepts the agent's public key, grants every
`tcpip-forward` request (without listening anywhere: the channels it opens are its own), and
then misbehaves on the agent's newest session when told to on stdin, one command a line:

    SCENARIO [JSON object of arguments]

Every scenario is bounded in messages and in time, and ends with one line
`{"event": "done", "scenario": ..., "alive": ..., "echo": ..., ...}` saying what happened and
whether the session still answers (a keepalive round trip) and still serves its listed forward
(an echo through it, on a channel of its own). `echo_accepted` / `sink_accepted` count the
channels the agent accepted on each listed forward during the scenario, that final echo left
out: what the targets must have counted. Events before it (`open`, `flood`, ...) detail the
scenario; a scenario that could not run has `error` in its done line.

The first stdout line is `{"event": "listening", "port": P, "fingerprint": "SHA256:..."}`:
the port and the host key fingerprint for the agent's `server.host_keys`.

What paramiko's public API cannot send (empty or unwindowed data, floods of requests, EOFs,
window adjusts, channel opens it does not track) goes out as raw messages
(`paramiko.Message` through `Transport._send_user_message`); replies the agent sends to them are
counted by handlers installed on the transport instead of paramiko's own. Works with paramiko
2.9 and later (Debian and Ubuntu package 2.9 to 3.x; PyPI 4 and 5).

Usage: server.py --authorized-key FILE --echo-port P [--sink-port P] [--decoy PORT]... [--log F]
  --echo-port / --sink-port: the remote ports of the agent's listed forwards whose targets
  echo / never read; --decoy: ports of local listeners the agent must never dial (the server
  names them as destinations and originators).
"""

import argparse
import base64
import collections
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time

import paramiko

# Message numbers (RFC 4250), written out so the script does not depend on which ones a
# paramiko version exports.
MSG_IGNORE = 2
MSG_UNIMPLEMENTED = 3
MSG_DEBUG = 4
MSG_KEXINIT = 20
MSG_GLOBAL_REQUEST = 80
MSG_REQUEST_SUCCESS = 81
MSG_REQUEST_FAILURE = 82
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_SUCCESS = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_WINDOW_ADJUST = 93
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
MSG_CHANNEL_EOF = 96
MSG_CHANNEL_CLOSE = 97
MSG_CHANNEL_REQUEST = 98
MSG_CHANNEL_SUCCESS = 99
MSG_CHANNEL_FAILURE = 100

# Channel ids of raw opens start here, far above paramiko's own (which count up from 0).
RAW_CHANNEL_BASE = 1 << 30
# The whole server stops by itself after this, whatever the test does.
LIFETIME_SECONDS = 900
# Most connections accepted over the server's life (the agent reconnects a few times at most).
MAX_CONNECTIONS = 200
# Bound on waiting for the agent: a session, a reply, a channel open, an echo.
WAIT = 20.0

OUT = threading.Lock()


def emit(**event):
    with OUT:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def passed(self):
        return time.monotonic() >= self.end


def poll(cond, seconds, step=0.02):
    """True once cond() holds, False if it does not within `seconds`."""
    deadline = Deadline(seconds)
    while not cond():
        if deadline.passed():
            return False
        time.sleep(step)
    return True


class Vendor(paramiko.ServerInterface):
    """Authentication and forward requests for one connection."""

    def __init__(self, authorized_blob, session):
        self.authorized_blob = authorized_blob
        self.session = session

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_none(self, username):
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username, password):
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        if key.asbytes() == self.authorized_blob:
            self.session.authenticated.set()
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_port_forward_request(self, address, port):
        with self.session.lock:
            self.session.forwards.add((address, port))
        return port or 40000

    def cancel_port_forward_request(self, address, port):
        with self.session.lock:
            self.session.forwards.discard((address, port))

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind, msg):
        return False


class HostileTransport(paramiko.Transport):
    """A paramiko transport whose handlers for some messages are replaced: replies to raw
    messages are counted, closes by the agent recorded, and the agent's KEXINIT can be ignored
    (the key exchange the agent starts then never finishes)."""

    def __init__(self, sock):
        super().__init__(sock)
        self.counts = collections.Counter()
        self.counts_lock = threading.Lock()
        self.closed_by_peer = set()
        self.raw_refused_ids = collections.Counter()
        self.stall_kex = False
        self.kexinit_ignored = threading.Event()
        # paramiko 3+ builds _handler_table per instance (bound methods, called as f(m));
        # 2.x has one class-level table of functions called as f(transport, m).
        self._bound_handlers = "_handler_table" in vars(self)
        if not self._bound_handlers:
            self._handler_table = dict(type(self)._handler_table)
        self._set_handler(MSG_KEXINIT, self._on_kexinit)
        self._set_handler(MSG_REQUEST_SUCCESS, lambda m: self.count("request_success"))
        self._set_handler(MSG_REQUEST_FAILURE, lambda m: self.count("request_failure"))
        self._set_handler(MSG_CHANNEL_OPEN_SUCCESS, self._on_open_success)
        self._set_handler(MSG_CHANNEL_OPEN_FAILURE, self._on_open_failure)
        # A class-level table in every version, called as f(channel, m).
        table = dict(paramiko.Transport._channel_handler_table)
        self._close = table[MSG_CHANNEL_CLOSE]
        table[MSG_CHANNEL_SUCCESS] = lambda chan, m: self.count("channel_success")
        table[MSG_CHANNEL_FAILURE] = lambda chan, m: self.count("channel_failure")
        table[MSG_CHANNEL_CLOSE] = self._on_close
        self._channel_handler_table = table

    def _set_handler(self, ptype, fn):
        original = self._handler_table.get(ptype)
        if self._bound_handlers:
            self._handler_table[ptype] = fn
            return (lambda m: original(m)) if original else None
        self._handler_table[ptype] = lambda _t, m: fn(m)
        return (lambda m: original(self, m)) if original else None

    def count(self, what, n=1):
        with self.counts_lock:
            self.counts[what] += n

    def counted(self, what):
        with self.counts_lock:
            return self.counts[what]

    def _on_kexinit(self, m):
        if self.stall_kex:
            self.kexinit_ignored.set()
            return
        self._negotiate_keys(m)

    def _on_open_success(self, m):
        chanid = m.get_int()
        if chanid >= RAW_CHANNEL_BASE:
            self.count("raw_open_confirmed")
            return
        m.rewind()
        self._parse_channel_open_success(m)

    def _on_open_failure(self, m):
        chanid = m.get_int()
        if chanid >= RAW_CHANNEL_BASE:
            self.count("raw_open_refused")
            with self.counts_lock:
                self.raw_refused_ids[chanid] += 1
            return
        m.rewind()
        self._parse_channel_open_failure(m)

    def _on_close(self, chan, m):
        self.closed_by_peer.add(chan.get_id())
        self._close(chan, m)


class Session:
    """One connection from the agent."""

    def __init__(self, n, transport):
        self.n = n
        self.t = transport
        self.lock = threading.Lock()
        self.forwards = set()
        self.authenticated = threading.Event()

    def granted(self, port):
        with self.lock:
            return next((f for f in self.forwards if f[1] == port), None)

    def alive(self):
        return self.t.is_active()


class Server:
    def __init__(self, args):
        self.args = args
        self.host_key = paramiko.RSAKey.generate(2048)
        with open(args.authorized_key) as f:
            self.authorized_blob = base64.b64decode(f.read().split()[1])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.lock = threading.Lock()
        self.sessions = []
        self.opens = 0
        # A channel a scenario leaves open for the next one.
        self.held = None

    def fingerprint(self):
        digest = hashlib.sha256(self.host_key.asbytes()).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def serve(self):
        for n in range(1, MAX_CONNECTIONS + 1):
            conn, _ = self.sock.accept()
            threading.Thread(target=self.handshake, args=(n, conn), daemon=True).start()

    def handshake(self, n, conn):
        t = HostileTransport(conn)
        t.add_server_key(self.host_key)
        session = Session(n, t)
        try:
            t.start_server(server=Vendor(self.authorized_blob, session))
        except Exception as e:  # noqa: BLE001 - reported, the agent retries
            emit(event="handshake_failed", session=n, error=str(e))
            return
        if not session.authenticated.wait(WAIT):
            emit(event="auth_timeout", session=n)
            t.close()
            return
        with self.lock:
            self.sessions.append(session)
        emit(event="authenticated", session=n)

    def current(self):
        """The newest live session whose listed forwards are all granted."""
        wanted = [p for p in (self.args.echo_port, self.args.sink_port) if p]
        found = []

        def ready():
            with self.lock:
                live = [s for s in self.sessions if s.alive()]
            live = [s for s in live if all(s.granted(p) for p in wanted)]
            found[:] = live[-1:]
            return bool(found)

        if not poll(ready, WAIT):
            raise RuntimeError("no live session with every listed forward granted")
        return found[0]

    def origin(self):
        """A well-formed originator for a channel the agent should serve."""
        self.opens += 1
        return ("127.0.0.1", 40000 + self.opens % 20000)


def send(s, ptype, *fields):
    """One raw message: a type byte and fields (bytes/str as SSH strings, bool, int as uint32)."""
    m = paramiko.Message()
    m.add_byte(bytes([ptype]))
    for f in fields:
        if isinstance(f, bool):
            m.add_boolean(f)
        elif isinstance(f, int):
            m.add_int(f)
        else:
            m.add_string(f)
    s.t._send_user_message(m)


def open_channel(s, kind, dest=None, src=None):
    """Opens a channel through paramiko; returns (channel or None, result, refusal code)."""
    try:
        chan = s.t.open_channel(kind, dest_addr=dest, src_addr=src, timeout=WAIT)
        return chan, "accepted", None
    except paramiko.ChannelException as e:
        return None, "refused", e.code
    except Exception as e:  # noqa: BLE001 - the session died or the open timed out
        return None, "error: " + str(e), None


def report_open(scenario, label, kind, dest, src, result, code):
    def short(addr):
        if addr is None:
            return None
        host = addr[0]
        shown = host if len(host) <= 80 else host[:40] + "...(%d chars)" % len(host)
        return [shown, addr[1]]

    emit(
        event="open",
        scenario=scenario,
        label=label,
        kind=kind,
        dest=short(dest),
        src=short(src),
        result=result,
        code=code,
    )


def try_open(srv, s, scenario, label, kind, dest=None, src=None, keep=False):
    chan, result, code = open_channel(s, kind, dest, src)
    report_open(scenario, label, kind, dest, src, result, code)
    if chan is not None and not keep:
        chan.close()
    return chan, result, code


def listed(srv, s, port):
    addr = s.granted(port)
    if addr is None:
        raise RuntimeError("forward on port %d not granted" % port)
    return addr


def echo_on(chan, payload, seconds=WAIT):
    """Sends payload on chan and reads it back (the listed target echoes)."""
    deadline = Deadline(seconds)
    try:
        chan.settimeout(seconds)
        chan.sendall(payload)
        got = b""
        while len(got) < len(payload) and not deadline.passed():
            chan.settimeout(max(0.05, deadline.left()))
            piece = chan.recv(len(payload) - len(got))
            if not piece:
                break
            got += piece
        return got == payload
    except Exception:  # noqa: BLE001 - a timeout or a closed channel is a failed echo
        return False


def keepalive(s, seconds=WAIT):
    """A global keepalive the agent must answer: the session still reads and writes."""
    if not s.alive():
        return False
    before = s.t.counted("request_success") + s.t.counted("request_failure")
    try:
        send(s, MSG_GLOBAL_REQUEST, "keepalive@openssh.com", True)
    except Exception:  # noqa: BLE001
        return False
    return poll(
        lambda: s.t.counted("request_success") + s.t.counted("request_failure") > before,
        seconds,
    )


def echo_through(srv, s, tag):
    """A fresh channel on the listed echo forward carries bytes there and back."""
    if not s.alive():
        return False
    chan, result, _ = open_channel(
        s, "forwarded-tcpip", listed(srv, s, srv.args.echo_port), srv.origin()
    )
    if chan is None:
        return False
    ok = echo_on(chan, ("echo after %s " % tag).encode() * 64)
    chan.close()
    return ok


def wait_closed_by_agent(s, chan, seconds=10.0):
    return poll(lambda: chan.get_id() in s.t.closed_by_peer, seconds)


# ---------------------------------------------------------------------------------------------
# Scenarios. Each returns the fields of its `done` line.


def unrequested_channels(srv, s, args):
    """Channel types the agent never asked for, and forwarded-tcpip for addresses and ports it
    did not request: every one refused, nothing dialed. Then a raw flood of such opens."""
    name = "unrequested_channels"
    decoys = srv.args.decoy or [9]
    addr, port = listed(srv, s, srv.args.echo_port)
    d0, d1 = decoys[0], decoys[-1]
    cases = [
        ("session", "session", None, None),
        ("direct-tcpip to a decoy", "direct-tcpip", ("127.0.0.1", d0), ("127.0.0.1", 40001)),
        ("direct-tcpip to the listed target's forward", "direct-tcpip", (addr, port), ("127.0.0.1", 40002)),
        ("x11 from a decoy", "x11", None, ("127.0.0.1", d1)),
        ("auth agent", "auth-agent@openssh.com", None, None),
        ("unknown type", "hostile-unknown@example.com", None, None),
        ("forwarded-tcpip, unrequested port (a decoy's)", "forwarded-tcpip", ("127.0.0.1", d1), ("127.0.0.1", d0)),
        ("forwarded-tcpip, listed port on 0.0.0.0", "forwarded-tcpip", ("0.0.0.0", port), ("127.0.0.1", 40003)),
        ("forwarded-tcpip, listed port on localhost", "forwarded-tcpip", ("localhost", port), ("127.0.0.1", 40004)),
        ("forwarded-tcpip, listed port on ::1", "forwarded-tcpip", ("::1", port), ("127.0.0.1", 40005)),
        ("forwarded-tcpip, listed port, empty address", "forwarded-tcpip", ("", port), ("127.0.0.1", 40006)),
        ("forwarded-tcpip, listed address with a NUL", "forwarded-tcpip", (addr + "\x00", port), ("127.0.0.1", 40007)),
        ("forwarded-tcpip, listed port + 65536", "forwarded-tcpip", (addr, port + 65536), ("127.0.0.1", 40008)),
        ("forwarded-tcpip, port 0", "forwarded-tcpip", (addr, 0), ("127.0.0.1", 40009)),
    ]
    accepted = 0
    for label, kind, dest, src in cases:
        _, result, _ = try_open(srv, s, name, label, kind, dest, src)
        accepted += result == "accepted"
    # The control: the listed forward itself is served.
    chan, result, _ = try_open(
        srv, s, name, "control: the listed forward", "forwarded-tcpip", (addr, port), srv.origin(), keep=True
    )
    control = chan is not None and echo_on(chan, b"control")
    if chan is not None:
        chan.close()
    # A raw flood of opens paramiko does not track (it would wait for each answer).
    raw = int(args.get("raw", 3000))
    kinds = [
        ("session", []),
        ("x11", ["127.0.0.1", d0]),
        ("direct-tcpip", ["127.0.0.1", d0, "127.0.0.1", 40010]),
        ("forwarded-tcpip", ["127.0.0.1", d1, "127.0.0.1", 40011]),
        ("hostile-unknown@example.com", []),
    ]
    for i in range(raw):
        kind, extra = kinds[i % len(kinds)]
        send(s, MSG_CHANNEL_OPEN, kind, RAW_CHANNEL_BASE + i, 2 * 1024 * 1024, 32768, *extra)
    answered = poll(
        lambda: len(s.t.raw_refused_ids) + s.t.counted("raw_open_confirmed") >= raw, WAIT
    )
    # A round trip after the last open: whatever else the agent sends for them is in by now.
    keepalive(s)
    emit(
        event="flood",
        scenario=name,
        what="raw channel opens",
        sent=raw,
        refused=s.t.counted("raw_open_refused"),
        confirmed=s.t.counted("raw_open_confirmed"),
        all_answered=answered,
        distinct_refused=len(s.t.raw_refused_ids),
        refused_twice_by_kind=dict(
            collections.Counter(
                kinds[(k - RAW_CHANNEL_BASE) % len(kinds)][0]
                for k, v in s.t.raw_refused_ids.items()
                if v > 1
            )
        ),
    )
    return dict(
        accepted_unrequested=accepted,
        control_echo=control,
        raw_sent=raw,
        raw_refused=s.t.counted("raw_open_refused"),
        raw_confirmed=s.t.counted("raw_open_confirmed"),
        echo_accepted=1 if chan is not None else 0,
    )


def odd_originators(srv, s, args):
    """forwarded-tcpip for the listed forward, from originators that are not an IP address and
    port: refused. Well-formed ones (IPv4, IPv6, IPv6 with a zone) are served."""
    name = "odd_originators"
    dest = listed(srv, s, srv.args.echo_port)
    decoy = (srv.args.decoy or [9])[0]
    bad = [
        ("not an address", ("not-an-ip", 40100)),
        ("empty", ("", 40101)),
        ("huge", ("A" * 100_000, 40102)),
        ("newline and a forged log line", ("10.0.0.1\n2026-01-01T00:00:00Z INFO forged", 40103)),
        ("terminal escapes", ("\x1b[2J\x1b[31m127.0.0.1", 40104)),
        ("bidi override", ("127.0.0.1\u202e", 40105)),
        ("address with its port", ("127.0.0.1:%d" % decoy, decoy)),
        ("host name of a decoy's host", ("localhost", decoy)),
        ("NUL inside", ("127.0.0.1\x00evil", 40106)),
        ("port above 65535", ("127.0.0.1", 70000)),
        ("port 2^32-1", ("127.0.0.1", 0xFFFFFFFF)),
    ]
    good = [
        ("IPv4", ("203.0.113.7", 51000)),
        ("IPv6", ("2001:db8::1", 443)),
        ("IPv6 with a zone", ("fe80::1%eth0", 22)),
    ]
    refused = accepted_bad = 0
    for label, src in bad:
        _, result, _ = try_open(srv, s, name, label, "forwarded-tcpip", dest, src)
        refused += result == "refused"
        accepted_bad += result == "accepted"
    accepted_good = served = 0
    for label, src in good:
        chan, result, _ = try_open(srv, s, name, label, "forwarded-tcpip", dest, src, keep=True)
        if chan is not None:
            accepted_good += 1
            served += echo_on(chan, label.encode())
            chan.close()
    return dict(
        bad=len(bad),
        refused=refused,
        accepted_bad=accepted_bad,
        good=len(good),
        served=served,
        echo_accepted=accepted_good + accepted_bad,
    )


def flood(name, what, s, messages, started):
    emit(
        event="flood",
        scenario=name,
        what=what,
        sent=messages,
        seconds=round(time.monotonic() - started, 3),
        alive=s.alive(),
    )


def open_listed(srv, s, port):
    chan, result, code = open_channel(s, "forwarded-tcpip", listed(srv, s, port), srv.origin())
    if chan is None:
        raise RuntimeError("the listed forward was refused (%s, code %s)" % (result, code))
    return chan


def flood_empty_data(srv, s, args):
    """CHANNEL_DATA with an empty payload, many times, on a served channel: nothing to queue."""
    name = "flood_empty_data"
    n = int(args.get("count", 100_000))
    chan = open_listed(srv, s, srv.args.echo_port)
    started = time.monotonic()
    for _ in range(n):
        send(s, MSG_CHANNEL_DATA, chan.remote_chanid, b"")
    flood(name, "empty CHANNEL_DATA", s, n, started)
    same = echo_on(chan, b"the same channel still carries data")
    chan.close()
    return dict(sent=n, same_channel_echo=same, echo_accepted=1)


def flood_window_adjust(srv, s, args):
    """CHANNEL_WINDOW_ADJUST with huge values (past 2^32 in total) on a served channel, and on
    channels that do not exist."""
    name = "flood_window_adjust"
    n = int(args.get("count", 50_000))
    chan = open_listed(srv, s, srv.args.echo_port)
    amounts = [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1, 0]
    started = time.monotonic()
    for i in range(n):
        send(s, MSG_CHANNEL_WINDOW_ADJUST, chan.remote_chanid, amounts[i % len(amounts)])
    unknown = n // 5
    for i in range(unknown):
        send(s, MSG_CHANNEL_WINDOW_ADJUST, 0x7FFF0000 + i % 7, 0xFFFFFFFF)
    flood(name, "CHANNEL_WINDOW_ADJUST", s, n + unknown, started)
    same = echo_on(chan, b"x" * 256 * 1024)
    chan.close()
    return dict(sent=n + unknown, same_channel_echo=same, echo_accepted=1)


def flood_channel_requests(srv, s, args):
    """CHANNEL_REQUEST of every kind, with and without want_reply, on a served channel and on
    channels that do not exist; and replies to requests the agent never made."""
    name = "flood_channel_requests"
    n = int(args.get("count", 20_000))
    chan = open_listed(srv, s, srv.args.echo_port)
    rid = chan.remote_chanid
    sent = want = 0

    def request(chanid, kind, reply, *fields):
        nonlocal sent, want
        send(s, MSG_CHANNEL_REQUEST, chanid, kind, reply, *fields)
        sent += 1
        want += reply

    started = time.monotonic()
    for i in range(n):
        request(rid, "hostile-request@example.com", True, b"x" * (i % 64))
        request(rid, "hostile-request@example.com", False, b"y" * (i % 64))
        if i % 4 == 0:
            request(rid, "keepalive@openssh.com", True)
            request(rid, "keepalive@openssh.com", False)
            request(rid, "exit-status", False, i)
            request(rid, "exit-signal", False, "KILL", False, "\x1b[2Jbye\n", "")
            request(rid, "xon-xoff", False, True)
            request(rid, "pty-req", True, "xterm", 80, 24, 0, 0, b"")
    # Requests to channels that do not exist: no reply is owed.
    for i in range(n // 10):
        send(s, MSG_CHANNEL_REQUEST, 0x7FFF0000 + i % 7, "hostile-request@example.com", True)
        sent += 1
    # Replies to requests the agent never made.
    for i in range(n // 10):
        send(s, MSG_CHANNEL_SUCCESS if i % 2 else MSG_CHANNEL_FAILURE, rid)
        sent += 1
    flood(name, "CHANNEL_REQUEST", s, sent, started)

    def replies():
        return s.t.counted("channel_success") + s.t.counted("channel_failure")

    answered = poll(lambda: replies() >= want, WAIT)
    same = echo_on(chan, b"the same channel still carries data")
    chan.close()
    return dict(
        sent=sent,
        want_reply=want,
        replies=replies(),
        all_answered=answered,
        same_channel_echo=same,
        echo_accepted=1,
    )


def flood_global_requests(srv, s, args):
    """GLOBAL_REQUEST with want_reply (unknown names, keepalives, a forward request to the
    client, host keys announced with garbage), many times; and replies to requests the agent
    never made."""
    name = "flood_global_requests"
    n = int(args.get("count", 20_000))
    sent = want = 0

    def request(kind, reply, *fields):
        nonlocal sent, want
        send(s, MSG_GLOBAL_REQUEST, kind, reply, *fields)
        sent += 1
        want += reply

    before = s.t.counted("request_success") + s.t.counted("request_failure")
    started = time.monotonic()
    for i in range(n):
        request("hostile-global@example.com", True, b"z" * (i % 128))
        if i % 4 == 0:
            request("keepalive@openssh.com", True)
            request("keepalive@openssh.com", False)
            request("tcpip-forward", True, "0.0.0.0", 22)
        if i % 100 == 0:
            request("hostkeys-00@openssh.com", False, b"\x00garbage", b"")
    # Replies to requests the agent never made.
    for i in range(n // 10):
        send(s, MSG_REQUEST_SUCCESS if i % 2 else MSG_REQUEST_FAILURE)
        sent += 1
    flood(name, "GLOBAL_REQUEST", s, sent, started)

    def replies():
        return s.t.counted("request_success") + s.t.counted("request_failure") - before

    answered = poll(lambda: replies() >= want, WAIT)
    return dict(sent=sent, want_reply=want, replies=replies(), all_answered=answered)


def flood_ignore_debug(srv, s, args):
    """IGNORE and DEBUG, small and large, and UNIMPLEMENTED, many times."""
    name = "flood_ignore_debug"
    n = int(args.get("count", 50_000))
    large = int(args.get("large", 1000))
    started = time.monotonic()
    for i in range(n):
        send(s, MSG_IGNORE, b"i" * (i % 200))
        if i % 2 == 0:
            send(s, MSG_DEBUG, True, "debug \x1b[31m%d\n2026-01-01 INFO forged" % i, "")
    for i in range(n // 10):
        send(s, MSG_UNIMPLEMENTED, i)
    big = b"I" * (32 * 1024)
    for i in range(large):
        send(s, MSG_IGNORE, big)
        send(s, MSG_DEBUG, i % 2 == 0, "D" * (32 * 1024), "en")
    sent = n + (n + 1) // 2 + n // 10 + 2 * large
    flood(name, "IGNORE, DEBUG and UNIMPLEMENTED", s, sent, started)
    return dict(sent=sent, megabytes=round((2 * large * 32 * 1024 + n * 100) / 2**20, 1))


def eof_and_violations(srv, s, args):
    """EOF over and over on one channel, data after EOF on another, extended data on a third
    (all three to the target that never answers, so nothing else ends them): each is closed by
    the agent, the session and a clean channel go on."""
    name = "eof_and_violations"
    n = int(args.get("count", 10_000))
    clean = open_listed(srv, s, srv.args.echo_port)
    # On the forward whose target never reads nor closes: only the violation can close these.
    repeated = open_listed(srv, s, srv.args.sink_port)
    late = open_listed(srv, s, srv.args.sink_port)
    extended = open_listed(srv, s, srv.args.sink_port)
    started = time.monotonic()
    for _ in range(n):
        send(s, MSG_CHANNEL_EOF, repeated.remote_chanid)
    flood(name, "CHANNEL_EOF", s, n, started)
    send(s, MSG_CHANNEL_EOF, late.remote_chanid)
    send(s, MSG_CHANNEL_DATA, late.remote_chanid, b"data after EOF")
    send(s, MSG_CHANNEL_EXTENDED_DATA, extended.remote_chanid, 1, b"stderr on a TCP forward")
    closed = {
        "repeated_eof": wait_closed_by_agent(s, repeated),
        "data_after_eof": wait_closed_by_agent(s, late),
        "extended_data": wait_closed_by_agent(s, extended),
    }
    emit(event="closed_by_agent", scenario=name, **closed)
    clean_open = clean.get_id() not in s.t.closed_by_peer
    same = echo_on(clean, b"the clean channel still carries data")
    for chan in (clean, repeated, late, extended):
        chan.close()
    return dict(
        closed_by_agent=closed,
        clean_channel_echo=same,
        clean_channel_open=clean_open,
        echo_accepted=1,
        sink_accepted=3,
    )


def data_past_window(srv, s, args):
    """CHANNEL_DATA past the window the agent granted, on a channel whose target never reads:
    paced at first, so the agent keeps up until the target's socket buffers are full and its
    write to the target blocks, then on and on past the window. The agent must close that
    channel (limits.connection_buffer) and the session go on."""
    name = "data_past_window"
    cap = int(args.get("max_bytes", 64 * 2**20))
    pace = float(args.get("pace_ms", 1.0)) / 1000
    paced = int(args.get("paced_bytes", 8 * 2**20))
    chan = open_listed(srv, s, srv.args.sink_port)
    window = chan.out_window_size
    chunk = b"W" * 32 * 1024
    sent = 0
    started = time.monotonic()
    while sent < cap and chan.get_id() not in s.t.closed_by_peer and s.alive():
        send(s, MSG_CHANNEL_DATA, chan.remote_chanid, chunk)
        sent += len(chunk)
        if sent < paced:
            time.sleep(pace)
    closed = wait_closed_by_agent(s, chan)
    emit(
        event="flood",
        scenario=name,
        what="CHANNEL_DATA past the window",
        window=window,
        bytes=sent,
        seconds=round(time.monotonic() - started, 3),
        closed_by_agent=closed,
    )
    chan.close()
    return dict(window=window, bytes_sent=sent, closed_by_agent=closed, sink_accepted=1)


def fill_window(srv, s, args):
    """Keeps to the window, in messages of `packet` bytes, on a channel whose target does not
    read (yet): sends until the window stays shut for a second, and leaves the channel open for
    `after_release`. A server that keeps to the window must never be cut off for it."""
    chan = open_listed(srv, s, srv.args.sink_port)
    window = chan.out_window_size
    packet = int(args.get("packet", 32 * 1024))
    started = time.monotonic()
    sent, error = send_windowed(
        chan, int(args.get("max_bytes", 64 * 2**20)), idle=1.0, packet=packet
    )
    srv.held = chan
    return dict(
        window=window,
        packet=packet,
        within_window=sent,
        fill_seconds=round(time.monotonic() - started, 3),
        send_error=error,
        closed_by_agent=chan.get_id() in s.t.closed_by_peer,
        sink_accepted=1,
    )


def after_release(srv, s, args):
    """Once the test lets the target read: the channel `fill_window` filled carries on."""
    chan = srv.held
    srv.held = None
    more, error = send_windowed(chan, int(args.get("bytes", 2 * 2**20)), idle=WAIT)
    # The agent's verdict on what it had queued comes as its target's write completes.
    closed = wait_closed_by_agent(s, chan, seconds=2.0)
    chan.close()
    return dict(sent_after_release=more, send_error=error, closed_by_agent=closed)


def send_windowed(chan, total, idle, packet=32 * 1024):
    """Sends up to `total` bytes within the window (paramiko's own accounting), `packet` bytes
    a message at most, stopping once the window has stayed shut for `idle` seconds. Returns
    (bytes sent, error if any)."""
    chunk = b"F" * packet
    sent = 0
    chan.settimeout(idle)
    try:
        while sent < total:
            sent += chan.send(chunk[: total - sent])
    except socket.timeout:
        return sent, None
    except Exception as e:  # noqa: BLE001 - the agent closed the channel
        return sent, str(e)
    return sent, None


def kex_stall(srv, s, args):
    """Traffic until the agent starts a key exchange (limits.rekey_after), which this server
    never answers (its KEXINIT is ignored) while it floods global requests. The agent must end
    the session (its rekey budget) rather than queue without bound."""
    name = "kex_stall"
    cap = int(args.get("count", 100_000))
    s.t.stall_kex = True
    chan = open_listed(srv, s, srv.args.echo_port)
    chan.settimeout(2.0)
    received = [0]

    def drain():
        try:
            while True:
                piece = chan.recv(65536)
                if not piece:
                    return
                received[0] += len(piece)
        except Exception:  # noqa: BLE001 - timeout or close: draining stops
            return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sent = 0
    deadline = Deadline(WAIT)
    chunk = b"k" * 32 * 1024
    while not s.t.kexinit_ignored.is_set() and not deadline.passed() and sent < 64 * 2**20:
        try:
            sent += chan.send(chunk)
        except Exception:  # noqa: BLE001 - the window stalls once the agent is in its rekey
            time.sleep(0.01)
    seen = s.t.kexinit_ignored.wait(deadline.left())
    emit(event="kexinit", scenario=name, ignored=seen, data_sent=sent, data_echoed=received[0])
    requests = nbytes = 0
    started = time.monotonic()
    if seen:
        while requests < cap and s.alive():
            try:
                send(s, MSG_GLOBAL_REQUEST, "hostile-during-kex@example.com", True, b"q" * 32)
            except Exception:  # noqa: BLE001 - the agent hung up
                break
            requests += 1
            nbytes += 1 + 4 + 30 + 1 + 4 + 32
    ended = poll(lambda: not s.alive(), 10.0)
    flood(name, "GLOBAL_REQUEST while the agent's key exchange is stalled", s, requests, started)
    return dict(
        kexinit_ignored=seen,
        requests=requests,
        request_bytes=nbytes,
        session_ended=ended,
        echo_accepted=1,
        session=s.n,
    )


def connection_ceiling(srv, s, args):
    """More forwarded-tcpip channels than limits.max_connections, held open on one listed
    forward: the ones past the ceiling are refused (resource shortage). Then all are closed,
    and a new connection must be served again once the agent has ended theirs."""
    name = "connection_ceiling"
    count = int(args["count"])
    on_sink = args.get("forward") == "sink"
    dest = listed(srv, s, srv.args.sink_port if on_sink else srv.args.echo_port)
    held, codes = [], []
    for i in range(count):
        chan, result, code = open_channel(s, "forwarded-tcpip", dest, srv.origin())
        if chan is not None:
            held.append(chan)
        elif result == "refused":
            codes.append(code)
        else:
            emit(event="open", scenario=name, label="open %d" % i, result=result)
    accepted = len(held)
    emit(event="ceiling", scenario=name, opened=count, accepted=accepted, refused=len(codes),
         codes=sorted(set(codes)))
    for chan in held:
        chan.close()
    started = time.monotonic()
    deadline = Deadline(float(args.get("free_within", 10)))
    freed_after = None
    refused_while_freeing = 0
    echo_dest = listed(srv, s, srv.args.echo_port)
    while freed_after is None and not deadline.passed():
        chan, _, _ = open_channel(s, "forwarded-tcpip", echo_dest, srv.origin())
        if chan is None:
            refused_while_freeing += 1
            time.sleep(0.05)
            continue
        freed_after = round(time.monotonic() - started, 3)
        chan.close()
    emit(event="freed", scenario=name, closed=accepted, served_again_after=freed_after,
         refused_meanwhile=refused_while_freeing)
    reopened = 1 if freed_after is not None else 0
    return dict(
        opened=count,
        accepted=accepted,
        refused=len(codes),
        refusal_codes=sorted(set(codes)),
        served_again_after=freed_after,
        refused_meanwhile=refused_while_freeing,
        echo_accepted=(0 if on_sink else accepted) + reopened,
        sink_accepted=accepted if on_sink else 0,
    )


def probe(srv, s, args):
    """Nothing hostile: the done line says whether the newest session is up and serving."""
    return dict(session=s.n)


SCENARIOS = {
    f.__name__: f
    for f in (
        unrequested_channels,
        odd_originators,
        flood_empty_data,
        flood_window_adjust,
        flood_channel_requests,
        flood_global_requests,
        flood_ignore_debug,
        eof_and_violations,
        data_past_window,
        fill_window,
        after_release,
        kex_stall,
        connection_ceiling,
        probe,
    )
}


def run(srv, line):
    name, _, rest = line.strip().partition(" ")
    args = json.loads(rest) if rest.strip() else {}
    if name not in SCENARIOS:
        emit(event="done", scenario=name, error="unknown scenario; known: " + ", ".join(SCENARIOS))
        return
    started = time.monotonic()
    try:
        s = srv.current()
        fields = SCENARIOS[name](srv, s, args)
        alive = s.alive() and keepalive(s)
        echo = alive and echo_through(srv, s, name)
        emit(
            event="done",
            scenario=name,
            alive=alive,
            echo=echo,
            seconds=round(time.monotonic() - started, 3),
            **fields,
        )
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        emit(event="done", scenario=name, error="%s: %s" % (type(e).__name__, e))


def main():
    version = tuple(int(x) for x in paramiko.__version__.split(".")[:2])
    if version < (2, 9):
        sys.exit(
            "paramiko %s is too old: 2.9 or later is needed (rsa-sha2 signatures; the agent "
            "never signs with SHA-1)" % paramiko.__version__
        )
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authorized-key", required=True)
    parser.add_argument("--echo-port", type=int, required=True)
    parser.add_argument("--sink-port", type=int)
    parser.add_argument("--decoy", type=int, action="append")
    parser.add_argument("--log", help="paramiko's own log, at DEBUG, to this file")
    args = parser.parse_args()
    if args.log:
        paramiko.util.log_to_file(args.log, logging.DEBUG)
    else:
        # paramiko logs every refused open at ERROR: thousands of lines per flood.
        logging.getLogger("paramiko").setLevel(logging.CRITICAL + 1)
    srv = Server(args)
    emit(event="listening", port=srv.sock.getsockname()[1], fingerprint=srv.fingerprint(),
         paramiko=paramiko.__version__)
    threading.Thread(target=srv.serve, daemon=True).start()
    # Bounded in time whatever the test does: stdin closing (the test ended) or the lifetime.
    timer = threading.Timer(LIFETIME_SECONDS, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    for line in sys.stdin:
        if line.strip():
            run(srv, line)
    os._exit(0)


if __name__ == "__main__":
    main()
