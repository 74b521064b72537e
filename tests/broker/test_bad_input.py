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


if __name__ == "__main__":
    os.environ["RIVVEND"] = B.find_binary(sys.argv)  # the binary may be an argument
    why = B.have_clients()
    if why:
        print("skip: %s" % why)
        sys.exit(77)
    unittest.main(verbosity=2)
