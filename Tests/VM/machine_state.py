#!/usr/bin/env python3
"""Reads what the VM test's agent printed on a console (machine-test.sh) and
answers one question about it, for the shell to compare.

usage: machine_state.py CONSOLE QUERY [BLOCK]
  BLOCK: which `cairn status --json` the script printed (0: the first; -1: the last)
  QUERY:
    booted         <checksum>.<serial> of the booted deployment (or "none")
    booted-version its commit's version
    default        <checksum>.<serial> of deployment 0
    default-version
    rollback       <checksum>.<serial> of deployment 1 (or "none")
    rollback-version
    count          how many deployments
    agree          "yes" when the ESP's cairn entries are exactly the entries
                   status lists, and systemd-boot's LoaderEntrySelected is the
                   booted deployment's entry; else what differs
    kernels-live   "yes" when the ESP's kernel folders are exactly those the
                   deployments boot; else what differs
    fact NAME      the value of a `FACT NAME VALUE` line the script printed
    field I KEY    deployment I's KEY in the last status (e.g. field 0 path)
"""
import json
import os
import sys


def agent_lines(console):
    with open(console, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("CAIRN-AGENT| "):
                yield line[len("CAIRN-AGENT| "):]


def parse(console):
    blocks, facts, current = [], {}, None
    esp = []  # (entries, kernels, selected) per status block
    for line in agent_lines(console):
        if line == "STATUS-JSON-BEGIN":
            current = []
        elif line == "STATUS-JSON-END":
            blocks.append(json.loads("\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
        elif line.startswith("FACT "):
            parts = line.split(" ", 2)
            facts[parts[1]] = parts[2] if len(parts) > 2 else ""
        elif line.startswith("ESP "):
            # ESP <entries, comma-separated> | <kernel folders> | <selected>
            entries, kernels, selected = (p.strip() for p in line[4:].split("|"))
            esp.append(([e for e in entries.split(",") if e], [k for k in kernels.split(",") if k], selected))
    return blocks, facts, esp


def name(d):
    return "%s.%d" % (d["checksum"], d["serial"]) if d else "none"


def main():
    console, query = sys.argv[1], sys.argv[2]
    blocks, facts, esp = parse(console)
    if query == "fact":
        print(facts.get(sys.argv[3], "none"))
        return
    if query == "field":
        ds = blocks[-1]["deployments"] if blocks else []
        i = int(sys.argv[3])
        print(ds[i].get(sys.argv[4], "none") if 0 <= i < len(ds) else "none")
        return
    index = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if not blocks or not (-len(blocks) <= index < len(blocks)):
        print("no-status-%d" % index)
        return
    status = blocks[index]
    ds = status["deployments"]
    booted = next((d for d in ds if d["booted"]), None)
    default = ds[0] if ds else None
    rollback = ds[1] if len(ds) > 1 else None
    if query == "booted":
        print(name(booted))
    elif query == "booted-version":
        print(booted["version"] if booted else "none")
    elif query == "default":
        print(name(default))
    elif query == "default-version":
        print(default["version"] if default else "none")
    elif query == "rollback":
        print(name(rollback))
    elif query == "rollback-version":
        print(rollback["version"] if rollback else "none")
    elif query == "count":
        print(len(ds))
    elif query in ("agree", "kernels-live"):
        if index < 0:
            index += len(blocks)
        if index >= len(esp):
            print("no ESP listing for status %d" % index)
            return
        entries, kernels, selected = esp[index]
        listed = sorted(os.path.basename(d["bootEntry"]) for d in ds)
        problems = []
        if query == "agree":
            if sorted(entries) != listed:
                problems.append("ESP entries %s, status %s" % (sorted(entries), listed))
            want = os.path.basename(booted["bootEntry"]) if booted else "none"
            if selected != want or status.get("loaderEntrySelected") != selected:
                problems.append("systemd-boot booted %s (status says %s), the booted deployment's entry is %s"
                                % (selected, status.get("loaderEntrySelected"), want))
        else:
            live = sorted(set("%s-%s" % (d["stateroot"], d["bootChecksum"]) for d in ds))
            if sorted(kernels) != live:
                problems.append("ESP kernels %s, live %s" % (sorted(kernels), live))
        print("yes" if not problems else "; ".join(problems))
    else:
        sys.exit("machine_state.py: unknown query " + query)


if __name__ == "__main__":
    main()
