#!/usr/bin/env python3
"""Data for `make bench` (Python 3 standard library only).

    bench_data.py redis DATA_DIR PREFIX        Redis commands (RESP, for `redis-cli --pipe`) on stdout
    bench_data.py texts DATA_DIR               customer messages of the cdp dev cases, one per line
    bench_data.py kb10k DATA_DIR N             a synthetic N-entry KB (JSONL) built from the cdp KB

Conversations written (all built from the cdp dev cases of one brand, repeated, ending with a
customer turn; meta `brand`, `lang`, `customer_id`; one customer profile and history):

    bench-warm, bench-lat, bench-miss    50 messages (bench-miss 49: the bench adds the 50th)
    bench-cold-0 .. bench-cold-{COLD-1}  50 messages each, different brands and offsets
    bench-fan-0 .. bench-fan-{FAN-1}     50 messages each (the 1,000-subscriber test)
    bench-short                          9 messages (the bench adds the 10th)
    bench-mid                            99 messages (the bench adds the 100th)
    bench-long                           9,999 messages (the bench adds the 10,000th)
"""

import json
import os
import sys

COLD_CONVS = int(os.environ.get("BENCH_COLD_CONVS", "200"))
FAN_CONVS = int(os.environ.get("BENCH_SSE_CONVS", "100"))
CONV_LEN = 50


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def brand_threads(data_dir):
    """brand -> the messages of all its dev cases, in file order (brands with >= 3 cases first)."""
    by_brand = {}
    for case in read_jsonl(os.path.join(data_dir, "cdp", "dev_cases.jsonl")):
        msgs = [m for m in case["messages"] if m.get("text") and m.get("role") in ("customer", "agent")]
        by_brand.setdefault(case["brand"], []).extend(msgs)
    order = sorted(by_brand, key=lambda b: (-len(by_brand[b]), b))
    return [(b, by_brand[b]) for b in order if any(m["role"] == "customer" for m in by_brand[b])]


def conversation(thread, length, offset):
    """length messages from thread (repeated), starting at offset, the last one a customer turn."""
    n = len(thread)
    out = [thread[(offset + i) % n] for i in range(length - 1)]
    i = offset + length - 1
    while thread[i % n]["role"] != "customer":
        i += 1
    out.append(thread[i % n])
    return out


def cmd_redis(data_dir, prefix):
    threads = brand_threads(data_dir)
    w = sys.stdout.buffer
    cust = "bench-cust"
    w.write(resp("HSET", "%scust:{%s}:profile" % (prefix, cust), "name", "Anna Berg", "tier", "gold",
                 "country", "SE", "since", "2019-04-01"))
    for outcome in ("resolved", "refund issued", "escalated"):
        w.write(resp("XADD", "%scust:{%s}:history" % (prefix, cust), "*", "conv_id", "old-%s" % outcome.split()[0],
                     "summary", "Earlier contact about an order", "outcome", outcome, "tags", "order,billing"))

    def write_conv(conv, k, length):
        brand, thread = threads[k % len(threads)]
        key = "%sconv:{%s}:msgs" % (prefix, conv)
        w.write(resp("DEL", key))
        for m in conversation(thread, length, (k * 7) % len(thread)):
            w.write(resp("XADD", key, "*", "role", m["role"], "text", m["text"]))
        w.write(resp("HSET", "%sconv:{%s}:meta" % (prefix, conv), "brand", brand, "lang", "en",
                     "customer_id", cust, "channel", "chat", "agent_name", "Sam"))

    write_conv("bench-warm", 0, CONV_LEN)
    write_conv("bench-lat", 0, CONV_LEN)
    write_conv("bench-miss", 0, CONV_LEN - 1)
    for i in range(COLD_CONVS):
        write_conv("bench-cold-%d" % i, i, CONV_LEN)
    for i in range(FAN_CONVS):
        write_conv("bench-fan-%d" % i, i, CONV_LEN)
    write_conv("bench-short", 1, 9)
    write_conv("bench-mid", 1, 99)
    write_conv("bench-long", 1, 9999)


def cmd_texts(data_dir):
    for case in read_jsonl(os.path.join(data_dir, "cdp", "dev_cases.jsonl")):
        for m in case["messages"]:
            if m.get("role") == "customer" and m.get("text"):
                print(" ".join(m["text"].split()))


def cmd_kb10k(data_dir, n):
    """n entries: the cdp KB, then copies with new ids, titles and URLs. Bodies get two real agent
    replies from the transcripts appended so entries have article-like length and vocabulary."""
    kb = read_jsonl(os.path.join(data_dir, "cdp", "kb.jsonl"))
    replies = [m["text"] for t in read_jsonl(os.path.join(data_dir, "cdp", "transcripts.jsonl"))
               for m in t["messages"] if m.get("role") == "agent" and m.get("text")]
    out = sys.stdout
    for i in range(n):
        base = dict(kb[i % len(kb)])
        v = i // len(kb)
        if v:
            base["id"] = "%s-v%d" % (base["id"], v)
            base["title"] = "%s (variant %d)" % (base["title"], v)
            if base.get("url"):
                base["url"] = "%s#v%d" % (base["url"], v)
        base["body"] = "%s\n%s\n%s" % (base["body"], replies[(3 * i) % len(replies)],
                                       replies[(3 * i + 1) % len(replies)])
        out.write(json.dumps(base, ensure_ascii=False) + "\n")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    what, data_dir = sys.argv[1], sys.argv[2]
    if what == "redis":
        cmd_redis(data_dir, sys.argv[3] if len(sys.argv) > 3 else "tandem:")
    elif what == "texts":
        cmd_texts(data_dir)
    elif what == "kb10k":
        cmd_kb10k(data_dir, int(sys.argv[3]) if len(sys.argv) > 3 else 10000)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
