#!/usr/bin/python3
"""tests/broker/test_bad_input.py - bad input from raw sockets.

    RIVVEND=build-test/tools/rivvend /usr/bin/python3 tests/broker/test_bad_input.py [-v] [Test.name]

Every case opens its own connection and sends something a broker must survive:
a truncated frame (then close, or half-close), a size over
socket.request.max.bytes, a negative or zero size, a frame too short for a
header, an unknown API key, an unsupported version of a known API (ApiVersions
must answer UNSUPPORTED_VERSION in v0; other APIs may answer or close), random
bytes, random bodies behind valid headers of every API, and a client that
pipelines requests without ever reading. Each time the broker must answer or
close THAT connection (never leave it hanging after the client's EOF), stay
up, and keep serving:

- RawOnly: a persistent "watch" connection gets ApiVersions answered after
  every case (works with a broker that serves only ApiVersions);
- WithClients: the same cases while a confluent-kafka producer/consumer loop and
  a kcat producer run beside them; every message they produced is then read
  back (needs Metadata, Produce, Fetch).
- BadRequests: requests that parse but are wrong, over raw Produce v3, Fetch v4
  and Metadata v4: corrupt record batches (CRC, lengths, counts, offset deltas,
  truncated records, unknown codecs, garbage gzip/snappy/lz4/zstd, a gzip bomb),
  bad partitions, acks and topic names, fetches out of range, long polls whose
  connections go away, SIGTERM with a long poll pending. Kafka's error code (or
  a close), nothing appended for a rejected batch, the broker up. Also: Produce
  auto-creates a topic (the issue asks for it), names up to 249 characters work,
  longer ones are INVALID_TOPIC_EXCEPTION and never created; a long poll whose
  min_bytes is more than there is waits max_wait without spinning.
- Connections: pipelined requests of every kind (a long poll among them) are
  answered in order; 600 connections on one shard are all served; idle
  connections (also one stuck in a partial frame) are closed after
  connections.max.idle.ms, active ones are not.

Set RIVVEN_TEST_KEEP=1 to keep each broker's data directory and stderr log.

At the end the broker stops on SIGTERM with exit status 0.
"""

import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker as B  # noqa: E402

MAX_BYTES = 104857600  # socket.request.max.bytes (the default; the broker runs with it)
WAIT = 10.0  # seconds a connection may take to be answered or closed


def outcome(sock, timeout=WAIT):
    """What the broker did with a connection whose client sent everything it
    will send: 'closed' (EOF or reset) or ('answered', frames) - every complete
    response frame read until EOF - or 'open' if neither happened in time."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except socket.timeout:
            break
        if not chunk:
            frames = []
            p = 0
            while len(data) - p >= 4:
                n = struct.unpack(">i", data[p:p + 4])[0]
                if n < 0 or len(data) - p - 4 < n:
                    break
                frames.append(bytes(data[p + 4:p + 4 + n]))
                p += 4 + n
            return ("answered", frames) if frames else ("closed", [])
        data += chunk
    return ("open", [])


class Cases:
    """The bad inputs. Each sends on a new connection and checks what came
    back; self.after(what) checks the broker and the other connections."""

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.broker.port), timeout=WAIT)

    def send_and_expect(self, what, data, may_answer=True, half_close=True, check=None):
        s = self.connect()
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while we were still sending: fine
            if half_close:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            kind, frames = outcome(s)
        finally:
            s.close()
        if kind == "open":
            self.fail("%s: the connection was neither answered nor closed within %.0f s "
                      "of the client's EOF" % (what, WAIT))
        if kind == "answered":
            if not may_answer:
                self.fail("%s: the broker answered %d frame(s) (%r...) instead of closing"
                          % (what, len(frames), frames[0][:16]))
            if check is not None:
                check(frames)
        self.after(what)
        return kind, frames

    # ---- framing ----

    def test_truncated_frame_then_close(self):
        s = self.connect()
        s.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x00" + b"x" * 6)
        s.close()
        self.after("truncated frame, then close")

    def test_truncated_frame_then_eof(self):
        self.send_and_expect("truncated frame, then EOF",
                             struct.pack(">i", 100) + b"\x00\x12\x00\x00" + b"x" * 6,
                             may_answer=False)

    def test_truncated_header(self):
        # A complete frame too short for a request header.
        self.send_and_expect("4-byte frame", struct.pack(">i", 4) + b"\x00\x12\x00\x00",
                             may_answer=False)
        self.send_and_expect("0-byte frame", struct.pack(">i", 0), may_answer=False)
        self.send_and_expect("3 bytes of a size", b"\x00\x00\x00", may_answer=False)

    def test_oversized(self):
        for size in (MAX_BYTES + 1, 200 << 20, 0x7FFFFFFF):
            self.send_and_expect("size %d" % size, struct.pack(">i", size) + b"\x00" * 64,
                                 may_answer=False, half_close=False)
        if "request size %d outside" % (MAX_BYTES + 1) not in self.broker.log():
            self.fail("no log line for the oversized request (want 'request size %d outside')"
                      % (MAX_BYTES + 1))

    def test_size_at_the_limit_is_not_refused_early(self):
        # A size exactly at socket.request.max.bytes is allowed; send part of it
        # and close: the broker must not crash allocating or waiting for it.
        s = self.connect()
        s.sendall(struct.pack(">i", MAX_BYTES) + b"\x00" * 4096)
        s.close()
        self.after("a frame of exactly socket.request.max.bytes, cut short")

    def test_negative_size(self):
        for size in (-1, -2, -0x80000000):
            self.send_and_expect("size %d" % size, struct.pack(">i", size) + b"\x00" * 16,
                                 may_answer=False, half_close=False)

    # ---- headers ----

    def test_unknown_api_key(self):
        for key in (1000, 32767, -1, -32768):
            def check(frames, key=key):
                corr = struct.unpack(">i", frames[0][:4])[0]
                self.assertEqual(corr, 77, "api key %d: answer with correlation id %d" % (key, corr))
            self.send_and_expect("unknown api key %d" % key, B.request_frame(key, 0, 77),
                                 check=check)

    def test_unsupported_version_api_versions(self):
        # ApiVersions must answer an unsupported version in v0 with error 35.
        for version in (99, 32767):
            def check(frames, version=version):
                r = B.Reader(frames[0])
                self.assertEqual(r.i32(), 55)
                err = r.i16()
                self.assertEqual(err, 35, "ApiVersions v%d: error %d, want 35 "
                                 "(UNSUPPORTED_VERSION)" % (version, err))
                apis = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
                self.assertIn(18, [a[0] for a in apis], "the error answer lists ApiVersions")
            # sent as a newer client would: header v2, a v3-style body
            frame = B.request_frame(18, version, 55, b"\x0crivven-test\x021\x00", flexible=True)
            kind, _ = self.send_and_expect("ApiVersions v%d" % version, frame, check=check)
            self.assertEqual(kind, "answered", "ApiVersions v%d was not answered" % version)

    def test_unsupported_version_other_apis(self):
        # Metadata, Produce, Fetch, ListOffsets, CreateTopics at versions no
        # schema has, and at -1: answered (with the right correlation id) or closed.
        for key in (0, 1, 2, 3, 19, 60):
            for version in (999, -1):
                def check(frames, key=key, version=version):
                    corr = struct.unpack(">i", frames[0][:4])[0]
                    self.assertEqual(corr, 66, "api %d v%d: correlation id %d" % (key, version, corr))
                self.send_and_expect("api %d v%d" % (key, version),
                                     B.request_frame(key, version, 66), check=check)

    def test_random_bytes(self):
        rng = random.Random(4)
        for i in range(30):
            n = rng.choice((1, 3, 4, 7, 16, 100, 1000, 5000))
            data = bytes(rng.getrandbits(8) for _ in range(n))
            self.send_and_expect("random bytes #%d (%d bytes)" % (i, n), data)
        self.send_and_expect("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", may_answer=False)

    def test_random_bodies_behind_valid_headers(self):
        # Every API key and version the broker advertises, with a random body
        # (and a truncated real-looking one): decoders must refuse, not crash.
        with B.RawClient(self.broker.port) as c:
            apis = c.api_versions()
        rng = random.Random(5)
        flexible_from = {0: 9, 1: 12, 2: 6, 3: 9, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4, 13: 4, 14: 4,
                         15: 5, 16: 3, 17: 2, 18: 3, 19: 5, 20: 4, 21: 2, 22: 2, 23: 4, 24: 3,
                         25: 3, 26: 3, 27: 1, 28: 3, 29: 2, 30: 2, 31: 2, 32: 4, 33: 2, 34: 2,
                         35: 2, 36: 2, 37: 2, 38: 2, 39: 2, 40: 2, 41: 2, 42: 2, 43: 2, 44: 1,
                         45: 0, 46: 0, 47: 0, 48: 1, 49: 1, 50: 0, 51: 0, 60: 0, 61: 0}
        for key, (lo, hi) in sorted(apis.items()):
            for version in sorted({lo, hi, (lo + hi) // 2}):
                flexible = version >= flexible_from.get(key, 1 << 15)
                for n in (0, 1, 5, 40, 300):
                    body = bytes(rng.getrandbits(8) for _ in range(n))
                    frame = B.request_frame(key, version, 1234, body, flexible)
                    kind, frames = self.send_and_expect(
                        "api %d v%d, %d random body bytes" % (key, version, n), frame)
                    if kind == "answered":
                        corr = struct.unpack(">i", frames[0][:4])[0]
                        self.assertEqual(corr, 1234, "api %d v%d random body: correlation id %d"
                                         % (key, version, corr))

    # ---- behaviour ----

    def test_byte_by_byte_and_pipelined(self):
        # Not bad input, but framing: one request a byte at a time, then three
        # requests in one send, answered in order.
        with B.RawClient(self.broker.port) as c:
            frame = B.request_frame(18, 0, 900)
            s = c.sock
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in frame:
                s.sendall(bytes([b]))
                time.sleep(0.001)
            c.receive(900)
            s.sendall(B.request_frame(18, 0, 901) + B.request_frame(18, 1, 902) +
                      B.request_frame(18, 2, 903))
            for corr in (901, 902, 903):
                c.receive(corr)
        self.after("a request sent a byte at a time")

    def test_client_that_never_reads(self):
        # Pipelines ApiVersions requests for a few seconds and never reads. The
        # broker must keep serving others promptly and not buffer without bound.
        rss0 = self.broker.rss_kib()
        s = self.connect()
        s.setblocking(False)
        batch = b"".join(B.request_frame(18, 3, i, b"\x0crivven-test\x021\x00", flexible=True)
                         for i in range(1000))
        sent = 0
        stalled = False
        deadline = time.monotonic() + 4.0
        worst = 0.0
        pending = memoryview(batch)
        while time.monotonic() < deadline:
            try:
                n = s.send(pending)  # a partial send continues where it stopped
                sent += n
                pending = pending[n:] if n < len(pending) else memoryview(batch)
            except BlockingIOError:
                stalled = True
                select.select([], [s], [], 0.05)
            # the others are still served, and quickly
            t0 = time.monotonic()
            self.after("a client that never reads (%d bytes sent)" % sent)
            worst = max(worst, time.monotonic() - t0)
        rss1 = self.broker.rss_kib()
        s.close()
        self.after("a client that never reads, closed")
        sys.stderr.write("  never-reading client: %d request bytes accepted, worst ApiVersions "
                         "latency of the others %.3f s, broker RSS %s -> %s KiB\n"
                         % (sent, worst, rss0, rss1))
        self.assertLess(worst, 2.0, "another connection waited %.2f s for ApiVersions" % worst)
        self.assertTrue(stalled, "the broker read %d bytes of requests without ever "
                             "stopping to read (no backpressure)" % sent)
        if rss0 is not None and rss1 is not None:
            self.assertLess(rss1 - rss0, 512 * 1024, "broker RSS grew by %d KiB for one client "
                            "that never reads" % (rss1 - rss0))


class RawOnly(B.BrokerTestCase, Cases):
    """The cases with a persistent raw ApiVersions connection beside them."""

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="bad-input-raw").start()
        cls.watch = B.RawClient(cls.broker.port)
        cls.watch.api_versions()

    @classmethod
    def tearDownClass(cls):
        cls.watch.close()
        try:
            cls.broker.stop()  # SIGTERM: exit 0
        finally:
            cls.broker.close()

    def after(self, what):
        self.broker.check_alive(what)
        try:
            self.watch.api_versions()
        except Exception as e:
            self.fail("after %s: the other connection's ApiVersions failed: %s" % (what, e))


class LiveClients:
    """A confluent-kafka producer/consumer round-trip loop and a kcat producer
    running in the background until stop()."""

    count = 0

    def __init__(self, broker):
        from confluent_kafka import Consumer, Producer, TopicPartition
        self.broker = broker
        self.errors = []
        self.delivered = []
        self.stalls = []
        self.stop_flag = threading.Event()
        self.client_errors = []
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                                  "linger.ms": 0, "message.timeout.ms": 20000,
                                  "error_cb": lambda e: self.client_errors.append(str(e))})
        self.consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        LiveClients.count += 1
        self.topic = "live-confluent-%d" % LiveClients.count
        self.kcat_topic = "live-kcat-%d" % LiveClients.count
        self.kcat_lines = []
        # First a round trip in the foreground, so a broker without Produce or
        # Fetch fails here with the client's own error.
        self.round_trip(0, timeout=30)
        self.consumer.assign([TopicPartition(self.topic, 0, 0)])
        self.kcat = subprocess.Popen(["kcat", "-P", "-b", broker.bootstrap, "-t", self.kcat_topic,
                                      "-K:", "-X", "acks=all"],
                                     stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def round_trip(self, i, timeout=10):
        res = {}

        def cb(err, msg):
            res["err"], res["msg"] = err, msg
        value = b"live-%d" % i
        t0 = time.monotonic()
        self.producer.produce(self.topic, key=b"k", value=value, partition=0, on_delivery=cb)
        self.producer.flush(timeout)
        if "err" not in res:
            raise AssertionError("live producer: message %d not delivered in %d s (client errors: %s)"
                                 % (i, timeout, self.client_errors[-5:]))
        if res["err"] is not None:
            raise AssertionError("live producer: message %d: %s (client errors: %s)"
                                 % (i, res["err"], self.client_errors[-5:]))
        self.delivered.append((res["msg"].offset(), value))
        return time.monotonic() - t0

    def loop(self):
        from confluent_kafka import KafkaError
        i = 1
        seen = 0
        try:
            while not self.stop_flag.is_set():
                took = self.round_trip(i)
                if took > 2.0:
                    self.stalls.append((i, took))
                i += 1
                if self.kcat.poll() is None:
                    line = b"key%d:kcat-%d\n" % (i % 7, i)
                    self.kcat.stdin.write(line)
                    self.kcat.stdin.flush()
                    self.kcat_lines.append(line.decode().strip())
                # read back what was delivered, in order
                deadline = time.monotonic() + 10
                while seen < len(self.delivered) and time.monotonic() < deadline:
                    m = self.consumer.poll(0.5)
                    if m is None:
                        continue
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            self.errors.append("live consumer: %s" % m.error())
                        continue
                    want = self.delivered[seen]
                    if (m.offset(), m.value()) != want:
                        self.errors.append("live consumer: got %r at %d, want %r at %d"
                                           % (m.value(), m.offset(), want[1], want[0]))
                    seen += 1
                if seen < len(self.delivered):
                    self.errors.append("live consumer: message at offset %d not read back in 10 s"
                                       % self.delivered[seen][0])
                    return
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(str(e))

    def stop(self):
        self.stop_flag.set()
        self.thread.join(60)
        self.consumer.close()
        try:
            _, err = self.kcat.communicate(timeout=60)  # closes its stdin: kcat flushes, exits
        except subprocess.TimeoutExpired:
            self.kcat.kill()
            _, err = self.kcat.communicate()
        if self.kcat.returncode != 0:
            self.errors.append("kcat -P exited with %d: %s" % (self.kcat.returncode,
                                                              err.decode(errors="replace")[-2000:]))
        # every kcat line is in the topic
        got = subprocess.run(["kcat", "-C", "-b", self.broker.bootstrap, "-t", self.kcat_topic,
                              "-e", "-o", "beginning", "-f", "%k:%s\\n", "-q"],
                             capture_output=True, timeout=60)
        lines = got.stdout.decode(errors="replace").split()
        missing = [x for x in self.kcat_lines if x not in set(lines)]
        if got.returncode != 0 or missing:
            self.errors.append("kcat -C (exit %d) misses %d of the %d lines kcat -P produced, "
                               "e.g. %s; stderr: %s" % (got.returncode, len(missing),
                                                        len(self.kcat_lines), missing[:3],
                                                        got.stderr.decode(errors="replace")[-1000:]))
        return len(self.delivered), len(self.kcat_lines)


class WithClients(B.BrokerTestCase, Cases):
    """The same cases while real clients produce and consume beside them."""

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="bad-input-clients").start()
        cls.watch = B.RawClient(cls.broker.port)
        # The clients' first round trip: a broker that cannot serve them fails
        # the class here, once, with the clients' own error.
        try:
            cls.live = LiveClients(cls.broker)
        except BaseException:
            cls.watch.close()
            sys.stderr.write("\n%s\n" % cls.broker.log_tail(60))
            cls.broker.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.watch.close()
        try:
            cls.broker.stop()
        finally:
            cls.broker.close()

    def setUp(self):
        if self.live is None:
            type(self).live = LiveClients(self.broker)

    def tearDown(self):
        # Each test ends by checking that the clients were unaffected.
        super().tearDown()
        live, type(self).live = self.live, None
        if live is None:
            return
        n, k = live.stop()
        if live.errors:
            self.fail("the clients running beside the bad input failed:\n  "
                      + "\n  ".join(live.errors[:10]))
        if live.stalls:
            self.fail("the live producer waited over 2 s for a message: %s" % live.stalls[:5])
        self.assertGreater(n, 1, "the live loop made no progress")

    def after(self, what):
        self.broker.check_alive(what)
        if self.live is not None and self.live.errors:
            self.fail("after %s: the clients beside it failed: %s" % (what, self.live.errors[:3]))
        try:
            self.watch.api_versions()
        except Exception as e:
            self.fail("after %s: the other connection's ApiVersions failed: %s" % (what, e))


# ---- requests that parse but are wrong --------------------------------------

CORRUPT = {2, 87}  # CORRUPT_MESSAGE, INVALID_RECORD


class Closed(Exception):
    pass


def produce_raw(port, topic, partition, records, acks=-1, version=3):
    """Produce v3 of `records` (bytes or None); returns (error, base_offset);
    Closed if the broker closed the connection instead."""
    w = B.Writer()
    w.string(None).i16(acks).i32(10000)
    w.array([topic], lambda w, t: w.string(t).array(
        [partition], lambda w, p: w.i32(p).bytes_(records)))
    try:
        with B.RawClient(port) as c:
            body = c.request(0, version, w.b)
    except (ConnectionError, OSError) as e:
        raise Closed(str(e))
    r = B.Reader(body)
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
    return topics[0][1][0][1], topics[0][1][0][2]


def fetch_body(topic, partition, offset, max_wait=0, min_bytes=0, max_bytes=1 << 20,
               pmax=1 << 20):
    w = B.Writer()
    w.i32(-1).i32(max_wait).i32(min_bytes).i32(max_bytes).i8(0)
    w.array([topic], lambda w, t: w.string(t).array(
        [partition], lambda w, p: w.i32(p).i64(offset).i32(pmax)))
    return w.b


def fetch_parse(body):
    """Fetch v4 response: (error, high_watermark, records bytes) of the first partition."""
    r = B.Reader(body)
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (
        r.i32(), r.i16(), r.i64(), r.i64(), r.array(lambda r: (r.i64(), r.i64())), r.bytes_()))))
    _, err, hw, _, _, recs = topics[0][1][0]
    return err, hw, recs


def fetch_raw(port, *args, **kw):
    try:
        with B.RawClient(port, timeout=30) as c:
            return fetch_parse(c.request(1, 4, fetch_body(*args, **kw)))
    except (ConnectionError, OSError) as e:
        raise Closed(str(e))


def metadata_raw(port, topics, auto=True):
    """Metadata v4: (brokers [(id, host, port)], topics [(error, name, partitions
    [(error, index, leader)])])."""
    w = B.Writer().array(topics, lambda w, t: w.string(t)).bool(auto)
    with B.RawClient(port) as c:
        r = B.Reader(c.request(3, 4, w.b))
    r.i32()
    brokers = r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string())[:3])
    r.string()
    r.i32()
    ts = r.array(lambda r: (r.i16(), r.string(), r.bool(), r.array(lambda r: (
        r.i16(), r.i32(), r.i32(), r.array(lambda r: r.i32()), r.array(lambda r: r.i32()))[:3])))
    return brokers, [(t[0], t[1], t[3]) for t in ts]


def cpu_s(pid):
    """User + system CPU seconds of a process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class BadRequests(B.BrokerTestCase):
    """Requests that parse but are wrong: corrupt record batches, bad
    partitions, acks and names, fetches out of range, long polls whose clients
    go away. Each must get Kafka's error (a rejected batch appends nothing) or
    a close, and the broker carries on."""

    topic = "bad"

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="bad-requests", extra=["--num.partitions=1"]).start()
        with B.RawClient(cls.broker.port) as c:
            apis = c.api_versions()
        B.pick_version(apis, 0, [3], "Produce")
        B.pick_version(apis, 1, [4], "Fetch")
        B.pick_version(apis, 3, [4], "Metadata")
        # auto-create the topic, find its leader
        deadline = time.monotonic() + 10
        while True:
            brokers, topics = metadata_raw(cls.broker.port, [cls.topic])
            err, _, parts = topics[0]
            if err == 0 and parts and parts[0][2] >= 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError("Metadata of %s: error %d, partitions %s"
                                     % (cls.topic, err, parts))
            time.sleep(0.1)
        leader = parts[0][2]
        cls.port = [b[2] for b in brokers if b[0] == leader][0]

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def create(self, name, timeout=10):
        """Auto-create `name` through Metadata; returns the leader's port."""
        deadline = time.monotonic() + timeout
        while True:
            brokers, topics = metadata_raw(self.broker.port, [name])
            err, got, parts = topics[0]
            if err == 0 and parts and parts[0][2] >= 0:
                return [b[2] for b in brokers if b[0] == parts[0][2]][0]
            if time.monotonic() > deadline:
                self.fail("Metadata with auto-create of a %d-character name: error %d, name "
                          "answered %s, partitions %s" % (len(name), err,
                                                          "the same" if got == name else
                                                          "%d characters" % len(got), parts))
            time.sleep(0.1)

    def hw(self):
        err, hw, _ = fetch_raw(self.port, self.topic, 0, 0)
        self.assertEqual(err, 0, "Fetch at 0: error %d" % err)
        return hw

    def produce_ok(self, value=b"ok"):
        err, base = produce_raw(self.port, self.topic, 0, B.record_batch([(b"k", value)]))
        self.assertEqual(err, 0, "a valid Produce v3: error %d" % err)
        return base

    def expect_rejected(self, what, records, codes=None, partition=0, acks=-1, topic=None):
        """Produce `records`; want an error (in `codes` when given) or a close;
        nothing appended; the broker up and taking a valid batch after."""
        before = self.hw()
        try:
            err, _ = produce_raw(self.port, self.topic if topic is None else topic, partition,
                                 records, acks)
        except Closed:
            err = None
        self.broker.check_alive(what)
        if err is not None:
            self.assertNotEqual(err, 0, "%s: accepted (error 0)" % what)
            if codes is not None:
                self.assertIn(err, codes, "%s: error %d, want one of %s" % (what, err, sorted(codes)))
        self.assertEqual(self.hw(), before, "%s: rejected (error %s) but the high watermark moved"
                         % (what, err))
        base = self.produce_ok()
        self.assertEqual(base, before, "%s: the next valid batch's offset" % what)

    def test_valid_batch_round_trip(self):
        # The encoder of this test, checked: a valid batch is stored and fetched as sent.
        base = self.produce_ok(b"raw-value-1")
        err, hw, recs = fetch_raw(self.port, self.topic, 0, base)
        self.assertEqual(err, 0)
        self.assertEqual(hw, base + 1)
        self.assertIn(b"raw-value-1", recs)
        self.assertEqual(struct.unpack(">q", recs[:8])[0], base, "the batch's base offset")
        crc = struct.unpack(">I", recs[17:21])[0]
        n = struct.unpack(">i", recs[8:12])[0]
        self.assertEqual(B.crc32c(recs[21:12 + n]), crc, "the fetched batch's CRC")

    def test_corrupt_batches(self):
        recs = [(b"k", b"v")]
        section = B.record(b"k", b"v", 0)
        rng = random.Random(6)

        def garbage(n):
            return bytes(rng.getrandbits(8) for _ in range(n))
        # garbage that declares a large uncompressed size may be refused as such
        BAD_CODEC = CORRUPT | {10}  # MESSAGE_TOO_LARGE
        cases = [
            ("bad CRC", B.record_batch(recs, crc=0xDEADBEEF), CORRUPT),
            ("batch length +100", B.record_batch(recs, length_delta=100), CORRUPT),
            ("batch length -10", B.record_batch(recs, length_delta=-10), CORRUPT),
            ("batch length 2^30", B.record_batch(recs, length_delta=1 << 30), CORRUPT),
            ("record count 5 of 1", B.record_batch(recs, count=5), CORRUPT),
            ("record count 0", B.record_batch(recs, count=0), CORRUPT),
            ("record count -1", B.record_batch(recs, count=-1), CORRUPT),
            ("lastOffsetDelta 10 for 1 record", B.record_batch(recs, last_offset_delta=10), CORRUPT),
            ("offset deltas 0, 0", B.record_batch([(b"a", b"1"), (b"b", b"2")], compressed=(
                B.record(b"a", b"1", 0) + B.record(b"b", b"2", 0))), CORRUPT),
            ("record cut short", B.record_batch(recs, compressed=section[:-3]), CORRUPT),
            ("record length 2^30", B.record_batch(recs, compressed=B.varint(1 << 30) + section[1:]),
             CORRUPT),
            ("key length past the end", B.record_batch(recs, compressed=(
                B.varint(8) + b"\x00" + B.varint(0) + B.varint(0) + B.varint(1000) + b"abcd")),
             CORRUPT),
            ("magic 3", B.record_batch(recs, magic=3), None),
            ("codec 5", B.record_batch(recs, attributes=5), None),
            ("codec 7", B.record_batch(recs, attributes=7), None),
            ("gzip garbage", B.record_batch(recs, attributes=1,
                                            compressed=b"\x1f\x8b\x08\x00" + garbage(200)),
             BAD_CODEC),
            ("snappy garbage", B.record_batch(recs, attributes=2, compressed=garbage(200)), BAD_CODEC),
            ("snappy-java framing garbage", B.record_batch(recs, attributes=2, compressed=(
                b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, 1 << 30) + garbage(64))), BAD_CODEC),
            ("lz4 garbage", B.record_batch(recs, attributes=3, compressed=(
                b"\x04\x22\x4d\x18" + garbage(200))), BAD_CODEC),
            ("zstd garbage", B.record_batch(recs, attributes=4, compressed=(
                b"\x28\xb5\x2f\xfd" + garbage(200))), BAD_CODEC),
            ("gzip of too few records", B.record_batch(recs, count=3, attributes=1,
                                                       compressed=gzip(section)), CORRUPT),
            ("truncated batch header", B.record_batch(recs)[:30], CORRUPT),
            ("empty records", b"", CORRUPT),
            ("null records", None, None),
        ]
        for what, data, codes in cases:
            with self.subTest(what):
                self.expect_rejected(what, data, codes)

    def test_bad_targets(self):
        batch = B.record_batch([(b"k", b"v")])
        self.expect_rejected("partition 999", batch, {3}, partition=999)
        self.expect_rejected("partition -1", batch, {3}, partition=-1)
        self.expect_rejected("acks=5", batch, {21}, acks=5)
        self.expect_rejected("topic bad/name", batch, {3, 17}, topic="bad/name")
        self.expect_rejected("topic ''", batch, {3, 17}, topic="")

    def test_magic_0_and_1(self):
        # Old message sets: converted, or refused; never a crash.
        for magic in (0, 1):
            value = b"old-format"
            if magic == 0:
                inner = struct.pack(">bb", 0, 0) + struct.pack(">i", -1) + struct.pack(">i", len(value)) + value
            else:
                inner = (struct.pack(">bbq", 1, 0, int(time.time() * 1000)) + struct.pack(">i", -1)
                         + struct.pack(">i", len(value)) + value)
            msg = struct.pack(">I", zlib.crc32(inner)) + inner
            data = struct.pack(">qi", 0, len(msg)) + msg
            try:
                err, _ = produce_raw(self.port, self.topic, 0, data)
            except Closed:
                err = "closed"
            self.broker.check_alive("a magic %d message set" % magic)
            sys.stderr.write("  a magic %d message set: %s\n" % (magic, err))
            self.produce_ok()

    def test_gzip_bomb(self):
        # 256 MiB of zeros in one record, gzip'd to ~256 KB: the broker may
        # take it or refuse it, but must not blow up doing either.
        size = 256 << 20
        body_len = 1 + 1 + 1 + 1 + len(B.varint(size)) + size + 1
        prefix = (B.varint(body_len) + b"\x00" + B.varint(0) + B.varint(0) + B.varint(-1)
                  + B.varint(size))
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        out = [z.compress(prefix)]
        zeros = bytes(1 << 20)
        for _ in range(size >> 20):
            out.append(z.compress(zeros))
        out.append(z.compress(B.varint(0)))
        out.append(z.flush())
        comp = b"".join(out)
        self.create("bomb")
        pid = self.broker.proc.pid
        hwm0 = vm_kib(pid, "VmHWM")
        t0 = time.monotonic()
        try:
            err, _ = produce_raw(self.port, "bomb", 0, B.record_batch(
                [(None, b"")], attributes=1, compressed=comp))
        except Closed:
            err = "closed"
        took = time.monotonic() - t0
        self.broker.check_alive("a gzip bomb")
        hwm1 = vm_kib(pid, "VmHWM")
        sys.stderr.write("  gzip bomb (%d KB -> 256 MiB): answer %s in %.2f s, broker peak RSS "
                         "%s -> %s KiB\n" % (len(comp) >> 10, err, took, hwm0, hwm1))
        self.produce_ok()
        if hwm0 is not None and hwm1 is not None:
            self.assertLess(hwm1 - hwm0, 1 << 20, "a 256 KB request raised the broker's peak RSS "
                            "by %d MiB" % ((hwm1 - hwm0) >> 10))

    def test_fetch_out_of_range(self):
        hw = self.hw()
        for what, args, kw, codes in [
                ("offset -5", (self.topic, 0, -5), {}, {1}),
                ("offset past the end", (self.topic, 0, hw + 10), {}, {1}),
                ("partition 999", (self.topic, 999, 0), {}, {3}),
                ("unknown topic", ("no-such-topic-fetch", 0, 0), {}, {3}),
                ("partition max bytes -1", (self.topic, 0, 0), {"pmax": -1}, None),
                ("max bytes 0", (self.topic, 0, 0), {"max_bytes": 0}, None),
                ("min bytes -1, max wait -1", (self.topic, 0, 0), {"min_bytes": -1, "max_wait": -1},
                 None)]:
            with self.subTest(what):
                try:
                    err, _, _ = fetch_raw(self.port, *args, **kw)
                except Closed:
                    err = None
                self.broker.check_alive("Fetch " + what)
                if codes is not None:
                    self.assertIn(err, codes, "Fetch %s: error %s" % (what, err))
        self.assertEqual(self.hw(), hw)

    def test_long_polls_that_go_away(self):
        hw = self.hw()
        # 30 long polls at the end, closed before data arrives
        conns = []
        for _ in range(30):
            c = B.RawClient(self.port)
            c.send(1, 4, fetch_body(self.topic, 0, hw, max_wait=60000, min_bytes=1))
            conns.append(c)
        time.sleep(0.3)
        for c in conns:
            c.close()
        time.sleep(0.1)
        self.produce_ok(b"wake-the-dead")  # wakes waiters whose connections are gone
        self.broker.check_alive("producing to a partition whose long polls went away")
        self.produce_ok()
        # a long poll that stays is answered by a produce, promptly
        hw = self.hw()
        with B.RawClient(self.port, timeout=30) as c:
            t0 = time.monotonic()
            corr = c.send(1, 4, fetch_body(self.topic, 0, hw, max_wait=20000, min_bytes=1))
            time.sleep(0.2)
            self.produce_ok(b"wake-up")
            err, new_hw, recs = fetch_parse(c.receive(corr))
            took = time.monotonic() - t0
        self.assertEqual(err, 0)
        self.assertIn(b"wake-up", recs or b"", "the long poll's answer has the new record")
        self.assertLess(took, 5.0, "a long poll took %.1f s to see a produce" % took)
        # and one with no data ends at max_wait
        with B.RawClient(self.port, timeout=30) as c:
            t0 = time.monotonic()
            err, _, recs = fetch_parse(c.request(1, 4, fetch_body(self.topic, 0, new_hw,
                                                                  max_wait=500, min_bytes=1)))
            took = time.monotonic() - t0
        self.assertEqual(err, 0)
        self.assertFalse(recs, "nothing to fetch at the end")
        self.assertTrue(0.3 <= took < 3.0, "max_wait 500 ms: answered after %.2f s" % took)

    def test_produce_to_a_new_topic_creates_it(self):
        # The issue: "Auto-create topics on Metadata and Produce".
        try:
            err, base = produce_raw(self.port, "made-by-produce", 0, B.record_batch([(b"k", b"v")]))
        except Closed:
            err = "closed"
        if err != 0:
            # a first Produce may say LEADER_NOT_AVAILABLE / UNKNOWN while it creates; a retry
            time.sleep(0.5)
            err2, base = produce_raw(self.port, "made-by-produce", 0, B.record_batch([(b"k", b"v")]))
            self.assertEqual(err2, 0, "Produce to an unknown topic (auto.create.topics.enable=true): "
                             "error %s, then %s on a retry; the topic was not created" % (err, err2))

    def test_longest_valid_name(self):
        # Kafka allows 249 characters.
        for n in (245, 246, 249):
            with self.subTest(n):
                name = "n%d-" % n
                name += "n" * (n - len(name))
                port = self.create(name, timeout=3)
                err, base = produce_raw(port, name, 0, B.record_batch([(b"k", b"v")]))
                self.assertEqual((err, base), (0, 0), "Produce to a %d-character name" % n)

    def test_long_poll_min_bytes_above_available(self):
        # A Fetch whose min_bytes is more than there is (but there is some,
        # past its offset) waits max_wait and answers what there is; the wait
        # costs no CPU. Sent to shard 1's own port (base port + 1, which no
        # other shard shares) for a partition shard 1 owns and for one shard 0
        # owns (forwarded).
        shard1_port = self.broker.port + 1
        by_leader = {}
        for i in range(40):
            if len(by_leader) == 2:
                break
            name = "minbytes-%d" % i
            self.create(name)
            _, topics = metadata_raw(self.broker.port, [name])
            by_leader.setdefault(topics[0][2][0][2], name)
        self.assertEqual(sorted(by_leader), [0, 1], "topics led by both shards")
        for owner, name in ((0, "forwarded to its owner"), (1, "on its owner")):
            topic = by_leader[owner]
            with self.subTest(name):
                err, base = produce_raw(self.port, topic, 0, B.record_batch([(b"k", b"less")]))
                self.assertEqual(err, 0)
                cpu0 = cpu_s(self.broker.proc.pid)
                t0 = time.monotonic()
                try:
                    err, hw, recs = fetch_raw(shard1_port, topic, 0, base, max_wait=1000,
                                              min_bytes=1 << 20)
                except Closed as e:
                    self.fail("Fetch v4 (offset %d, high watermark %d, min_bytes 1 MiB, max_wait "
                              "1000 ms) to shard 1 for a partition of shard %d: %s; broker: %s"
                              % (base, base + 1, owner, e, "alive" if self.broker.alive() else
                                 B.describe_status(self.broker.proc.poll())))
                took = time.monotonic() - t0
                burnt = cpu_s(self.broker.proc.pid) - cpu0
                self.broker.check_alive("a long poll with min_bytes above what there is")
                self.assertEqual(err, 0)
                self.assertIn(b"less", recs or b"")
                self.assertTrue(0.8 <= took < 3.0, "max_wait 1000 ms: answered after %.2f s" % took)
                self.assertLess(burnt, 0.3, "the broker used %.2f s of CPU during a %.2f s long "
                                "poll %s (busy waiting)" % (burnt, took, name))

    def test_metadata_bad_names(self):
        names = ["bad/name", "", "..", "x" * 250, "y" * 300, "sp ace"]
        _, topics = metadata_raw(self.port, names, auto=True)
        got = {t[1]: t[0] for t in topics}
        for n in names:
            self.assertEqual(got.get(n), 17, "Metadata of %r with auto-create: error %s, want 17 "
                             "(INVALID_TOPIC_EXCEPTION)" % (n[:20], got.get(n)))
        _, every = metadata_raw(self.port, None)
        created = [t[1][:30] + "... (%d)" % len(t[1]) for t in every
                   if t[1] in names or t[1].startswith("xxxxxxxx") or t[1].startswith("yyyyyyyy")]
        self.assertFalse(created, "invalid names were created: %s" % created)

    def test_zz_stop_with_a_long_poll_pending(self):
        hw = self.hw()
        c = B.RawClient(self.port, timeout=30)
        corr = c.send(1, 4, fetch_body(self.topic, 0, hw, max_wait=0x7FFFFFFF, min_bytes=1))
        time.sleep(0.2)
        t0 = time.monotonic()
        self.broker.stop()  # exit 0
        took = time.monotonic() - t0
        try:
            fetch_parse(c.receive(corr))
            outcome_ = "answered"
        except (ConnectionError, OSError):
            outcome_ = "closed"
        c.close()
        self.broker.start()
        self.assertLess(took, 10.0, "SIGTERM with a long poll pending: %.1f s to exit" % took)
        sys.stderr.write("  SIGTERM with a long poll pending: exit 0 after %.2f s, the poll %s\n"
                         % (took, outcome_))


class Connections(B.BrokerTestCase):
    """In-order answers on one connection (pipelined requests of every kind,
    a long poll among them), many connections at once, and the idle timeout
    (connections.max.idle.ms), also for a connection stuck in a partial frame."""

    IDLE_MS = 1000

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(name="connections", extra=[
            "--num.partitions=4", "--connections.max.idle.ms=%d" % cls.IDLE_MS]).start()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.broker.alive():
                cls.broker.stop()
        finally:
            cls.broker.close()

    def test_pipelined_in_order(self):
        topic = "pipe"
        deadline = time.monotonic() + 10
        while True:
            _, topics = metadata_raw(self.broker.port, [topic])
            if topics[0][0] == 0 and len(topics[0][2]) == 4:
                break
            self.assertLess(time.monotonic(), deadline, "Metadata of %s: %s" % (topic, topics))
            time.sleep(0.1)
        metadata_raw(self.broker.port, ["pipe-idle"])
        # On one connection: a long poll (300 ms on a partition nobody writes
        # to), then produces to every partition (forwarded to their shards),
        # fetches, Metadata and ApiVersions: answered in exactly this order.
        with B.RawClient(self.broker.port, timeout=30) as c:
            sent = []
            sent.append(("long poll", c.send(1, 4, fetch_body("pipe-idle", 0, 0, max_wait=300,
                                                             min_bytes=1))))
            for rnd in range(5):
                for part in range(4):
                    w = B.Writer()
                    w.string(None).i16(-1).i32(10000)
                    batch = B.record_batch([(b"k", b"r%d-p%d" % (rnd, part))])
                    w.array([topic], lambda w, t: w.string(t).array(
                        [part], lambda w, p: w.i32(p).bytes_(batch)))
                    sent.append(("produce %d/%d" % (rnd, part), c.send(0, 3, w.b)))
                sent.append(("fetch", c.send(1, 4, fetch_body(topic, rnd % 4, 0))))
                sent.append(("metadata", c.send(3, 4, B.Writer().array(
                    [topic], lambda w, t: w.string(t)).bool(False).b)))
                sent.append(("api versions", c.send(18, 0)))
            for what, corr in sent:
                size = struct.unpack(">i", B.recv_exact(c.sock, 4))[0]
                data = B.recv_exact(c.sock, size)
                got = struct.unpack(">i", data[:4])[0]
                self.assertEqual(got, corr, "answer %d came where %s (%d) was due: answers "
                                 "out of order" % (got, what, corr))
                if what.startswith("produce"):
                    r = B.Reader(data[4:])
                    res = r.array(lambda r: (r.string(), r.array(
                        lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
                    self.assertEqual(res[0][1][0][1], 0, "%s: error %d" % (what, res[0][1][0][1]))
                    self.assertEqual(res[0][1][0][2], int(what.split()[1].split("/")[0]),
                                     "%s: base offset" % what)

    def test_many_connections(self):
        # 600 connections to shard 1's own port (so one shard holds them all),
        # each answered twice: a Kafka broker serves thousands.
        n = 600
        conns = []
        try:
            for _ in range(n):
                conns.append(B.RawClient(self.broker.port + 1))
            for rnd in range(2):
                corrs = [c.send(18, 0) for c in conns]
                lost = []
                for i, (c, corr) in enumerate(zip(conns, corrs)):
                    try:
                        c.receive(corr)
                    except (ConnectionError, OSError) as e:
                        lost.append((i, str(e)))
                if lost:
                    self.fail("round %d: %d of %d connections to one shard were not answered "
                              "(closed by the broker), e.g. %s" % (rnd + 1, len(lost), n, lost[:3]))
        finally:
            for c in conns:
                c.close()
        self.broker.check_alive("%d connections" % n)

    def test_idle_timeout(self):
        idle = B.RawClient(self.broker.port)
        partial = self.connect_partial()
        busy = B.RawClient(self.broker.port)
        t0 = time.monotonic()
        closed = {}
        while time.monotonic() - t0 < self.IDLE_MS / 1000 * 4 and len(closed) < 2:
            busy.api_versions()  # keeps this one active
            for name, sock in (("idle", idle.sock), ("partial", partial)):
                if name in closed:
                    continue
                r, _, _ = select.select([sock], [], [], 0.05)
                if r:
                    try:
                        data = sock.recv(1)
                    except ConnectionResetError:
                        data = b""
                    self.assertEqual(data, b"", "%s: unexpected data" % name)
                    closed[name] = time.monotonic() - t0
        busy.api_versions()  # never closed while active
        for c in (idle, busy):
            c.close()
        partial.close()
        for name in ("idle", "partial"):
            self.assertIn(name, closed, "the %s connection was not closed within %.1f s "
                          "(connections.max.idle.ms=%d)" % (name, self.IDLE_MS / 1000 * 4,
                                                            self.IDLE_MS))
            self.assertGreater(closed[name], self.IDLE_MS / 1000 * 0.5,
                               "the %s connection was closed after %.2f s, before it was idle "
                               "for connections.max.idle.ms" % (name, closed[name]))

    def connect_partial(self):
        s = socket.create_connection(("127.0.0.1", self.broker.port), timeout=10)
        s.sendall(struct.pack(">i", 100) + b"\x00\x12")
        return s


def gzip(data):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


if __name__ == "__main__":
    os.environ["RIVVEND"] = B.find_binary(sys.argv)  # the binary may be an argument
    why = B.have_clients()
    if why:
        print("skip: %s" % why)
        sys.exit(77)
    unittest.main(verbosity=2)
