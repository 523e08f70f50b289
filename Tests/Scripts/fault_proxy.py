#!/usr/bin/python3
"""A fault-injecting HTTP/1.1 proxy for the tests (Python 3 standard library).

usage: fault_proxy.py UPSTREAM RULES LOG

Listens on 127.0.0.1 on a port the kernel picks and prints that port as the
first line of stdout. Every GET or HEAD is forwarded to UPSTREAM
(http://127.0.0.1:PORT, nothing else is accepted) with its headers, Range
included, except the hop-by-hop ones; the body is streamed back in 64 KiB
pieces. Keep-alive: the proxy speaks HTTP/1.1 and keeps a client connection
open while upstream answers with a Content-Length (nginx's static files
always do); each request opens its own upstream connection.

RULES is a JSON file, re-read on every request (the test replaces it
atomically; a missing file means no faults):
    {"rules": [{"id": 1, "path": REGEX, "fault": KIND, ...}, ...]}
The first rule whose REGEX matches the request target (re.search, query
included) applies. Kinds:
    status        {"code": 500}  answer with that status, no upstream request
    drop          {"after": N}   send headers and N body bytes, then close
    dropAfterRequests {"n": N}   the first N matching requests pass, later
                                 ones get the connection closed, no answer
    flip          {"offset": K}  flip (xor 0xff) body byte K, or the middle one
                                 when K is null; offsets count in the body
                                 sent (a Range answer's body for a Range request)
    stall         {"seconds": S} send nothing for S seconds (ending early if
                                 the client goes away), then forward normally
A rule may carry "times": T, after which it applies to its first T matching
requests only. The proxy counts each rule's matches by its "id" (a rule
keeps its count while other rules come and go). A request met with rules it
cannot read or match (a bad regex) is answered 500, naming the problem.

LOG gets one JSON object per line: {"event": "begin", "id", "method", "path",
"range"} when a request has been read, before anything is answered, and
{"event": "end", "id", "status", "bytes", "fault", "error"} when its answer is
over ("status" 0 when no status line was sent; "bytes" counts body bytes
written to the client). The proxy exits on SIGTERM, SIGQUIT, SIGINT, or when
its stdin reaches end of file: its parent holds a pipe's other end, so the
proxy ends when the parent goes away (run by hand: `sleep inf | fault_proxy.py ...`).
"""
import http.client
import http.server
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade", "http2-settings", "host"}
CHUNK = 65536


def main():
    upstream, rules_path, log_path = sys.argv[1:4]
    target = urllib.parse.urlsplit(upstream)
    if target.scheme != "http" or target.hostname != "127.0.0.1" or not target.port:
        sys.exit("fault_proxy: upstream must be http://127.0.0.1:PORT, not " + upstream)

    log_lock = threading.Lock()
    log_file = open(log_path, "a", buffering=1)
    state_lock = threading.Lock()
    state = {"counts": {}, "next_id": 0}

    def log(entry):
        with log_lock:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    def load_rules():
        try:
            with open(rules_path) as f:
                return json.load(f)["rules"]
        except FileNotFoundError:
            return []

    def choose(path):
        """A new request's id, its rule (or None) and how many requests that rule has matched."""
        with state_lock:
            state["next_id"] += 1
            request_id = state["next_id"]
            try:
                for rule in load_rules():
                    if not re.search(rule["path"], path):
                        continue
                    count = state["counts"].get(rule["id"], 0) + 1
                    state["counts"][rule["id"]] = count
                    if rule.get("times") is not None and count > rule["times"]:
                        return request_id, None, count
                    return request_id, rule, count
            except Exception as e:
                return request_id, {"fault": "status", "code": 500, "why": "bad rules: %s" % e}, 1
            return request_id, None, 0

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fault_proxy"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.forward()

        def do_HEAD(self):
            self.forward()

        def forward(self):
            request_id, rule, count = choose(self.path)
            log({"event": "begin", "id": request_id, "method": self.command, "path": self.path,
                 "range": self.headers.get("Range")})
            result = {"status": 0, "bytes": 0, "fault": None, "error": None}
            try:
                self.answer(rule, count, result)
            except (BrokenPipeError, ConnectionResetError) as e:
                result["error"] = "client: " + type(e).__name__
                self.close_connection = True
            except Exception as e:  # an upstream failure: answer 502 if nothing was sent yet
                result["error"] = "%s: %s" % (type(e).__name__, e)
                self.close_connection = True
                if result["status"] == 0:
                    try:
                        self.plain(502, "fault_proxy: upstream failed: %s\n" % e, result)
                    except OSError:
                        pass
            finally:
                log(dict(result, event="end", id=request_id))

        def plain(self, code, text, result):
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            result["status"] = code
            if self.command != "HEAD":
                self.wfile.write(body)
                result["bytes"] = len(body)

        def answer(self, rule, count, result):
            kind = rule["fault"] if rule else None
            if kind == "status":
                result["fault"] = "status"
                self.plain(rule["code"], "fault_proxy: %s\n" % rule.get("why", "injected status %d" % rule["code"]), result)
                return
            if kind == "dropAfterRequests" and count > rule["n"]:
                result["fault"] = "dropAfterRequests"
                self.close_connection = True
                return
            if kind == "stall":
                result["fault"] = "stall"
                if self.stall(rule["seconds"]):
                    result["error"] = "client went away during the stall"
                    self.close_connection = True
                    return

            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                upstream_conn.request(self.command, self.path, headers=headers)
                response = upstream_conn.getresponse()
                length = response.getheader("Content-Length")
                self.send_response_only(response.status, response.reason)  # upstream's own Server and Date follow
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                if length is None:
                    self.close_connection = True
                    self.send_header("Connection", "close")
                self.end_headers()
                result["status"] = response.status
                if self.command == "HEAD":
                    return

                limit = None
                flip_at = None
                if kind == "drop":
                    result["fault"] = "drop"
                    limit = rule["after"]
                elif kind == "flip":
                    result["fault"] = "flip"
                    flip_at = rule.get("offset")
                    if flip_at is None:
                        flip_at = int(length) // 2 if length is not None else 0
                sent = 0
                while limit is None or sent < limit:
                    want = CHUNK if limit is None else min(CHUNK, limit - sent)
                    piece = response.read(want)
                    if not piece:
                        break
                    if flip_at is not None and sent <= flip_at < sent + len(piece):
                        piece = bytearray(piece)
                        piece[flip_at - sent] ^= 0xFF
                        piece = bytes(piece)
                    self.wfile.write(piece)
                    sent += len(piece)
                    result["bytes"] = sent
                self.wfile.flush()
                if flip_at is not None and flip_at >= sent:
                    result["fault"] = "flip: offset %d is beyond the body's %d bytes" % (flip_at, sent)
                if limit is not None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
            finally:
                upstream_conn.close()

        def stall(self, seconds):
            """Waits, sending nothing; True when the client closed the connection meanwhile."""
            deadline = time.monotonic() + seconds
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
                if readable:
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            return True
                    except OSError:
                        return True
                    time.sleep(min(left, 0.05))  # the client sent more (e.g. pipelining): keep waiting

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET
        daemon_threads = True
        allow_reuse_address = False

        def handle_error(self, request, client_address):
            pass

    server = Server(("127.0.0.1", 0), Handler)

    def quit_now(*_):
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, quit_now)

    def watch_stdin():
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
