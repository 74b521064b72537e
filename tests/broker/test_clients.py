#!/usr/bin/python3
"""tests/broker/test_clients.py - rivvend driven by real clients.

    RIVVEND=build-test/tools/rivvend /usr/bin/python3 tests/broker/test_clients.py [-v] [Class[.test]]

Clients: python3-confluent-kafka (librdkafka) and kcat. Consumer groups are not
implemented by the broker, so every consumer assign()s partitions with explicit
offsets and never commits. Topics of the produce tests are auto-created (the
broker runs with --num.partitions), so they need Metadata, Produce, Fetch and
ListOffsets only; the Admin class needs the admin APIs.

- ProduceShards / ProduceForwarding: 100 000 keyed messages over 6 partitions at
  acks=all, with rivven.advertise.shards on (2 shards = 2 brokers) and off (one
  broker, requests forwarded between shards): every delivery succeeds; a key
  always lands on the same partition (librdkafka's crc32(key) % 6); delivered
  offsets are 0..n-1 per partition in produce order; a consumer reads back
  exactly those messages at those offsets; watermarks match; after SIGTERM
  (exit 0) and a restart the same messages are read again.
- Compression: gzip, snappy, lz4 and zstd batches (small and 200 KB values)
  produced and consumed byte for byte.
- Admin: AdminClient create_topics (and its errors), describe_configs (topic and
  broker), alter_configs (persisted across a restart), create_partitions,
  delete_topics; raw DeleteRecords, IncrementalAlterConfigs, DescribeCluster and
  DescribeLogDirs (confluent-kafka 1.7.0 has no call for them); offsets_for_times.
- KillNine: a child process produces at acks=all and reports every delivered
  (partition, offset, value); the broker is killed with SIGKILL mid-stream and
  restarted on the same data directory: every delivered message is at its
  delivered offset, and new messages get offsets after them.
- Kcat / KcatForwarding: kcat -P -K: and kcat -C -e -o beginning -f '%k:%s\\n'
  round trip (same lines, per-key order kept, key -> partition stable), kcat -L
  and kcat -L -J metadata.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker as B  # noqa: E402

try:
    from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                                 TopicPartition)
    from confluent_kafka.admin import (AdminClient, ConfigResource, NewPartitions,
                                       NewTopic)
except ImportError:  # the runner skips (77) before we get here
    pass

BIG_TIMEOUT = 60  # seconds for a flush or a consume of a whole topic


# ---- client helpers ---------------------------------------------------------

class ClientLog:
    """librdkafka's error_cb, kept for failure messages."""

    def __init__(self):
        self.items = []

    def __call__(self, err):
        self.items.append(str(err))

    def tail(self, n=8):
        return "; ".join(self.items[-n:]) or "none"


def make_producer(bs, log=None, **conf):
    c = {"bootstrap.servers": bs, "acks": "all", "linger.ms": 5,
         "message.timeout.ms": 30000, "enable.idempotence": False}
    if log is not None:
        c["error_cb"] = log
    c.update(conf)
    return Producer(c)


def make_consumer(bs, log=None, **conf):
    c = {"bootstrap.servers": bs, "group.id": "rivven-test-unused",
         "enable.auto.commit": False, "enable.auto.offset.store": False,
         "auto.offset.reset": "error", "enable.partition.eof": False,
         "fetch.wait.max.ms": 100}
    if log is not None:
        c["error_cb"] = log
    c.update(conf)
    return Consumer(c)


def produce_all(p, topic, items, log, timeout=BIG_TIMEOUT):
    """Produce items [(key, value[, partition[, timestamp]])]; returns
    [(partition, offset, timestamp)] per item in order. AssertionError when a
    delivery failed or did not finish."""
    results = [None] * len(items)
    errors = []

    def cb(i):
        def report(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                results[i] = (msg.partition(), msg.offset(), msg.timestamp()[1])
        return report

    for i, it in enumerate(items):
        kw = {"key": it[0], "value": it[1], "on_delivery": cb(i)}
        if len(it) > 2 and it[2] is not None:
            kw["partition"] = it[2]
        if len(it) > 3 and it[3] is not None:
            kw["timestamp"] = it[3]
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(timeout)
    if errors:
        raise AssertionError("%d of %d deliveries to %s failed, first: message %d: %s "
                             "(client errors: %s)" % (len(errors), len(items), topic,
                                                      errors[0][0], errors[0][1], log.tail()))
    if left:
        raise AssertionError("%d of %d messages to %s not delivered within %d s "
                             "(client errors: %s)" % (left, len(items), topic, timeout, log.tail()))
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise AssertionError("%d messages got no delivery report" % len(missing))
    return results


def watermarks(c, topic, partition, timeout=10):
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout,
                                       cached=False)
    except KafkaException as e:
        raise AssertionError("watermarks of %s[%d]: %s" % (topic, partition, e.args[0]))


def consume_range(bs, topic, starts, ends, log, timeout=BIG_TIMEOUT, **conf):
    """Read partition p from starts[p] up to (excluding) ends[p]; returns
    {p: [(offset, key, value, timestamp)]}. AssertionError on timeout."""
    c = make_consumer(bs, log, **conf)
    got = {p: [] for p in starts}
    errors = []
    try:
        c.assign([TopicPartition(topic, p, starts[p]) for p in starts if ends[p] > starts[p]])
        todo = {p for p in starts if ends[p] > starts[p]}
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    errors.append(str(m.error()))
                    continue
                p = m.partition()
                got[p].append((m.offset(), m.key(), m.value(), m.timestamp()[1]))
                if m.offset() >= ends[p] - 1:
                    todo.discard(p)
        if todo:
            raise AssertionError(
                "consuming %s: partitions %s not read to their end within %d s: read %s of %s "
                "(consumer errors: %s; client errors: %s)"
                % (topic, sorted(todo), timeout, {p: len(got[p]) for p in sorted(todo)},
                   {p: ends[p] - starts[p] for p in sorted(todo)}, errors[-5:], log.tail()))
        # nothing beyond the end shows up
        for m in c.consume(num_messages=100, timeout=0.3):
            if not m.error():
                got[m.partition()].append((m.offset(), m.key(), m.value(), m.timestamp()[1]))
    finally:
        c.close()
    return got


def topic_metadata(client, topic, timeout=10):
    md = client.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None:
        raise AssertionError("metadata has no topic %s (topics: %s)" % (topic, sorted(md.topics)))
    if t.error is not None:
        raise AssertionError("metadata of %s: %s" % (topic, t.error))
    return md, t


def wait_partitions(client, topic, n, timeout=15):
    """Wait until metadata shows topic with n partitions; returns (md, topic md)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md, t = topic_metadata(client, topic)
            if len(t.partitions) == n:
                return md, t
            last = "%d partitions" % len(t.partitions)
        except (AssertionError, KafkaException) as e:
            last = str(e)
        time.sleep(0.2)
    raise AssertionError("metadata of %s: want %d partitions, last saw: %s" % (topic, n, last))


def leader_port(client, topic, partition):
    md, t = topic_metadata(client, topic)
    leader = t.partitions[partition].leader
    if leader not in md.brokers:
        raise AssertionError("%s[%d]: leader %d is not among the brokers %s"
                             % (topic, partition, leader, sorted(md.brokers)))
    return md.brokers[leader].port


def future_error(fut, timeout=60):
    """None if the admin future succeeded, else its KafkaError."""
    try:
        fut.result(timeout)
        return None
    except KafkaException as e:
        return e.args[0]
    except concurrent.futures.TimeoutError:
        raise AssertionError("an admin request got no result within %d s" % timeout)


# ---- (a) produce and consume 100 000 keyed messages ---------------------------

N_MESSAGES = 100000
N_PARTITIONS = 6


class ProduceMixin:
    advertise = True

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name=cls.__name__, advertise_shards=cls.advertise,
                              extra=["--num.partitions=%d" % N_PARTITIONS]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def test_keyed_100k(self):
        bs = self.broker.bootstrap
        log = ClientLog()
        topic = "keyed"
        p = make_producer(bs, log, **{"batch.num.messages": 10000})
        items = [(b"key-%d" % (i % 4999), b"value-%06d" % i) for i in range(N_MESSAGES)]
        t0 = time.monotonic()
        res = produce_all(p, topic, items, log)
        t_produce = time.monotonic() - t0

        md, tmd = topic_metadata(p, topic)
        self.assertEqual(len(tmd.partitions), N_PARTITIONS, "auto-created with num.partitions")
        want_brokers = self.broker.shards if self.advertise else 1
        self.assertEqual(len(md.brokers), want_brokers,
                         "brokers in Metadata: %s" % {b.id: (b.host, b.port) for b in md.brokers.values()})
        self.assertEqual(sorted(b.port for b in md.brokers.values()), self.broker.ports())
        leaders = {pm.id: pm.leader for pm in tmd.partitions.values()}
        for pid, leader in leaders.items():
            self.assertIn(leader, md.brokers, "partition %d: leader %d unknown" % (pid, leader))
        if self.advertise:
            self.assertEqual(len(set(leaders.values())), self.broker.shards,
                             "partition leaders %s: not spread over the shards" % leaders)

        # key -> partition stable, and what librdkafka's consistent_random picks
        by_key = {}
        for (key, _), (part, _, _) in zip(items, res):
            by_key.setdefault(key, set()).add(part)
        unstable = {k: v for k, v in by_key.items() if len(v) != 1}
        self.assertFalse(unstable, "keys on several partitions: %s" % list(unstable.items())[:5])
        wrong = [k for k, v in by_key.items() if v != {zlib.crc32(k) % N_PARTITIONS}]
        self.assertFalse(wrong, "keys not on crc32(key) %% %d: %s" % (N_PARTITIONS, wrong[:5]))

        # per partition: offsets 0..n-1 in produce order
        per = {p_: [] for p_ in range(N_PARTITIONS)}
        for i, (part, off, _) in enumerate(res):
            per[part].append((off, i))
        for part, lst in per.items():
            offs = [o for o, _ in lst]
            self.assertEqual(offs, list(range(len(lst))),
                             "partition %d: delivered offsets not 0..%d in produce order (first "
                             "bad at %s)" % (part, len(lst) - 1,
                                             next((k for k, o in enumerate(offs) if o != k), None)))
        self.assertTrue(all(per.values()), "a partition got nothing: %s"
                        % {k: len(v) for k, v in per.items()})

        c = make_consumer(bs, log)
        for part, lst in per.items():
            self.assertEqual(watermarks(c, topic, part), (0, len(lst)), "watermarks of %d" % part)
        c.close()

        def check_consumed(when):
            t1 = time.monotonic()
            got = consume_range(bs, topic, {p_: 0 for p_ in per},
                                {p_: len(v) for p_, v in per.items()}, log)
            for part, lst in per.items():
                want = [(off, items[i][0], items[i][1]) for off, i in lst]
                have = [(o, k, v) for o, k, v, _ in got[part]]
                if have != want:
                    first = next((k for k in range(min(len(have), len(want)))
                                  if have[k] != want[k]), min(len(have), len(want)))
                    self.fail("%s: partition %d: read %d messages, want %d; first difference "
                              "at index %d: %s vs %s" % (when, part, len(have), len(want), first,
                                                         have[first:first + 1], want[first:first + 1]))
            return time.monotonic() - t1

        t_consume = check_consumed("after producing")
        p.flush(1)
        del p
        self.broker.stop()  # SIGTERM, exit 0
        self.broker.start()
        check_consumed("after a restart")
        sys.stderr.write("  %d messages: produced in %.2f s, consumed in %.2f s (advertise.shards=%s)\n"
                         % (N_MESSAGES, t_produce, t_consume, self.advertise))


class ProduceShards(ProduceMixin, B.BrokerTestCase):
    advertise = True


class ProduceForwarding(ProduceMixin, B.BrokerTestCase):
    advertise = False


# ---- (b) compression codecs -------------------------------------------------

class Compression(B.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="compression", extra=["--num.partitions=3"]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def codec_round_trip(self, codec):
        bs = self.broker.bootstrap
        log = ClientLog()
        topic = "codec-" + codec
        p = make_producer(bs, log, **{"compression.type": codec, "linger.ms": 20})
        text = b"the quick brown fox jumps over the lazy dog %d "
        items = [(b"k%d" % (i % 17), (text % i) * (1 + i % 5)) for i in range(3000)]
        items += [(b"big%d" % i, bytes(range(256)) * 400 + (text % i) * 1000) for i in range(3)]
        items += [(None, b""), (b"nullvalue", None)]
        res = produce_all(p, topic, items, log)
        ends = {}
        for part, off, _ in res:
            ends[part] = max(ends.get(part, 0), off + 1)
        got = consume_range(bs, topic, {p_: 0 for p_ in ends}, ends, log)
        have = {(part, o): (k, v) for part, lst in got.items() for o, k, v, _ in lst}
        for (key, value), (part, off, _) in zip(items, res):
            self.assertIn((part, off), have, "%s: message at %d/%d not read" % (codec, part, off))
            self.assertEqual(have[(part, off)], (key, value),
                             "%s: message at %d/%d differs" % (codec, part, off))
        self.assertEqual(len(have), len(items), "%s: read %d messages, produced %d"
                         % (codec, len(have), len(items)))

    def test_gzip(self):
        self.codec_round_trip("gzip")

    def test_snappy(self):
        self.codec_round_trip("snappy")

    def test_lz4(self):
        self.codec_round_trip("lz4")

    def test_zstd(self):
        self.codec_round_trip("zstd")


# ---- (c) admin --------------------------------------------------------------

RES_TOPIC, RES_BROKER = 2, 4


def code_name(code):
    try:
        return KafkaError(code).name()
    except Exception:  # noqa: BLE001
        return str(code)


class Admin(B.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="admin", extra=["--num.partitions=2"]).start()
        cls.log = ClientLog()
        cls.admin = AdminClient({"bootstrap.servers": cls.broker.bootstrap, "error_cb": cls.log})

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def reconnect(self):
        type(self).admin = AdminClient({"bootstrap.servers": self.broker.bootstrap,
                                        "error_cb": self.log})

    def create(self, name, partitions, config=None, validate_only=False):
        fs = self.admin.create_topics([NewTopic(name, partitions, 1, config=config or {})],
                                      operation_timeout=10, request_timeout=15,
                                      validate_only=validate_only)
        return future_error(fs[name])

    def must_create(self, name, partitions, config=None):
        err = self.create(name, partitions, config)
        if err is not None:
            self.fail("create_topics %s (%d partitions, %s): %s (client errors: %s)"
                      % (name, partitions, config, err, self.log.tail()))
        return wait_partitions(self.admin, name, partitions)

    def describe(self, restype, name):
        res = ConfigResource(restype, name)
        fs = self.admin.describe_configs([res], request_timeout=30)
        try:
            return list(fs.values())[0].result(30)
        except KafkaException as e:
            self.fail("describe_configs %s %s: %s" % (restype, name, e.args[0]))

    def assert_error(self, err, code, what):
        if err is None:
            self.fail("%s: succeeded, want %s" % (what, code_name(code)))
        self.assertEqual(err.code(), code, "%s: got %s, want %s" % (what, err, code_name(code)))

    # -- create / delete / partitions --

    def test_create_topics(self):
        md, t = self.must_create("adm-create", 3, {"retention.ms": "3600000"})
        self.assertEqual(sorted(t.partitions), [0, 1, 2])
        for pm in t.partitions.values():
            self.assertIn(pm.leader, md.brokers)
            self.assertEqual(pm.error, None, "partition %d: %s" % (pm.id, pm.error))
        self.assert_error(self.create("adm-create", 3), KafkaError.TOPIC_ALREADY_EXISTS,
                          "creating it again")
        for bad in ("", ".", "..", "a/b", "spaces are bad", "x" * 250):
            self.assert_error(self.create(bad, 1), KafkaError.TOPIC_EXCEPTION,
                              "creating topic %r" % bad)
        self.assert_error(self.create("adm-zero", 0), KafkaError.INVALID_PARTITIONS,
                          "0 partitions")
        self.assert_error(self.create("adm-badcfg", 1, {"retention.ms": "soon"}),
                          KafkaError.INVALID_CONFIG, "retention.ms=soon")
        self.assert_error(self.create("adm-badkey", 1, {"no.such.config": "1"}),
                          KafkaError.INVALID_CONFIG, "an unknown config key")
        # validate_only creates nothing
        self.assertIsNone(self.create("adm-validate", 4, validate_only=True),
                          "validate_only create_topics")
        all_topics = self.admin.list_topics(timeout=10).topics
        self.assertNotIn("adm-validate", all_topics, "validate_only created the topic")
        self.assertNotIn("adm-zero", all_topics)

    def test_create_partitions(self):
        self.must_create("adm-parts", 2)
        fs = self.admin.create_partitions([NewPartitions("adm-parts", 5)], operation_timeout=20,
                                          request_timeout=30)
        err = future_error(fs["adm-parts"])
        self.assertIsNone(err, "create_partitions to 5: %s" % err)
        wait_partitions(self.admin, "adm-parts", 5)
        # the new partitions take data
        log = ClientLog()
        p = make_producer(self.broker.bootstrap, log, **{"topic.metadata.refresh.interval.ms": 500})
        res = produce_all(p, "adm-parts", [(b"k", b"v%d" % i, i) for i in range(5)], log)
        self.assertEqual([r[:2] for r in res], [(i, 0) for i in range(5)])
        fs = self.admin.create_partitions([NewPartitions("adm-parts", 3)], request_timeout=30)
        self.assert_error(future_error(fs["adm-parts"]), KafkaError.INVALID_PARTITIONS,
                          "shrinking to 3 partitions")
        fs = self.admin.create_partitions([NewPartitions("adm-none", 3)], request_timeout=30)
        self.assert_error(future_error(fs["adm-none"]), KafkaError.UNKNOWN_TOPIC_OR_PART,
                          "create_partitions of an unknown topic")

    def test_delete_topics(self):
        self.must_create("adm-del", 2)
        log = ClientLog()
        p = make_producer(self.broker.bootstrap, log)
        produce_all(p, "adm-del", [(b"k", b"v%d" % i, i % 2) for i in range(10)], log)
        del p  # a producer that knows the topic could auto-create it again
        fs = self.admin.delete_topics(["adm-del"], operation_timeout=20, request_timeout=30)
        err = future_error(fs["adm-del"])
        self.assertIsNone(err, "delete_topics: %s" % err)
        deadline = time.monotonic() + 10
        while "adm-del" in self.admin.list_topics(timeout=10).topics:
            self.assertLess(time.monotonic(), deadline, "adm-del still in metadata 10 s after delete")
            time.sleep(0.2)
        fs = self.admin.delete_topics(["adm-del"], request_timeout=30)
        self.assert_error(future_error(fs["adm-del"]), KafkaError.UNKNOWN_TOPIC_OR_PART,
                          "deleting it again")
        # the name can be used again, and starts empty
        self.must_create("adm-del", 1)
        c = make_consumer(self.broker.bootstrap, log)
        self.assertEqual(watermarks(c, "adm-del", 0), (0, 0), "a re-created topic is empty")
        c.close()

    # -- configs --

    def test_describe_configs(self):
        self.must_create("adm-desc", 1, {"retention.ms": "3600000", "cleanup.policy": "delete"})
        cfg = self.describe("topic", "adm-desc")
        for key in ("retention.ms", "retention.bytes", "segment.bytes", "cleanup.policy",
                    "compression.type", "max.message.bytes", "message.timestamp.type"):
            self.assertIn(key, cfg, "describe_configs of a topic lists %s (it lists %s)"
                          % (key, sorted(cfg)))
        self.assertEqual(cfg["retention.ms"].value, "3600000")
        self.assertFalse(cfg["retention.ms"].is_default, "retention.ms was set at creation")
        self.assertEqual(cfg["retention.bytes"].value, "-1")
        self.assertTrue(cfg["retention.bytes"].is_default, "retention.bytes is a default")
        bcfg = self.describe("broker", "0")
        self.assertIn("num.partitions", bcfg, "broker configs list num.partitions (they list %s)"
                      % sorted(bcfg)[:20])
        self.assertEqual(bcfg["num.partitions"].value, "2")
        with self.assertRaises(AssertionError, msg="describe_configs of an unknown topic fails"):
            self.describe("topic", "adm-no-such-topic")

    def test_alter_configs(self):
        self.must_create("adm-alter", 1, {"retention.ms": "3600000"})
        res = ConfigResource("topic", "adm-alter",
                             set_config={"retention.bytes": "1048576", "segment.bytes": "1048576"})
        fs = self.admin.alter_configs([res], request_timeout=30)
        err = future_error(list(fs.values())[0])
        self.assertIsNone(err, "alter_configs: %s" % err)
        cfg = self.describe("topic", "adm-alter")
        self.assertEqual(cfg["retention.bytes"].value, "1048576")
        self.assertEqual(cfg["segment.bytes"].value, "1048576")
        # AlterConfigs replaces the whole set: retention.ms is back to its default
        self.assertTrue(cfg["retention.ms"].is_default,
                        "retention.ms after an AlterConfigs without it: %s (is_default %s)"
                        % (cfg["retention.ms"].value, cfg["retention.ms"].is_default))
        bad = ConfigResource("topic", "adm-alter", set_config={"retention.bytes": "lots"})
        self.assert_error(future_error(list(self.admin.alter_configs([bad]).values())[0]),
                          KafkaError.INVALID_CONFIG, "retention.bytes=lots")
        unknown = ConfigResource("topic", "adm-no-such-topic", set_config={"retention.ms": "1"})
        self.assert_error(future_error(list(self.admin.alter_configs([unknown]).values())[0]),
                          KafkaError.UNKNOWN_TOPIC_OR_PART, "alter_configs of an unknown topic")
        # persisted: the values survive a restart
        self.broker.stop()
        self.broker.start()
        self.reconnect()
        cfg = self.describe("topic", "adm-alter")
        self.assertEqual(cfg["retention.bytes"].value, "1048576", "retention.bytes after a restart")
        self.assertEqual(cfg["segment.bytes"].value, "1048576", "segment.bytes after a restart")

    def test_incremental_alter_configs(self):
        self.must_create("adm-incr", 1, {"retention.ms": "3600000"})
        with B.RawClient(self.broker.port) as c:
            v = B.pick_version(c.api_versions(), 44, [0, 1], "IncrementalAlterConfigs")
            flex = v >= 1

            def request(ops, validate_only=False):
                w = B.Writer(flex)

                def cfg(w, o):
                    w.string(o[0]).i8(o[1]).string(o[2]).tags()

                def resource(w, r):
                    w.i8(RES_TOPIC).string(r).array(ops, cfg).tags()
                w.array(["adm-incr"], resource).bool(validate_only).tags()
                r = B.Reader(c.request(44, v, w.b, flex), flex)
                r.i32()
                out = r.array(lambda r: (r.i16(), r.string(), r.i8(), r.string(), r.tags()))
                self.assertEqual(len(out), 1)
                return out[0][0], out[0][1]

            err, msg = request([("retention.bytes", 0, "2097152")])  # SET
            self.assertEqual(err, 0, "IncrementalAlterConfigs v%d SET: error %s %s"
                             % (v, code_name(err), msg))
            cfg = self.describe("topic", "adm-incr")
            self.assertEqual(cfg["retention.bytes"].value, "2097152")
            self.assertEqual(cfg["retention.ms"].value, "3600000", "an incremental SET keeps the rest")
            err, msg = request([("retention.ms", 1, None)])  # DELETE
            self.assertEqual(err, 0, "IncrementalAlterConfigs DELETE: %s %s" % (code_name(err), msg))
            cfg = self.describe("topic", "adm-incr")
            self.assertTrue(cfg["retention.ms"].is_default, "retention.ms after DELETE")
            self.assertEqual(cfg["retention.bytes"].value, "2097152")
            err, msg = request([("retention.bytes", 0, "nope")])
            self.assertEqual(err, KafkaError.INVALID_CONFIG, "SET retention.bytes=nope: %s"
                             % code_name(err))

    # -- records --

    def test_delete_records(self):
        self.must_create("adm-delrec", 2)
        log = ClientLog()
        p = make_producer(self.broker.bootstrap, log)
        produce_all(p, "adm-delrec", [(b"k", b"v%d" % i, 0) for i in range(100)], log)
        port = leader_port(self.admin, "adm-delrec", 0)
        with B.RawClient(port) as c:
            v = B.pick_version(c.api_versions(), 21, [0, 1, 2], "DeleteRecords")
            flex = v >= 2

            def delete(partition, offset):
                w = B.Writer(flex)

                def part(w, x):
                    w.i32(x[0]).i64(x[1]).tags()

                def topic(w, t):
                    w.string(t).array([(partition, offset)], part).tags()
                w.array(["adm-delrec"], topic).i32(10000).tags()
                r = B.Reader(c.request(21, v, w.b, flex), flex)
                r.i32()
                topics = r.array(lambda r: (r.string(), r.array(
                    lambda r: (r.i32(), r.i64(), r.i16(), r.tags())), r.tags()))
                self.assertEqual(len(topics), 1)
                self.assertEqual(len(topics[0][1]), 1)
                _, low, err, _ = topics[0][1][0]
                return low, err

            low, err = delete(0, 40)
            self.assertEqual((low, err), (40, 0), "DeleteRecords v%d before 40: low watermark %d, "
                             "error %s" % (v, low, code_name(err)))
            cons = make_consumer(self.broker.bootstrap, log)
            self.assertEqual(watermarks(cons, "adm-delrec", 0), (40, 100))
            cons.close()
            got = consume_range(self.broker.bootstrap, "adm-delrec", {0: 40}, {0: 100}, log)
            self.assertEqual([(o, val) for o, _, val, _ in got[0]],
                             [(i, b"v%d" % i) for i in range(40, 100)])
            # from OFFSET_BEGINNING the first message is 40
            got = consume_range(self.broker.bootstrap, "adm-delrec", {0: -2}, {0: 100}, log)
            self.assertEqual(got[0][0][0], 40, "the first offset after DeleteRecords")
            low, err = delete(0, 1000)
            self.assertEqual(err, KafkaError.OFFSET_OUT_OF_RANGE,
                             "DeleteRecords beyond the high watermark: %s" % code_name(err))
            low, err = delete(0, -1)  # up to the high watermark
            self.assertEqual((low, err), (100, 0), "DeleteRecords -1: low %d, error %s"
                             % (low, code_name(err)))

    def test_offsets_for_times(self):
        self.must_create("adm-time", 1)
        log = ClientLog()
        p = make_producer(self.broker.bootstrap, log)
        base = (int(time.time()) - 3600) * 1000
        res = produce_all(p, "adm-time",
                          [(b"k", b"v%d" % i, 0, base + i * 1000) for i in range(10)], log)
        self.assertEqual([r[1] for r in res], list(range(10)))
        c = make_consumer(self.broker.bootstrap, log)
        try:
            for ts, want in ((base - 1, 0), (base, 0), (base + 3500, 4), (base + 9000, 9),
                             (base + 9001, -1)):
                out = c.offsets_for_times([TopicPartition("adm-time", 0, ts)], timeout=10)
                self.assertIsNone(out[0].error, "offsets_for_times(%d): %s" % (ts, out[0].error))
                self.assertEqual(out[0].offset, want, "offsets_for_times(base + %d ms)" % (ts - base))
            self.assertEqual(watermarks(c, "adm-time", 0), (0, 10))
        finally:
            c.close()
        got = consume_range(self.broker.bootstrap, "adm-time", {0: 0}, {0: 10}, log)
        self.assertEqual([t for _, _, _, t in got[0]], [base + i * 1000 for i in range(10)],
                         "CreateTime timestamps kept")

    def test_timestamp_bounds(self):
        """message.timestamp.before.max.ms: an old CreateTime record is refused
        with INVALID_TIMESTAMP (librdkafka does not retry it), a current one
        goes in, and DescribeConfigs shows the bound."""
        self.must_create("adm-tsbound", 1, {"message.timestamp.before.max.ms": "60000"})
        log = ClientLog()
        p = make_producer(self.broker.bootstrap, log)
        errors = []
        p.produce("adm-tsbound", key=b"k", value=b"old",
                  timestamp=(int(time.time()) - 3600) * 1000,
                  on_delivery=lambda err, msg: errors.append(err))
        self.assertEqual(p.flush(60), 0)
        self.assertEqual(len(errors), 1)
        self.assertIsNotNone(errors[0], "an hour-old record was accepted")
        self.assertEqual(errors[0].code(), KafkaError.INVALID_TIMESTAMP, str(errors[0]))
        # Produce v8+ carries the reason in the partition's error_message.
        old = B.record_batch([(b"k", b"old")], timestamp=(int(time.time()) - 3600) * 1000)
        w = B.Writer()
        w.string(None).i16(-1).i32(10000)
        w.array(["adm-tsbound"], lambda w, t: w.string(t).array(
            [0], lambda w, p: w.i32(p).bytes_(old)))
        with B.RawClient(self.broker.port) as c:
            r = B.Reader(c.request(0, 8, w.b))
        parts = r.array(lambda r: (r.string(), r.array(lambda r: (
            r.i32(), r.i16(), r.i64(), r.i64(), r.i64(),
            r.array(lambda r: (r.i32(), r.string())), r.string()))))[0][1]
        _, err, base, _, _, record_errors, message = parts[0]
        self.assertEqual((err, base), (KafkaError.INVALID_TIMESTAMP, -1))
        self.assertIn("message.timestamp.before.max.ms", message or "",
                      "Produce v8 error_message: %r" % message)
        res = produce_all(p, "adm-tsbound", [(b"k", b"now", 0)], log)
        self.assertEqual(res[0][1], 0, "the refused record took no offset")
        cfg = self.describe(ConfigResource.Type.TOPIC, "adm-tsbound")
        self.assertEqual(cfg["message.timestamp.before.max.ms"].value, "60000")
        self.assertEqual(cfg["message.timestamp.after.max.ms"].value, "3600000")

    # -- cluster and log dirs --

    def test_describe_cluster(self):
        md = self.admin.list_topics(timeout=10)
        with B.RawClient(self.broker.port) as c:
            v = B.pick_version(c.api_versions(), 60, [0, 1], "DescribeCluster")
            w = B.Writer(True).bool(False)
            if v >= 1:
                w.i8(1)
            r = B.Reader(c.request(60, v, w.tags().b, True), True)
            r.i32()
            err, msg = r.i16(), r.string()
            self.assertEqual(err, 0, "DescribeCluster v%d: %s %s" % (v, code_name(err), msg))
            if v >= 1:
                r.i8()
            cluster_id, controller = r.string(), r.i32()
            brokers = r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string(), r.tags()))
        self.assertTrue(cluster_id, "DescribeCluster: empty cluster id")
        self.assertEqual(sorted((b[0], b[2]) for b in brokers),
                         sorted((b.id, b.port) for b in md.brokers.values()),
                         "DescribeCluster brokers = Metadata brokers")
        self.assertIn(controller, [b[0] for b in brokers], "the controller is a broker")
        self.assertEqual(md.cluster_id, cluster_id, "Metadata and DescribeCluster cluster ids")

    def test_describe_log_dirs(self):
        self.must_create("adm-logdirs", 2)
        log = ClientLog()
        p = make_producer(self.broker.bootstrap, log)
        produce_all(p, "adm-logdirs", [(b"k", b"x" * 1000, i % 2) for i in range(20)], log)
        md = self.admin.list_topics(timeout=10)
        seen = {}
        for b in md.brokers.values():
            with B.RawClient(b.port) as c:
                v = B.pick_version(c.api_versions(), 35, [0, 1, 2, 3, 4], "DescribeLogDirs")
                flex = v >= 2
                w = B.Writer(flex).array(None, None).tags()  # null: every topic
                r = B.Reader(c.request(35, v, w.b, flex), flex)
                r.i32()
                if v >= 3:
                    self.assertEqual(r.i16(), 0, "DescribeLogDirs top-level error")

                def result(r):
                    err, d = r.i16(), r.string()
                    topics = r.array(lambda r: (r.string(), r.array(
                        lambda r: (r.i32(), r.i64(), r.i64(), r.bool(), r.tags())), r.tags()))
                    if v >= 4:
                        r.i64(), r.i64()
                    r.tags()
                    return err, d, topics
                for err, d, topics in r.array(result):
                    self.assertEqual(err, 0, "DescribeLogDirs v%d from broker %d: dir %s error %s"
                                     % (v, b.id, d, code_name(err)))
                    self.assertTrue(d, "a log dir has a name")
                    for name, parts, _ in topics:
                        for idx, size, _, _, _ in parts:
                            seen.setdefault((name, idx), []).append((b.id, size))
        for idx in (0, 1):
            self.assertIn(("adm-logdirs", idx), seen, "DescribeLogDirs lists adm-logdirs[%d] "
                          "(it lists %s)" % (idx, sorted(seen)[:10]))
            self.assertGreaterEqual(max(s for _, s in seen[("adm-logdirs", idx)]), 10000,
                                    "adm-logdirs[%d] holds 10 KB of values" % idx)


# ---- (d) kill -9 during a produce at acks=all -------------------------------

def child_producer(bs, topic):
    """Produce forever; print 'partition offset value' per delivered message."""
    out = sys.stdout
    p = make_producer(bs, None, **{"linger.ms": 2, "message.timeout.ms": 600000,
                                   "queue.buffering.max.messages": 20000})

    def cb(err, msg):
        if err is None:
            out.write("%d %d %s\n" % (msg.partition(), msg.offset(), msg.value().decode()))
    i = 0
    while True:
        try:
            p.produce(topic, key=b"k%d" % (i % 101), value=b"m-%d" % i, on_delivery=cb)
            i += 1
        except BufferError:
            p.poll(0.01)
        if i % 200 == 0:
            p.poll(0)
            out.flush()


class KillNine(B.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="kill9", extra=["--num.partitions=3"]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def run_child_until_kill(self, topic, want):
        """Start a child producer, SIGKILL the broker once it reported `want`
        deliveries, stop the child; returns [(partition, offset, value)]."""
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child-producer",
                                  self.broker.bootstrap, topic],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        child_err = []

        def reader():
            for line in child.stdout:
                lines.append(line)

        def err_reader():
            for line in child.stderr:
                child_err.append(line.decode(errors="replace"))
        threads = [threading.Thread(target=reader, daemon=True),
                   threading.Thread(target=err_reader, daemon=True)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 30
            while len(lines) < want and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.02)
            if len(lines) < min(want, 1000):
                self.fail("the child producer delivered only %d messages in 30 s (exit %s): %s"
                          % (len(lines), child.poll(), "".join(child_err[-10:])))
            self.broker.kill9()  # mid-stream: the child keeps producing
            time.sleep(0.5)
        finally:
            child.kill()
            child.wait()
            for t in threads:
                t.join(10)
            child.stdout.close()
            child.stderr.close()
        delivered = []
        for raw in lines:
            if not raw.endswith(b"\n"):
                continue  # cut by the kill
            part, off, value = raw.decode().split()
            delivered.append((int(part), int(off), value.encode()))
        return delivered

    def check_recovered(self, topic, delivered, log, what):
        """Every delivered message at its offset; returns the high watermarks."""
        cons = make_consumer(self.broker.bootstrap, log)
        ends = {}
        for part in range(3):
            low, high = watermarks(cons, topic, part)
            self.assertEqual(low, 0)
            ends[part] = high
        cons.close()
        max_off = {}
        for part, off, _ in delivered:
            max_off[part] = max(max_off.get(part, -1), off)
        for part, m in max_off.items():
            self.assertGreater(ends[part], m, "%s: partition %d: high watermark %d after recovery, "
                               "but offset %d was acknowledged" % (what, part, ends[part], m))
        got = consume_range(self.broker.bootstrap, topic, {p_: 0 for p_ in ends}, ends, log)
        have = {}
        for part, lst in got.items():
            offs = [o for o, _, _, _ in lst]
            self.assertEqual(offs, list(range(ends[part])),
                             "%s: partition %d: offsets after recovery not contiguous" % (what, part))
            for o, _, v, _ in lst:
                have[(part, o)] = v
        lost = [(pt, o, v) for pt, o, v in delivered if have.get((pt, o)) != v]
        self.assertFalse(lost, "%s: %d of %d acknowledged messages are not at their offsets after "
                         "kill -9 and restart, e.g. %s (found there: %s)"
                         % (what, len(lost), len(delivered), lost[:3],
                            [have.get((pt, o)) for pt, o, _ in lost[:3]]))
        return ends

    def test_kill9_during_produce(self):
        topic = "crash"
        log = ClientLog()
        # the topic exists before the child starts (auto-created by a first message)
        p = make_producer(self.broker.bootstrap, log)
        delivered = [(r[0], r[1], b"first") for r in
                     produce_all(p, topic, [(b"first", b"first", 0)], log)]
        del p
        report = []
        for rnd in range(2):
            new = self.run_child_until_kill(topic, 15000)
            delivered += new
            self.broker.start()  # recovery on the same data directory and port
            ends = self.check_recovered(topic, delivered, log, "round %d" % (rnd + 1))
            report.append("%d acknowledged -> watermarks %s" % (len(new), ends))
        # new messages go after everything that is there
        p = make_producer(self.broker.bootstrap, log)
        res = produce_all(p, topic, [(b"after", b"after-%d" % part, part) for part in range(3)], log)
        for part, off, _ in res:
            self.assertEqual(off, ends[part], "partition %d: first offset after recovery" % part)
        del p
        self.broker.stop()
        ctl = os.path.join(os.path.dirname(self.broker.binary), "rivvenctl")
        if os.path.isfile(ctl):
            r = subprocess.run([ctl, "verify", self.broker.data_dir], capture_output=True,
                               timeout=120)
            self.assertEqual(r.returncode, 0, "rivvenctl verify after the kills: exit %d: %s"
                             % (r.returncode, (r.stdout + r.stderr).decode(errors="replace")[-2000:]))
        self.broker.start()
        sys.stderr.write("  kill -9 twice mid-produce: %s\n" % "; ".join(report))


# ---- (e) kcat ---------------------------------------------------------------

class KcatMixin:
    advertise = True

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name=cls.__name__, advertise_shards=cls.advertise,
                              extra=["--num.partitions=4"]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def kcat(self, args, stdin=None, timeout=30):
        proc = subprocess.Popen(["kcat", "-b", self.broker.bootstrap] + args,
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail("kcat %s: still running after %d s; its stderr: %s"
                      % (" ".join(args), timeout, err.decode(errors="replace")[-3000:]))
        if proc.returncode != 0:
            self.fail("kcat %s: exit %d: %s" % (" ".join(args), proc.returncode,
                                                 err.decode(errors="replace")[-3000:]))
        return out.decode(errors="replace")

    def test_produce_consume_metadata(self):
        lines = ["key-%d:value-%d" % (i % 37, i) for i in range(2000)]
        self.kcat(["-P", "-t", "kc", "-K:", "-X", "acks=all"], ("\n".join(lines) + "\n").encode())
        out = self.kcat(["-C", "-t", "kc", "-e", "-o", "beginning", "-q", "-f", "%k:%s\\n"])
        got = out.split()
        self.assertEqual(sorted(got), sorted(lines), "kcat -C read other lines than kcat -P wrote "
                         "(%d vs %d)" % (len(got), len(lines)))
        for key in {ln.split(":")[0] for ln in lines}:
            want = [ln for ln in lines if ln.split(":")[0] == key]
            have = [ln for ln in got if ln.split(":")[0] == key]
            self.assertEqual(have, want, "%s: per-key order" % key)
        out = self.kcat(["-C", "-t", "kc", "-e", "-o", "beginning", "-q", "-f", "%k %p %o\\n"])
        parts = {}
        offs = {}
        for ln in out.splitlines():
            k, p, o = ln.split()
            parts.setdefault(k, set()).add(int(p))
            offs.setdefault(int(p), []).append(int(o))
        self.assertTrue(all(len(v) == 1 for v in parts.values()), "a key on several partitions")
        for p, lst in offs.items():
            self.assertEqual(lst, list(range(len(lst))), "partition %d offsets" % p)

        text = self.kcat(["-L", "-t", "kc"])
        self.assertIn('topic "kc" with 4 partitions', text)
        md = json.loads(self.kcat(["-L", "-J"]))
        want = self.broker.shards if self.advertise else 1
        self.assertEqual(len(md["brokers"]), want, "kcat -L -J brokers: %s" % md["brokers"])
        ids = {b["id"] for b in md["brokers"]}
        kc = [t for t in md["topics"] if t["topic"] == "kc"]
        self.assertEqual(len(kc), 1, "kcat -L -J lists kc once")
        self.assertEqual(len(kc[0]["partitions"]), 4)
        for pm in kc[0]["partitions"]:
            self.assertIn(pm["leader"], ids)
        # offsets by time through kcat -Q
        q = self.kcat(["-Q", "-t", "kc:0:%d" % (int(time.time() * 1000) - 3600000)])
        self.assertRegex(q, r"kc \[0\]\s+offset 0\b", "kcat -Q of an hour ago gives offset 0")


class Kcat(KcatMixin, B.BrokerTestCase):
    advertise = True


class KcatForwarding(KcatMixin, B.BrokerTestCase):
    advertise = False


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child-producer":
        child_producer(sys.argv[2], sys.argv[3])
        sys.exit(0)
    os.environ["RIVVEND"] = B.find_binary(sys.argv)  # the binary may be an argument
    why = B.have_clients()
    if why:
        print("skip: %s" % why)
        sys.exit(77)
    unittest.main(verbosity=2)
