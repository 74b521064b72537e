#!/usr/bin/python3
"""tests/broker/test_idempotence.py - idempotent producers against rivvend.

    RIVVEND=build-test/tools/rivvend /usr/bin/python3 tests/broker/test_idempotence.py [-v] [Class[.test]]

- InitProducerId: every version of the schema (0-5, flexible from 2) from
  both shards' listeners: error 0, epoch 0, producer ids never handed out
  twice, also across a SIGTERM restart and a kill -9; a transactional id gets
  COORDINATOR_NOT_AVAILABLE (no transaction coordinator: FindCoordinator
  answers the same), an empty one and a v3+ request naming only one of
  producer id and epoch INVALID_REQUEST.
- RawSequences: batches of a producer sent by hand (Produce v8, RecordBatch v2
  with producer id, epoch and base sequence): in-sequence batches are
  appended; a retry of one of the last five is answered with its original
  base offset and not written again (the high watermark does not move); a gap,
  a rewind and a batch older than the last five get OUT_OF_ORDER_SEQUENCE_NUMBER
  (45); a new epoch must start at sequence 0 (45 otherwise) and fences the old
  one (INVALID_PRODUCER_EPOCH, 47); an unknown producer is taken at any
  sequence, as Kafka >= 2.5 does (KIP-360), then held to it. The state survives a SIGTERM restart (snapshot)
  and a kill -9 (snapshot plus the log after it): duplicates are still found
  and sequences go on.
- Restarts: a confluent-kafka producer with enable.idempotence=true produces
  keyed messages over 3 partitions while the broker is stopped with SIGTERM
  and restarted, then killed with SIGKILL and restarted: every message is
  delivered, the topic holds each exactly once, in produce order per
  partition, at the offsets its delivery report gave.
"""

import os
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker as B  # noqa: E402

try:
    from confluent_kafka import Consumer, Producer, TopicPartition
except ImportError:  # the runner skips (77) before we get here
    pass

INIT_PRODUCER_ID = 22
PRODUCE = 0
PRODUCE_VERSION = 8  # the last one before flexible versions

NONE = 0
COORDINATOR_NOT_AVAILABLE = 15
INVALID_REQUEST = 42
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
UNKNOWN_PRODUCER_ID = 59


# ---- raw requests -------------------------------------------------------------

def init_producer_id(client, version, txn_id=None, timeout_ms=60000, pid=-1, epoch=-1):
    """InitProducerId at `version`: (error_code, producer_id, producer_epoch)."""
    flexible = version >= 2
    w = B.Writer(flexible)
    w.string(txn_id).i32(timeout_ms)
    if version >= 3:
        w.i64(pid).i16(epoch)
    w.tags()
    r = B.Reader(client.request(INIT_PRODUCER_ID, version, bytes(w.b), flexible), flexible)
    r.i32()  # throttle
    err, got_pid, got_epoch = r.i16(), r.i64(), r.i16()
    r.tags()
    return err, got_pid, got_epoch


def idem_batch(pid, epoch, seq, values, attributes=0):
    """A RecordBatch v2 of producer pid/epoch from base sequence seq."""
    section = b"".join(B.record(None, v, i) for i, v in enumerate(values))
    ts = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", attributes, len(values) - 1, ts, ts, pid, epoch, seq,
                            len(values)) + section
    length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", 0, length, -1, 2, B.crc32c(after_crc)) + after_crc


def produce(client, topic, partition, batch, acks=-1):
    """Produce v8 of one batch: (error_code, base_offset)."""
    w = B.Writer()
    w.string(None).i16(acks).i32(10000)
    w.array([topic], lambda w, t: (
        w.string(t),
        w.array([partition], lambda w, p: (w.i32(p), w.bytes_(batch)))))
    r = B.Reader(client.request(PRODUCE, PRODUCE_VERSION, bytes(w.b)))

    def part(r):
        index, err, base = r.i32(), r.i16(), r.i64()
        r.i64()  # log append time
        r.i64()  # log start offset
        r.array(lambda r: (r.i32(), r.string()))  # record errors
        r.string()  # error message
        return index, err, base
    topics = r.array(lambda r: (r.string(), r.array(part)))
    (_, parts), = topics
    (_, err, base), = parts
    return err, base


def make_consumer(bs):
    return Consumer({"bootstrap.servers": bs, "group.id": "rivven-idem-unused",
                     "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "auto.offset.reset": "error", "enable.partition.eof": False,
                     "fetch.wait.max.ms": 100})


def high_watermark(bs, topic, partition):
    c = make_consumer(bs)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                       cached=False)[1]
    finally:
        c.close()


def consume_all(bs, topic, partitions, timeout=60):
    """{partition: [(offset, key, value)]} of everything below the high watermarks."""
    c = make_consumer(bs)
    got = {p: [] for p in range(partitions)}
    try:
        ends = {}
        for p in range(partitions):
            ends[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                              cached=False)[1]
        todo = {p for p in ends if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    continue
                got[m.partition()].append((m.offset(), m.key(), m.value()))
                if m.offset() >= ends[m.partition()] - 1:
                    todo.discard(m.partition())
        if todo:
            raise AssertionError("partitions %s of %s not read to their ends %s in %d s"
                                 % (sorted(todo), topic, ends, timeout))
    finally:
        c.close()
    return got


class IdemCase(B.BrokerTestCase):
    """A broker of 2 shards (both advertised) for the class."""

    extra = ["--num.partitions=3"]

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="idem-" + cls.__name__.lower(), extra=cls.extra).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()


# ---- InitProducerId -------------------------------------------------------------

class InitProducerId(IdemCase):
    def ask_all(self, seen, what):
        """Every version from every listener; the ids go into seen (a set)."""
        for port in self.broker.ports():
            with B.RawClient(port) as c:
                apis = c.api_versions()
                self.assertIn(INIT_PRODUCER_ID, apis, "InitProducerId is advertised")
                self.assertEqual(apis[INIT_PRODUCER_ID], (0, 5))
                for v in range(0, 6):
                    for _ in range(3):
                        err, pid, epoch = init_producer_id(c, v)
                        self.assertEqual(err, NONE, "%s: v%d on port %d" % (what, v, port))
                        self.assertGreaterEqual(pid, 0)
                        self.assertEqual(epoch, 0)
                        self.assertNotIn(pid, seen, "%s: producer id %d handed out twice"
                                         % (what, pid))
                        seen.add(pid)

    def test_ids_are_unique_across_shards_and_restarts(self):
        seen = set()
        self.ask_all(seen, "first start")
        first_max = max(seen)
        self.broker.restart()
        self.ask_all(seen, "after SIGTERM")
        self.assertGreater(min(seen - set(range(first_max + 1))), first_max)
        self.broker.kill9()
        self.broker.start()
        self.ask_all(seen, "after kill -9")
        # Many at once from both shards (blocks are taken from shard 0).
        socks = [B.RawClient(p) for p in self.broker.ports() for _ in range(3)]
        try:
            corrs = []
            for c in socks:
                for _ in range(40):
                    w = B.Writer(True)
                    w.string(None).i32(1000).i64(-1).i16(-1).tags()
                    corrs.append((c, c.send(INIT_PRODUCER_ID, 4, bytes(w.b), True)))
            for c, corr in corrs:
                r = B.Reader(c.receive(corr, True), True)
                r.i32()
                err, pid = r.i16(), r.i64()
                self.assertEqual(err, NONE)
                self.assertNotIn(pid, seen)
                seen.add(pid)
        finally:
            for c in socks:
                c.close()
        with open(os.path.join(self.broker.data_dir, "meta", "producer-ids")) as f:
            mark = int(f.read())
        self.assertGreater(mark, max(seen), "the persisted mark covers every id handed out")

    def test_transactional_and_invalid_requests(self):
        with B.RawClient(self.broker.port) as c:
            for v in range(0, 6):
                err, pid, epoch = init_producer_id(c, v, txn_id="txn-1")
                self.assertEqual((err, pid), (COORDINATOR_NOT_AVAILABLE, -1), "v%d" % v)
                err, _, _ = init_producer_id(c, v, txn_id="")
                self.assertEqual(err, INVALID_REQUEST, "v%d: an empty transactional id" % v)
            for v in (3, 4, 5):
                err, _, _ = init_producer_id(c, v, pid=5, epoch=-1)
                self.assertEqual(err, INVALID_REQUEST, "v%d: an id without an epoch" % v)
                err, _, _ = init_producer_id(c, v, pid=-1, epoch=3)
                self.assertEqual(err, INVALID_REQUEST, "v%d: an epoch without an id" % v)
                # An idempotent producer asking again (KIP-360) gets a new id.
                err, pid, epoch = init_producer_id(c, v)
                err2, pid2, epoch2 = init_producer_id(c, v, pid=pid, epoch=epoch)
                self.assertEqual((err2, epoch2), (NONE, 0))
                self.assertNotEqual(pid2, pid)


# ---- batches sent by hand ---------------------------------------------------------

class RawSequences(IdemCase):
    def setUp(self):
        with B.RawClient(self.broker.port) as c:
            err, self.pid, self.epoch = init_producer_id(c, 4)
        self.assertEqual(err, NONE)

    def send(self, topic, pid, epoch, seq, n, partition=0, tag="v"):
        with B.RawClient(self.broker.port) as c:
            return produce(c, topic, partition,
                           idem_batch(pid, epoch, seq, [b"%s-%d" % (tag.encode(), seq + i)
                                                        for i in range(n)]))

    def hw(self, topic, partition=0):
        return high_watermark(self.broker.bootstrap, topic, partition)

    def test_duplicates_gaps_and_epochs(self):
        t, pid = "raw-seq", self.pid
        self.assertEqual(self.send(t, pid, 0, 0, 3), (NONE, 0))
        self.assertEqual(self.send(t, pid, 0, 3, 2), (NONE, 3))
        # Retries of both: their original offsets, nothing written.
        self.assertEqual(self.send(t, pid, 0, 0, 3), (NONE, 0))
        self.assertEqual(self.send(t, pid, 0, 3, 2), (NONE, 3))
        self.assertEqual(self.hw(t), 5)
        # A gap, a rewind, a different range over the same sequences.
        self.assertEqual(self.send(t, pid, 0, 7, 1)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        self.assertEqual(self.send(t, pid, 0, 4, 1)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        self.assertEqual(self.send(t, pid, 0, 0, 2)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        # Five more batches: the first ones fall out of the window.
        for k in range(5):
            self.assertEqual(self.send(t, pid, 0, 5 + k, 1), (NONE, 5 + k))
        self.assertEqual(self.send(t, pid, 0, 9, 1), (NONE, 9), "the newest is remembered")
        self.assertEqual(self.send(t, pid, 0, 5, 1), (NONE, 5), "the fifth newest too")
        self.assertEqual(self.send(t, pid, 0, 3, 2)[0], OUT_OF_ORDER_SEQUENCE_NUMBER,
                         "the sixth newest is forgotten")
        self.assertEqual(self.hw(t), 10)
        # A new epoch starts at 0 and fences the old one.
        self.assertEqual(self.send(t, pid, 1, 10, 1)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        self.assertEqual(self.send(t, pid, 1, 0, 2), (NONE, 10))
        self.assertEqual(self.send(t, pid, 0, 10, 1)[0], INVALID_PRODUCER_EPOCH)
        self.assertEqual(self.send(t, pid, 0, 9, 1)[0], INVALID_PRODUCER_EPOCH,
                         "an old epoch's retry is fenced too")
        self.assertEqual(self.send(t, pid, 1, 2, 1), (NONE, 12))
        # An unknown producer is taken at any sequence (Kafka >= 2.5), then in order.
        self.assertEqual(self.send(t, pid + 1000000, 0, 7, 1), (NONE, 13))
        self.assertEqual(self.send(t, pid + 1000000, 0, 9, 1)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        self.assertEqual(self.send(t, pid + 1000000, 0, 8, 1), (NONE, 14))
        # Producers are per partition.
        self.assertEqual(self.send(t, pid, 1, 3, 1, partition=1), (NONE, 0))
        self.assertEqual(self.send(t, pid, 1, 3, 1, partition=1), (NONE, 0), "a duplicate")
        self.assertEqual(self.hw(t), 15)
        got = consume_all(self.broker.bootstrap, t, 1)[0]
        self.assertEqual([v for _, _, v in got],
                         [b"v-0", b"v-1", b"v-2", b"v-3", b"v-4", b"v-5", b"v-6", b"v-7", b"v-8",
                          b"v-9", b"v-0", b"v-1", b"v-2", b"v-7", b"v-8"])

    def test_state_survives_sigterm_and_kill9(self):
        t, pid = "raw-restart", self.pid
        for k in range(4):
            self.assertEqual(self.send(t, pid, 0, 2 * k, 2), (NONE, 2 * k))
        self.broker.restart()  # SIGTERM: the snapshot is written at close
        self.assertEqual(self.send(t, pid, 0, 6, 2), (NONE, 6), "a retry after the restart")
        self.assertEqual(self.send(t, pid, 0, 2, 2), (NONE, 2))
        self.assertEqual(self.send(t, pid, 0, 9, 1)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        self.assertEqual(self.send(t, pid, 0, 8, 2), (NONE, 8))
        self.broker.kill9()  # no snapshot of the last batches: the log after the last one
        self.broker.start()
        self.assertEqual(self.send(t, pid, 0, 8, 2), (NONE, 8), "a retry after kill -9")
        self.assertEqual(self.send(t, pid, 0, 10, 1), (NONE, 10))
        self.assertEqual(self.send(t, pid, 0, 12, 1)[0], OUT_OF_ORDER_SEQUENCE_NUMBER)
        self.assertEqual(self.hw(t), 11)
        pdir = os.path.join(self.broker.data_dir, "topics", t, "0")
        snaps = [n for n in os.listdir(pdir) if n.endswith(".snapshot")]
        self.assertLessEqual(len(snaps), 1, "one snapshot per partition: %s" % snaps)


# ---- a real idempotent producer across restarts --------------------------------------

class Restarts(IdemCase):
    def test_every_message_once_in_order_across_sigterm_and_kill9(self):
        topic, parts, total = "idem", 3, 30000
        errors = []
        delivered = {}
        lock = threading.Lock()
        p = Producer({"bootstrap.servers": self.broker.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 5, "message.timeout.ms": 120000,
                      "max.in.flight.requests.per.connection": 5, "retry.backoff.ms": 50,
                      "reconnect.backoff.max.ms": 200, "socket.timeout.ms": 10000,
                      "log_level": 2,  # the restarts' disconnects are expected
                      "error_cb": lambda e: errors.append("error_cb: %s" % e)})

        def cb(err, msg):
            with lock:
                if err is not None:
                    errors.append("delivery: %s" % err)
                else:
                    delivered[msg.value()] = (msg.partition(), msg.offset())

        produced = []
        done = threading.Event()

        def run():
            for i in range(total):
                v = b"m-%06d" % i
                while True:
                    try:
                        p.produce(topic, key=b"k%d" % (i % 31), value=v, on_delivery=cb)
                        break
                    except BufferError:
                        p.poll(0.01)
                produced.append(v)
                if i % 100 == 0:
                    p.poll(0)
                    time.sleep(0.01)  # about 10 000 a second: the restarts fall mid-stream
            done.set()

        th = threading.Thread(target=run, daemon=True)
        th.start()

        def wait_for(n, what):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if len(delivered) >= n:
                        return
                time.sleep(0.02)
            self.fail("%s: only %d of %d delivered (%s)" % (what, len(delivered), n, errors[-5:]))

        wait_for(3000, "before SIGTERM")
        self.assertFalse(done.is_set(), "the restart falls while producing")
        self.broker.stop()
        time.sleep(0.3)
        self.broker.start()
        wait_for(len(delivered) + 3000, "after the SIGTERM restart")
        self.assertFalse(done.is_set(), "the kill falls while producing")
        self.broker.kill9()
        time.sleep(0.3)
        self.broker.start()
        th.join(180)
        self.assertTrue(done.is_set(), "the producer thread finished")
        left = p.flush(120)
        self.assertEqual(left, 0, "undelivered after flush: %d (%s)" % (left, errors[-5:]))
        fatal = [e for e in errors if "delivery" in e or "FATAL" in e.upper()]
        self.assertFalse(fatal, "deliveries failed: %s" % fatal[:5])
        self.assertEqual(len(delivered), total)
        got = consume_all(self.broker.bootstrap, topic, parts)
        seen = {}
        for part in range(parts):
            values = [v for _, _, v in got[part]]
            offsets = [o for o, _, _ in got[part]]
            self.assertEqual(offsets, list(range(len(offsets))), "partition %d: dense" % part)
            dups = len(values) - len(set(values))
            self.assertEqual(dups, 0, "partition %d holds %d duplicates" % (part, dups))
            self.assertEqual(values, sorted(values), "partition %d: produce order" % part)
            for o, _, v in got[part]:
                seen[v] = (part, o)
        self.assertEqual(len(seen), total, "every message is in the topic")
        wrong = [(v, delivered[v], seen.get(v)) for v in produced if seen.get(v) != delivered[v]]
        self.assertFalse(wrong, "%d messages are not where their delivery report put them, "
                         "e.g. %s" % (len(wrong), wrong[:3]))
        sys.stderr.write("  %d messages, one SIGTERM and one kill -9: per partition %s\n"
                         % (total, {q: len(got[q]) for q in got}))


if __name__ == "__main__":
    os.environ["RIVVEND"] = B.find_binary(sys.argv)  # the binary may be an argument
    why = B.have_clients()
    if why:
        print("skip: %s" % why)
        sys.exit(77)
    unittest.main(verbosity=2)
