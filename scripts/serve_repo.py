#!/usr/bin/env python3
"""Serves a folder (an ostree archive repository) with nginx on 127.0.0.1,
on a free port, with its own prefix, configuration and logs in a work
folder: for the demo and the benchmarks (the tests have their own harness).

As a module: Nginx(root, work) starts it; .url, .requests(), .stop().
As a program:
    serve_repo.py start ROOT WORK   prints the URL; nginx keeps running
    serve_repo.py stop WORK         stops it
    serve_repo.py log WORK          requests so far: status, bytes, path
"""
import os, signal, socket, subprocess, sys, time

CONF = """daemon on;
user root root;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format cairn '$status $body_bytes_sent $request_method $request_uri';
    access_log {work}/access.log cairn;
    client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex off;
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root, work):
        self.root, self.work = os.path.realpath(root), os.path.realpath(work)
        os.makedirs(os.path.join(self.work, "tmp"), exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            with open(os.path.join(self.work, "nginx.conf"), "w") as f:
                f.write(CONF.format(work=self.work, root=self.root, port=self.port))
            r = subprocess.run(["nginx", "-c", os.path.join(self.work, "nginx.conf"), "-p", self.work],
                               capture_output=True, text=True)
            if r.returncode == 0 and self._answers():
                self.url = "http://127.0.0.1:%d" % self.port
                return
            self.stop()
        raise RuntimeError("nginx did not start: " + r.stderr + self._error_log())

    def _answers(self):
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def _error_log(self):
        try:
            return open(os.path.join(self.work, "error.log")).read()[-2000:]
        except OSError:
            return ""

    def requests(self):
        """(status, bytes, path) of every request so far."""
        try:
            lines = open(os.path.join(self.work, "access.log")).read().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            status, size, _method, path = line.split(" ", 3)
            out.append((int(status), int(size), path))
        return out

    def stop(self):
        stop(self.work)


def stop(work):
    try:
        pid = int(open(os.path.join(work, "nginx.pid")).read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "start":
        print(Nginx(sys.argv[2], sys.argv[3]).url)
    elif len(sys.argv) == 3 and sys.argv[1] == "stop":
        stop(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "log":
        n = Nginx.__new__(Nginx)
        n.work = sys.argv[2]
        for status, size, path in n.requests():
            print(status, size, path)
    else:
        sys.exit(__doc__)
