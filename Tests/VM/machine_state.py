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
    get PATH [BLOCK]  a value of a status by dotted path (fallback.boots,
                   deployments.0.bootCounter.triesLeft): JSON null is "null",
                   absent "none"
    counter I [BLOCK] deployment I's boot counter: "LEFT-DONE" or "blessed"
Entry names are compared without their boot counter (+LEFT[-DONE]): the
counter changes on every try, and LoaderEntrySelected is set before that.
"""
import json
import os
import re
import sys


def uncounted(entry):
    """An entry file name without systemd-boot's boot counter and .conf."""
    return re.sub(r"(\+\d+(-\d+)?)?(\.conf)?$", "", entry)


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
    if query in ("get", "counter"):
        index = int(sys.argv[4]) if len(sys.argv) > 4 else -1
        if not blocks or not (-len(blocks) <= index < len(blocks)):
            print("no-status-%d" % index)
            return
        value = blocks[index]
        path = sys.argv[3] if query == "get" else "deployments.%s.bootCounter" % sys.argv[3]
        for part in path.split("."):
            if isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                print("none")
                return
        if query == "counter":
            print("blessed" if value is None else "%d-%d" % (value["triesLeft"], value["triesDone"]))
        else:
            print("null" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() if isinstance(value, bool) else value)
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
            if uncounted(selected) != uncounted(want) or status.get("loaderEntrySelected") != selected:
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
