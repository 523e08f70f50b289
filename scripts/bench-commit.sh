#!/usr/bin/env bash
# cairn commit vs ostree commit side by side; see bench_commit.py.
exec python3 "$(dirname "$0")/bench_commit.py" "$@"
