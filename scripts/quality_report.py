#!/usr/bin/env python3
"""Prints tandem's quality report (GET /v1/quality/report) as readable text.

    scripts/quality_report.py [--url http://127.0.0.1:8787] [--token T | --token-file F]
                              [--min-actions N] [--min-cluster N] [--limit N] [--json]

The report lists knowledge-base entries that agents often reject or heavily edit (rewrite
candidates) and frequent agent replies that match no KB entry (new macro candidates), each with
redacted examples. The server does the work; this script only formats its JSON.

Token: --token, else $TANDEM_TOKEN, else --token-file or $TANDEM_TOKEN_FILE, else the file
tandemd generates ($XDG_RUNTIME_DIR/tandem/token, or ~/.local/state/tandem/token).
Exit status: 0 printed, 1 the server answered with an error, 2 usage or connection problem.
Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request

WIDTH = 100


def default_token_file():
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "tandem", "token")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "tandem", "token")


def read_token(args):
    if args.token:
        return args.token
    if os.environ.get("TANDEM_TOKEN"):
        return os.environ["TANDEM_TOKEN"]
    path = args.token_file or os.environ.get("TANDEM_TOKEN_FILE") or default_token_file()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise SystemExit("quality_report: no token: pass --token, set TANDEM_TOKEN or --token-file (%s)" % e)


def fetch(args, token):
    query = {"min_actions": args.min_actions, "min_cluster": args.min_cluster, "limit": args.limit}
    query = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    url = args.url.rstrip("/") + "/v1/quality/report" + ("?" + query if query else "")
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            err = json.load(e).get("error", {})
            msg = "%s: %s" % (err.get("code"), err.get("message"))
        except ValueError:
            msg = e.reason
        print("quality_report: the server answered %d (%s)" % (e.code, msg), file=sys.stderr)
        sys.exit(1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        print("quality_report: cannot reach %s: %s" % (url, e), file=sys.stderr)
        sys.exit(2)


def pct(v):
    return "-" if v is None else "%d%%" % round(v * 100)


def block(label, text, indent):
    """'label text' wrapped, continuation lines under the text."""
    first = " " * indent + label
    rest = " " * (indent + len(label))
    return textwrap.fill(" ".join(text.split()), WIDTH, initial_indent=first, subsequent_indent=rest)


def render(rep):
    out = []
    when = datetime.datetime.fromtimestamp(rep.get("generated_ms", 0) / 1000, datetime.timezone.utc)
    out.append("tandem quality report - %s" % when.strftime("%Y-%m-%d %H:%M UTC"))
    scanned = "feedback entries read: %d" % rep.get("feedback_scanned", 0)
    if rep.get("truncated"):
        scanned += " (the newest %d only)" % rep.get("scan_limit", 0)
    scanned += "; imported replies read: %d" % rep.get("memory_replies_scanned", 0)
    if rep.get("memory_sampled"):
        scanned += " (a sample)"
    out.append(scanned)
    th = rep.get("thresholds", {})

    out.append("")
    out.append("KB entries to rewrite (rejected >= %s or edited >= %s on average; at least %s actions)"
               % (pct(th.get("rejection_rate")), pct(th.get("edit_ratio")), th.get("min_actions")))
    cands = rep.get("rewrite_candidates", [])
    if not cands:
        out.append("  none")
    for i, c in enumerate(cands, 1):
        title = ' "%s"' % c["title"] if c.get("title") else ""
        gone = "" if c.get("in_knowledge_base", True) else " (no longer in the KB)"
        out.append("  %d. %s%s%s" % (i, c["kb_id"], title, gone))
        out.append("     %d actions: %d accepted, %d edited, %d rejected; shown %s; rejection rate %s; "
                   "mean edit %s; why: %s"
                   % (c["actions"], c["accepted"], c["edited"], c["rejected"],
                      c["shown"] if c.get("shown") is not None else "-",
                      pct(c["rejected"] / c["actions"] if c["actions"] else None),
                      pct(c.get("mean_edit_ratio")), ", ".join(w.replace("_", " ") for w in c.get("why", []))))
        for ex in c.get("examples", []):
            if ex.get("text"):
                out.append(block("[%s] " % ex["action"], ex["text"], 5))
            if ex.get("reason"):
                out.append(block("[%s] reason: " % ex["action"], ex["reason"], 5))

    out.append("")
    out.append("New macro candidates (frequent agent replies that match no KB entry; at least %s alike)"
               % th.get("min_cluster"))
    macros = rep.get("macro_candidates", [])
    if not macros:
        out.append("  none")
    for i, m in enumerate(macros, 1):
        out.append("  %d. %d replies (%d from feedback, %d from imported transcripts)"
                   % (i, m["count"], m["from_feedback"], m["from_transcripts"]))
        for ex in m.get("examples", []):
            out.append(block("- ", ex, 5))
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description="Print tandem's quality report as text.")
    p.add_argument("--url", default=os.environ.get("TANDEM_URL", "http://127.0.0.1:8787"),
                   help="tandemd base URL (default: $TANDEM_URL or http://127.0.0.1:8787)")
    p.add_argument("--token", help="bearer token (default: $TANDEM_TOKEN or the token file)")
    p.add_argument("--token-file", help="file holding the token")
    p.add_argument("--min-actions", type=int, help="least actions before a KB entry is judged (server default 5)")
    p.add_argument("--min-cluster", type=int, help="least alike replies for a macro candidate (server default 3)")
    p.add_argument("--limit", type=int, help="items per list, 1-100 (server default 20)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    p.add_argument("--json", action="store_true", help="print the server's JSON instead of text")
    args = p.parse_args(argv)
    rep = fetch(args, read_token(args))
    if args.json:
        json.dump(rep, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
