#!/usr/bin/python3
"""tests/broker/test_metrics.py - rivvend's admin HTTP listener from the outside.

    RIVVEND=build-test/tools/rivvend /usr/bin/python3 tests/broker/test_metrics.py [-v]

A broker with two shards and its admin listener on a free port:

- /health and /ready answer 200; unknown paths 404, POST 405, HEAD has no body;
- /metrics is Prometheus text format 0.0.4, read back strictly: every line a
  HELP, a TYPE or a sample; every family has HELP and TYPE before its samples
  and is never split; names and labels well formed; counters end in _total;
  histogram buckets cumulative up to le="+Inf", which equals _count;
- confluent-kafka produces 2000 messages (acks=all) to a 3-partition topic
  (auto-created: --num.partitions=3) and
  kcat reads them back: records in and out move by what was sent, the
  partitions' log end offsets add up to it, Produce and Fetch requests and
  their latency counts move, Produce has no errors, the WAL made group commits
  and fdatasyncs, connections were accepted;
- a second broker given the same admin port starts anyway (the port in use is
  logged) and both stop with exit 0.
"""

import os
import re
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker as B  # noqa: E402

from confluent_kafka import Producer  # noqa: E402

N_MESSAGES = 2000
TOPIC = "metered"

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,%s)*)?\})? (\S+)$" % (NAME, LABEL, LABEL))
LABEL_ONE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
COMMENT = re.compile(r"^# (HELP|TYPE) (%s) (.+)$" % NAME)


def parse(text):
    """Read exposition text strictly; return {family: {"type", "help", "samples":
    [(name, {labels}, value)]}}. Raises AssertionError naming the bad line."""
    assert text.endswith("\n"), "the text does not end with a newline"
    fams = {}
    order = []
    current = None
    closed = set()

    def switch(fam):
        nonlocal current
        if fam != current:
            assert fam not in closed, "family %s is split" % fam
            if current is not None:
                closed.add(current)
            current = fam

    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        m = COMMENT.match(line)
        if m:
            kind, fam, rest = m.groups()
            f = fams.setdefault(fam, {"type": None, "help": None, "samples": []})
            if fam not in order:
                order.append(fam)
            switch(fam)
            key = kind.lower()
            assert f[key] is None, "two %s for %s" % (kind, fam)
            f[key] = rest
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram"), where
                if rest == "counter":
                    assert fam.endswith("_total"), "counter %s without _total" % fam
            continue
        assert not line.startswith("#"), "stray comment " + where
        m = SAMPLE.match(line)
        assert m, "not a sample " + where
        name, labels_text, value_text = m.groups()
        value = float(value_text)  # raises on a bad number
        labels = dict(LABEL_ONE.findall(labels_text or ""))
        fam = name
        if fam not in fams:
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[: -len(suffix)]
                if name.endswith(suffix) and fams.get(base, {}).get("type") == "histogram":
                    fam = base
        assert fam in fams, "sample before its HELP/TYPE " + where
        f = fams[fam]
        assert f["help"] and f["type"], "%s lacks HELP or TYPE" % fam
        switch(fam)
        f["samples"].append((name, labels, value))
    for fam, f in fams.items():
        assert f["help"] and f["type"], "%s lacks HELP or TYPE" % fam
        if f["type"] == "histogram":
            check_histogram(fam, f["samples"])
    return fams


def check_histogram(fam, samples):
    series = {}
    for name, labels, value in samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if name == fam + "_bucket":
            assert "le" in labels, "%s bucket without le" % fam
            assert s["sum"] is None and s["count"] is None, "%s: bucket after _sum" % fam
            s["buckets"].append((labels["le"], value))
        elif name == fam + "_sum":
            s["sum"] = value
        elif name == fam + "_count":
            s["count"] = value
        else:
            raise AssertionError("%s: sample %s" % (fam, name))
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        values = [v for _, v in s["buckets"]]
        assert les and les[-1] == "+Inf", "%s%s: no +Inf bucket" % (fam, key)
        bounds = [float(le) for le in les[:-1]]
        assert bounds == sorted(bounds), "%s%s: bounds not ascending" % (fam, key)
        assert values == sorted(values), "%s%s: buckets not cumulative" % (fam, key)
        assert s["count"] == values[-1], "%s%s: _count != +Inf bucket" % (fam, key)
        assert s["sum"] is not None, "%s%s: no _sum" % (fam, key)


def total(fams, fam, name=None, **want):
    """Sum of the samples of fam (or of sample `name`) whose labels include want."""
    return sum(v for n, labels, v in fams[fam]["samples"]
               if (name is None or n == name) and all(labels.get(k) == w for k, w in want.items()))


def http(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Metrics(B.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin_port = B.free_ports(1)
        cls.broker = B.Broker(name="metrics", shards=2, extra=[
            "--num.partitions=3", "--rivven.admin.listener=127.0.0.1:%d" % cls.admin_port]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def scrape(self):
        status, headers, body = http(self.admin_port, "/metrics")
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers)
        return parse(body)

    def test_1_health_ready_and_errors(self):
        self.assertEqual(http(self.admin_port, "/health")[::2], (200, "ok\n"))
        # The ports accept connections a moment before the shards are marked
        # serving (rivvend marks them once every listener is up): a readiness
        # probe is polled, so poll it.
        deadline = time.monotonic() + 10
        ready = http(self.admin_port, "/ready")[::2]
        while ready[0] == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
            ready = http(self.admin_port, "/ready")[::2]
        self.assertEqual(ready, (200, "ready\n"))
        self.assertEqual(http(self.admin_port, "/nothing")[0], 404)
        status, headers, _ = http(self.admin_port, "/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET, HEAD")
        status, _, body = http(self.admin_port, "/metrics", method="HEAD")
        self.assertEqual((status, body), (200, ""))

    def test_2_counters_move_with_traffic(self):
        before = self.scrape()
        self.assertEqual(total(before, "rivven_ready"), 1)
        self.assertEqual(total(before, "rivven_shards"), 2)
        bs = self.broker.bootstrap

        p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5})
        failures = []
        value_bytes = 0
        for i in range(N_MESSAGES):
            value = b"value-%06d" % i
            value_bytes += len(value)
            p.produce(TOPIC, value, key=b"k%d" % (i % 97),
                      on_delivery=lambda err, msg: err and failures.append(err))
            p.poll(0)
        self.assertEqual(p.flush(30), 0, "messages left unsent")
        self.assertEqual(failures, [])

        out = subprocess.run(["kcat", "-C", "-b", bs, "-t", TOPIC, "-e", "-q", "-o", "beginning",
                              "-f", "%s\\n"], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(out.stdout.splitlines()), N_MESSAGES)

        after = self.scrape()

        def delta(fam, name=None, **labels):
            was = total(before, fam, name, **labels) if fam in before else 0
            return total(after, fam, name, **labels) - was

        self.assertEqual(delta("rivven_topic_records_in_total", topic=TOPIC), N_MESSAGES)
        self.assertGreater(delta("rivven_topic_bytes_in_total", topic=TOPIC), value_bytes)
        self.assertGreaterEqual(delta("rivven_topic_batches_in_total", topic=TOPIC), 3)
        self.assertGreaterEqual(delta("rivven_topic_records_out_total", topic=TOPIC), N_MESSAGES)
        self.assertGreaterEqual(delta("rivven_topic_bytes_out_total", topic=TOPIC),
                                delta("rivven_topic_bytes_in_total", topic=TOPIC))
        ends = [(labels["partition"], v) for n, labels, v in
                after["rivven_partition_log_end_offset"]["samples"] if labels["topic"] == TOPIC]
        self.assertEqual(sorted(pt for pt, _ in ends), ["0", "1", "2"])
        self.assertEqual(sum(v for _, v in ends), N_MESSAGES)
        self.assertEqual(total(after, "rivven_partitions"), 3)

        produce_reqs = delta("rivven_kafka_requests_total", api="Produce")
        self.assertGreaterEqual(produce_reqs, 1)
        self.assertEqual(delta("rivven_kafka_request_errors_total", api="Produce"), 0)
        self.assertGreaterEqual(delta("rivven_kafka_requests_total", api="Fetch"), 1)
        self.assertGreaterEqual(delta("rivven_kafka_requests_total", api="Metadata"), 1)
        self.assertEqual(delta("rivven_kafka_request_duration_seconds",
                               name="rivven_kafka_request_duration_seconds_count",
                               api="Produce"), produce_reqs)
        for name, labels, v in after["rivven_kafka_requests_total"]["samples"]:
            count = total(after, "rivven_kafka_request_duration_seconds",
                          name="rivven_kafka_request_duration_seconds_count", **labels)
            self.assertEqual(count, v, "latency count of %s" % labels)

        self.assertGreaterEqual(delta("rivven_wal_group_commits_total"), 1)
        self.assertGreaterEqual(delta("rivven_wal_fsyncs_total"), 1)
        self.assertGreaterEqual(
            total(after, "rivven_wal_fsync_duration_seconds",
                  name="rivven_wal_fsync_duration_seconds_count"), 1)
        self.assertEqual(
            total(after, "rivven_wal_group_records", name="rivven_wal_group_records_sum"),
            total(after, "rivven_wal_appends_total"))
        self.assertGreaterEqual(delta("rivven_connections_accepted_total"), 2)
        self.assertGreater(total(after, "rivven_reactor_loop_turns_total"), 0)
        self.assertGreater(delta("rivven_mailbox_messages_received_total"), 0)
        for fam in ("rivven_hot_tier_hits_total", "rivven_reactor_stalls_total",
                    "rivven_mailbox_delay_seconds", "rivven_log_fds_open"):
            self.assertEqual(len(after[fam]["samples"]), 2, fam)  # one per shard

    def test_3_second_broker_on_the_same_admin_port(self):
        other = B.Broker(name="metrics-2", shards=1, extra=[
            "--rivven.admin.listener=127.0.0.1:%d" % self.admin_port])
        try:
            other.start()
            self.assertIn("no admin HTTP listener", other.log())
            self.assertEqual(http(self.admin_port, "/health")[0], 200)  # still the first one
            other.stop()
        finally:
            other.close()


if __name__ == "__main__":
    unittest.main()
