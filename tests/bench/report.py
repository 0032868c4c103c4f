#!/usr/bin/env python3
"""Turns the pieces `tests/bench/run.sh` measured (one JSON file each in RESULTS_DIR) into the
table on stdout and build/bench.json. Targets are marked ✓/✗ (– when not measured); they never
change the exit code.

    report.py RESULTS_DIR OUT_JSON
"""

import datetime
import json
import os
import subprocess
import sys


def load(res, name):
    path = os.path.join(res, name + ".json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        return None


def mb(kb):
    return round(kb / 1024.0, 1) if isinstance(kb, (int, float)) and kb >= 0 else None


def wrk_entry(w):
    """wrk's µs figures as ms; invalid when any request failed (a 404 route is fast and wrong)."""
    if not w:
        return None
    errors = sum(w.get(k, 0) for k in ("errors_status", "errors_connect", "errors_read", "errors_write",
                                          "errors_timeout"))
    return {
        "rps": round(w["rps"], 1),
        "p50_ms": w["p50_us"] / 1000.0,
        "p90_ms": w["p90_us"] / 1000.0,
        "p99_ms": w["p99_us"] / 1000.0,
        "max_ms": w["max_us"] / 1000.0,
        "mean_ms": round(w["mean_us"] / 1000.0, 3),
        "requests": w["requests"],
        "errors": errors,
        "non_2xx": w.get("errors_status", 0),
        "valid": errors == 0 and w["requests"] > 0,
    }


def fmt(v, spec="{:.2f}", none="–"):
    return none if v is None else spec.format(v)


def mark(ok):
    return "–" if ok is None else ("✓" if ok else "✗")


def git_rev():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main():
    res, out_path = sys.argv[1], sys.argv[2]
    meta = load(res, "meta") or {}
    memory = load(res, "memory") or {}
    skipped = load(res, "skipped") or {}

    http = {}
    for name in ("bare", "context", "suggestions_warm", "suggestions_cold", "summary"):
        # each row ran PASSES times, alternating with the others: keep the best valid pass
        passes = [wrk_entry(load(res, "wrk_%s_%d" % (name, i))) for i in range(1, 10)]
        passes = [e for e in passes if e]
        if not passes:
            continue
        valid = [e for e in passes if e["valid"]]
        best = dict(max(valid, key=lambda e: e["rps"]) if valid else passes[-1])
        best["passes_rps"] = [e["rps"] for e in passes]
        http[name] = best
    bare = http.get("bare")

    def ratio(name):
        e = http.get(name)
        if not e or not bare or not e["valid"] or not bare["valid"] or not bare["rps"]:
            return None
        return round(e["rps"] / bare["rps"], 3)

    ratios = {"%s_vs_bare_rps" % k.replace("suggestions_", ""): ratio(k)
              for k in ("context", "suggestions_warm", "suggestions_cold", "summary")}

    miss = load(res, "suggestions_miss")
    lat = load(res, "sse_latency")
    fan = load(res, "sse_fanout")
    short, mid, long_ = load(res, "cost_short"), load(res, "cost_mid"), load(res, "cost_long")

    cost = None
    if short and mid and long_:
        def pick(d):
            return {"messages_in_conversation": None, "sent": d["sent"], "received": d["received"],
                    "xadd_to_event_p50_ms": d["xadd_to_event"].get("p50_ms"),
                    "xadd_to_event_p99_ms": d["xadd_to_event"].get("p99_ms"),
                    "server_recompute_ms_mean": d.get("server_recompute_ms_mean")}
        cost = {"short": pick(short), "mid": pick(mid), "long": pick(long_)}
        cost["short"]["messages_in_conversation"] = 10
        cost["mid"]["messages_in_conversation"] = 100
        cost["long"]["messages_in_conversation"] = 10000

        def rel(a, b, field):
            x, y = cost[a][field], cost[b][field]
            return round(x / y, 3) if x and y else None
        cost["long_vs_short_recompute"] = rel("long", "short", "server_recompute_ms_mean")
        cost["long_vs_short_latency_p50"] = rel("long", "short", "xadd_to_event_p50_ms")
        # "flat" is judged against 100 messages: from there on the context window is full, so any
        # growth is work proportional to the history (10 messages fill only part of the window)
        cost["long_vs_mid_recompute"] = rel("long", "mid", "server_recompute_ms_mean")
        cost["long_vs_mid_latency_p50"] = rel("long", "mid", "xadd_to_event_p50_ms")

    rss_no = memory.get("rss_kb_no_kb")
    mem = {
        "rss_mb_no_kb": mb(rss_no),
        "rss_mb_cdp_kb": mb(memory.get("rss_kb_cdp_kb")),
        "rss_mb_cdp_kb_transcripts": mb(memory.get("rss_kb_cdp_kb_transcripts")),
        "rss_mb_cdp_after_load": mb(memory.get("rss_kb_cdp_after_load")),
        "rss_mb_10k_kb": mb(memory.get("rss_kb_10k_kb")),
        "transcripts_import": memory.get("transcripts_import"),
    }
    for key, src in (("index_mb_cdp_kb", "rss_kb_cdp_kb"), ("index_mb_10k_kb", "rss_kb_10k_kb")):
        v = memory.get(src)
        ok = isinstance(v, int) and isinstance(rss_no, int) and v >= 0 and rss_no >= 0
        mem[key] = round((v - rss_no) / 1024.0, 1) if ok else None

    sse = None
    if lat:
        d = lat["xadd_to_event"]
        sse = {"messages": lat["sent"], "received": lat["received"], "interval_us": lat["interval_us"],
               "p50_ms": d.get("p50_ms"), "p90_ms": d.get("p90_ms"), "p99_ms": d.get("p99_ms"),
               "max_ms": d.get("max_ms"), "server_recompute_ms_mean": lat.get("server_recompute_ms_mean")}
    fanout = None
    if fan:
        d = fan["delivery"]
        fanout = {"subscribers": fan["subscribers"], "conversations": fan["conversations"], "open": fan["open"],
                  "rounds": fan["rounds"], "expected": fan["expected"], "delivered": fan["delivered"],
                  "open_seconds": fan["open_seconds"], "p50_ms": d.get("p50_ms"), "p99_ms": d.get("p99_ms"),
                  "max_ms": d.get("max_ms"), "rss_mb_before": mb(fan["rss_kb_before"]),
                  "rss_mb_subscribed": mb(fan["rss_kb_subscribed"]), "rss_mb": mb(fan["rss_kb_after"]),
                  "hwm_mb": mb(fan["hwm_kb"]), "kb_entries": 10000, "interval_us": fan.get("interval_us")}
        if "burst_delivery" in fan:
            b = fan["burst_delivery"]
            fanout.update({"burst_expected": fan["burst_expected"], "burst_delivered": fan["burst_delivered"],
                           "burst_p50_ms": b.get("p50_ms"), "burst_p99_ms": b.get("p99_ms"),
                           "burst_max_ms": b.get("max_ms")})
    miss_out = None
    if miss:
        miss_out = {"requests": miss["requests"], "ok": miss["ok"], "fresh": miss["fresh"],
                    "p50_ms": miss["latency"].get("p50_ms"), "p99_ms": miss["latency"].get("p99_ms"),
                    "max_ms": miss["latency"].get("max_ms"),
                    "server_took_p50_ms": miss["took"].get("p50_ms"), "server_took_p99_ms": miss["took"].get("p99_ms")}

    # ---- targets (shown, never enforced) ----
    def tgt(name, target, value, ok):
        return {"name": name, "target": target, "value": value, "ok": ok}

    warm_r = ratios.get("warm_vs_bare_rps")
    flat = cost.get("long_vs_mid_recompute") if cost else None
    if cost and flat is None:
        flat = cost.get("long_vs_mid_latency_p50")
    all_delivered = fanout and fanout["delivered"] == fanout["expected"] and fanout["open"] == fanout["subscribers"]
    targets = [
        tgt("warm suggestions throughput vs bare server", ">= 0.50", warm_r,
            None if warm_r is None else warm_r >= 0.5),
        tgt("suggestions on a cache miss, p99 ms", "< 5", miss_out and miss_out["p99_ms"],
            None if not miss_out or miss_out["p99_ms"] is None else miss_out["p99_ms"] < 5),
        tgt("XADD -> SSE suggestions event, p99 ms", "< 10", sse and sse["p99_ms"],
            None if not sse or sse["p99_ms"] is None else (sse["p99_ms"] < 10 and sse["received"] == sse["messages"])),
        tgt("1,000 SSE subscribers (10,000-entry KB), RSS MB", "< 50, all delivered", fanout and fanout["rss_mb"],
            None if not fanout or fanout["rss_mb"] is None else (fanout["rss_mb"] < 50 and bool(all_delivered))),
        tgt("per-message cost, 10,000 vs 100 messages (window full)", "flat (<= 1.5x)", flat,
            None if flat is None else flat <= 1.5),
        tgt("suggestions server-side p50 ms (50 messages, cdp KB + transcripts)", "< 1",
            miss_out and miss_out["server_took_p50_ms"],
            None if not miss_out or miss_out["server_took_p50_ms"] is None else miss_out["server_took_p50_ms"] < 1),
    ]

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        "meta": meta,
        "http": http,
        "ratios": ratios,
        "suggestions_miss": miss_out,
        "sse_latency": sse,
        "sse_fanout": fanout,
        "per_message_cost": cost,
        "memory": mem,
        "llm": load(res, "llm"),
        "targets": targets,
        "skipped": skipped,
    }
    with open(out_path, "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")

    # ---- the table ----
    p = print
    p()
    p("tandem bench  %s  rev %s  %s CPUs, TANDEM_THREADS=%s, wrk %s (best of %s), log level %s, %ss" % (
        report["date"], report["git_rev"], meta.get("cpus", "?"), meta.get("threads", "?") or "auto",
        meta.get("wrk", "?"), meta.get("passes", "?"), meta.get("log_level", "?"), meta.get("seconds", "?")))
    p("load average before / after: %s / %s (other work on the machine skews every figure)" % (
        meta.get("loadavg_start", "?"), meta.get("loadavg_end", "?")))
    p()
    p("%-40s %10s %8s %8s %8s" % ("HTTP (wrk, same run)", "req/s", "p50 ms", "p99 ms", "vs bare"))
    labels = [("bare", "bare libmicrohttpd, fixed 1 KB JSON"), ("context", "GET …/context (200 convs)"),
              ("suggestions_warm", "GET …/suggestions warm (watched)"),
              ("suggestions_cold", "GET …/suggestions cold (200 unwatched)"),
              ("summary", "GET …/summary (200 unwatched)")]
    for key, label in labels:
        e = http.get(key)
        if not e:
            p("%-40s %10s   %s" % (label, "–", skipped.get("wrk_" + key, "not measured")))
            continue
        r = 1.0 if key == "bare" else ratios.get("%s_vs_bare_rps" % key.replace("suggestions_", ""))
        note = "" if e["valid"] else "  INVALID: %d failed requests (%d non-2xx)" % (e["errors"], e["non_2xx"])
        if key == "suggestions_warm":
            note += "   target >= 0.50 %s" % mark(targets[0]["ok"])
        p("%-40s %10s %8.2f %8.2f %8s%s" % (label, "{:,.0f}".format(e["rps"]), e["p50_ms"], e["p99_ms"],
                                             fmt(r), note))
    p()
    p("Suggestions on a cache miss (1 connection; a new message before every request, 50-message window)")
    if miss_out:
        p("  client latency  p50 %s ms  p99 %s ms  max %s ms   (%d/%d answers based on the new message)"
          "   target p99 < 5 ms %s" % (fmt(miss_out["p50_ms"]), fmt(miss_out["p99_ms"]), fmt(miss_out["max_ms"]),
                                        miss_out["fresh"], miss_out["requests"], mark(targets[1]["ok"])))
        p("  server took_ms  p50 %s ms  p99 %s ms   target p50 < 1 ms %s" % (
            fmt(miss_out["server_took_p50_ms"], "{:.3f}"), fmt(miss_out["server_took_p99_ms"], "{:.3f}"),
            mark(targets[5]["ok"])))
    else:
        p("  – %s" % skipped.get("suggestions_miss", "not measured"))
    p()
    p("Live push (SSE)")
    if sse:
        p("  XADD -> suggestions event: %d/%d messages every %.1f ms   p50 %s  p99 %s  max %s ms"
          "   target p99 < 10 ms %s" % (sse["received"], sse["messages"], sse["interval_us"] / 1000.0,
                                        fmt(sse["p50_ms"]), fmt(sse["p99_ms"]), fmt(sse["max_ms"]),
                                        mark(targets[2]["ok"])))
    else:
        p("  XADD -> event: – %s" % skipped.get("sse_latency", "not measured"))
    if fanout:
        p("  %d subscribers on %d conversations (%d open in %.1f s), %d rounds of one XADD per conversation "
          "%.0f ms apart:" % (fanout["subscribers"], fanout["conversations"], fanout["open"], fanout["open_seconds"],
                              fanout["rounds"], (fanout["interval_us"] or 0) / 1000.0))
        p("    delivered %d/%d   p50 %s  p99 %s  max %s ms"
          % (fanout["delivered"], fanout["expected"], fmt(fanout["p50_ms"]),
             fmt(fanout["p99_ms"]), fmt(fanout["max_ms"])))
        if "burst_p99_ms" in fanout:
            p("  one more round with all %d XADDs at once: delivered %d/%d   p50 %s  p99 %s  max %s ms" % (
                fanout["conversations"], fanout["burst_delivered"], fanout["burst_expected"],
                fmt(fanout["burst_p50_ms"]), fmt(fanout["burst_p99_ms"]), fmt(fanout["burst_max_ms"])))
        p("  tandemd RSS (10,000-entry KB): %s MB before, %s MB subscribed, %s MB after delivery"
          "   target < 50 MB %s" % (fmt(fanout["rss_mb_before"], "{:.1f}"), fmt(fanout["rss_mb_subscribed"], "{:.1f}"),
                                    fmt(fanout["rss_mb"], "{:.1f}"), mark(targets[3]["ok"])))
    else:
        p("  subscribers: – %s" % skipped.get("sse_fanout", "not measured"))
    p()
    p("Cost of one new message (added, pushed, deleted again; 100 times per conversation)")
    if cost:
        p("  %-28s %8s %8s %8s %10s %10s" % ("messages in conversation", "10", "100", "10,000", "10k/10",
                                             "10k/100"))
        p("  %-28s %8s %8s %8s %10s %10s" % (
            "XADD -> event p50 ms", fmt(cost["short"]["xadd_to_event_p50_ms"]),
            fmt(cost["mid"]["xadd_to_event_p50_ms"]), fmt(cost["long"]["xadd_to_event_p50_ms"]),
            fmt(cost["long_vs_short_latency_p50"]), fmt(cost["long_vs_mid_latency_p50"])))
        p("  %-28s %8s %8s %8s %10s %10s   target flat (10k/100 <= 1.5) %s" % (
            "server recompute mean ms", fmt(cost["short"]["server_recompute_ms_mean"], "{:.3f}"),
            fmt(cost["mid"]["server_recompute_ms_mean"], "{:.3f}"),
            fmt(cost["long"]["server_recompute_ms_mean"], "{:.3f}"), fmt(cost["long_vs_short_recompute"]),
            fmt(cost["long_vs_mid_recompute"]), mark(targets[4]["ok"])))
    else:
        p("  – %s" % skipped.get("cost_short", "not measured"))
    p()
    p("Memory (VmRSS of tandemd, idle after start)")
    p("  no KB %s MB | cdp KB (%s entries) %s MB, + transcripts %s MB, after the run %s MB | 10,000-entry KB %s MB"
      % (fmt(mem["rss_mb_no_kb"], "{:.1f}"), meta.get("cdp_kb_entries", "?"), fmt(mem["rss_mb_cdp_kb"], "{:.1f}"),
         fmt(mem["rss_mb_cdp_kb_transcripts"], "{:.1f}"), fmt(mem["rss_mb_cdp_after_load"], "{:.1f}"),
         fmt(mem["rss_mb_10k_kb"], "{:.1f}")))
    p("  index memory: cdp KB %s MB, 10,000-entry KB %s MB" % (fmt(mem["index_mb_cdp_kb"], "{:.1f}"),
                                                              fmt(mem["index_mb_10k_kb"], "{:.1f}")))
    # SLOT: LLM overhead (issue 4 item 7): results/llm.json from tests/bench/llm_overhead.py
    p()
    p("tandem overhead on engine=llm (fake OpenAI server on loopback; a new message before every request)")
    llm = report["llm"]
    if llm and llm.get("modes"):
        p("  %-20s %17s %17s %19s %17s %9s %6s" % ("fake mode", "tandem p50/p99", "fake p50/p99",
                                                 "overhead p50/p99", "paired p50/p99", "llm/all", "slow"))
        for mode, e in llm["modes"].items():
            t, f, d = e.get("tandem", {}), e.get("fake", {}), e.get("paired_overhead", {})

            def pair(a, b):
                return "%s / %s" % (fmt(a), fmt(b))
            p("  %-20s %17s %17s %19s %17s %9s %6s" % (
                mode, pair(t.get("p50_ms"), t.get("p99_ms")), pair(f.get("p50_ms"), f.get("p99_ms")),
                pair(e.get("overhead_p50_ms"), e.get("overhead_p99_ms")), pair(d.get("p50_ms"), d.get("p99_ms")),
                "%d/%d" % (e.get("llm_answers", 0), t.get("n", 0)), e.get("slow_rounds", "–")))
            extra = []
            if e.get("fallbacks"):
                extra.append("fallbacks %s" % json.dumps(e["fallbacks"], sort_keys=True))
            if e.get("slow_rounds"):
                extra.append("%d rounds took > 250 ms more than the fake (tandem max %s ms)"
                             % (e["slow_rounds"], fmt(t.get("max_ms"))))
            if extra:
                p("  %-20s %s" % ("", "; ".join(extra)))
        p("  ms; overhead = tandem pXX - fake pXX; paired = pXX of (tandem - fake) per request;"
          " slow = requests > 250 ms over the fake")
    else:
        p("  – %s" % skipped.get("llm", "not measured"))
    if skipped:
        p()
        p("Not measured:")
        for k, v in sorted(skipped.items()):
            p("  %-22s %s" % (k, v))
    p()
    p("Targets: %d met, %d missed, %d not measured   (details: %s)" % (
        sum(1 for t in targets if t["ok"] is True), sum(1 for t in targets if t["ok"] is False),
        sum(1 for t in targets if t["ok"] is None), out_path))


if __name__ == "__main__":
    main()
