"""tests/broker/broker.py - start and stop rivvend for the client tests.

    from broker import Broker
    b = Broker()                       # the binary: $RIVVEND, else argv, else build dirs
    b.start()                          # free port(s), temporary data directory
    b.bootstrap                        # "127.0.0.1:PORT"
    b.kill9(); b.start()               # SIGKILL, then restart on the same data dir and port
    b.stop()                           # SIGTERM, expect exit 0 (AssertionError otherwise)
    b.close()                          # kill what runs, remove the data directory

The broker's stderr goes to a file in the temporary directory; every failure
message of this module ends with its last lines (b.log_tail()), and the test
modules print it when a test fails.

Also here: a small Kafka request encoder and response decoder over raw sockets
(Writer, Reader, RawClient), for the requests confluent-kafka 1.7.0 does not
make (DeleteRecords, DescribeCluster, DescribeLogDirs, IncrementalAlterConfigs)
and for the bad-input tests.
"""

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def find_binary(argv=None):
    """The rivvend to test: $RIVVEND, an argument naming an existing file
    (removed from argv), or the first build directory of the checkout that has one."""
    env = os.environ.get("RIVVEND")
    if env:
        return env
    if argv is not None:
        for i, a in enumerate(argv[1:], 1):
            if not a.startswith("-") and os.path.basename(a) == "rivvend" and os.path.isfile(a):
                del argv[i]
                return a
    for d in ("build-test", "build", "build-release", "build-asan"):
        p = os.path.join(ROOT, d, "tools", "rivvend")
        if os.path.isfile(p):
            return p
    raise SystemExit("rivvend not found: set RIVVEND=path/to/rivvend")


def describe_status(rc):
    if rc is None:
        return "not started or still running"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit status %d" % rc


_HELP = {}


def help_text(binary):
    """rivvend --help (cached): which keys this binary knows."""
    if binary not in _HELP:
        try:
            _HELP[binary] = subprocess.run([binary, "--help"], capture_output=True, timeout=20,
                                           text=True).stdout
        except (OSError, subprocess.SubprocessError):
            _HELP[binary] = ""
    return _HELP[binary]


def _port_free(port):
    """Whether a listener could bind port now (TIME_WAIT connections do not
    count: rivvend binds with SO_REUSEADDR too)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n):
    """A base port P such that P .. P+n-1 are all free on 127.0.0.1 (now).

    Taken below the kernel's ephemeral range: a broker restarted on its ports
    after a kill -9 must find them free, and a port in that range can meanwhile
    become the local port of any client's connection (another test's, running
    in parallel) and stay taken for as long as that connection lives."""
    lo, _ = _ephemeral_range()
    if lo - n > 20000:
        rng = random.Random()
        for _ in range(200):
            base = rng.randrange(20000, lo - n)
            if all(_port_free(base + i) for i in range(n)):
                return base
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n >= 65536:
            continue
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no %d consecutive free ports" % n)


class BrokerError(AssertionError):
    pass


class Broker:
    def __init__(self, binary=None, shards=2, advertise_shards=True, extra=(), name="broker"):
        self.binary = binary or find_binary()
        self.shards = shards
        self.advertise_shards = advertise_shards
        self.extra = list(extra)
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="rivvend-%s." % name)
        self.data_dir = os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.tmp, "stderr.log")
        self.port = None
        self.proc = None
        self.starts = 0

    # ---- life cycle -------------------------------------------------------

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    def ports(self):
        """Every port this broker listens on (shard i on port + i when advertised)."""
        n = self.shards if self.advertise_shards else 1
        return [self.port + i for i in range(n)]

    def args(self):
        a = [self.binary,
             "--listeners=PLAINTEXT://127.0.0.1:%d" % self.port,
             "--log.dirs=%s" % self.data_dir,
             "--rivven.shards=%d" % self.shards,
             "--rivven.advertise.shards=%s" % ("true" if self.advertise_shards else "false")]
        # The admin HTTP listener (a fixed default port) is off unless asked for,
        # so brokers of tests running side by side do not compete for it.
        if (not any(x.startswith("--rivven.admin.listener=") for x in self.extra)
                and "rivven.admin.listener=" in help_text(self.binary)):
            a.append("--rivven.admin.listener=")
        return a + self.extra

    def start(self, timeout=30.0):
        """Start it (again, on the same data directory and port when restarting)
        and wait until every port it listens on accepts a connection."""
        assert self.proc is None, "already running"
        restart = self.port is not None
        tries = 5
        for attempt in range(tries):
            if not restart and (self.port is None or attempt > 0):
                self.port = free_ports(self.shards if self.advertise_shards else 1)
            if restart:
                # A killed broker's listeners can outlive it for a moment (its
                # io_uring is torn down after the process is reaped) and would
                # answer the readiness probe: wait until they are gone.
                self._wait_ports_free(10.0)
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(("---- start %d: %s\n" % (self.starts, " ".join(self.args()))).encode())
                log.flush()
                self.proc = subprocess.Popen(self.args(), stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                rc = self.proc.poll()
                if rc is not None:
                    self.proc = None
                    if rc == 1 and "in use" in self.log_tail(5) and attempt + 1 < tries:
                        time.sleep(0.5 if restart else 0)
                        break  # the port is taken: another one, or the same again later
                    raise BrokerError("rivvend exited with status %d while starting\n%s"
                                      % (rc, self.log_tail()))
                if all(self._accepts(p) for p in self.ports()):
                    return self
                time.sleep(0.02)
            else:
                self.kill9()
                raise BrokerError("rivvend did not accept on %s within %.0f s\n%s"
                                  % (self.ports(), timeout, self.log_tail()))
        raise BrokerError("rivvend could not get a port\n%s" % self.log_tail())

    def _wait_ports_free(self, timeout):
        deadline = time.monotonic() + timeout
        while not all(_port_free(p) for p in self.ports()):
            if time.monotonic() > deadline:
                return  # start() reports what rivvend says about it
            time.sleep(0.02)

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self, what=""):
        if not self.alive():
            rc = self.proc.poll() if self.proc is not None else None
            raise BrokerError("rivvend is not running%s (%s)\n%s"
                              % (" after " + what if what else "", describe_status(rc),
                                 self.log_tail()))

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Signal it and expect exit status 0 within timeout."""
        assert self.proc is not None, "not running"
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            raise BrokerError("rivvend had already exited with status %d\n%s"
                              % (proc.returncode, self.log_tail()))
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BrokerError("rivvend did not stop within %.0f s of %s\n%s"
                              % (timeout, signal.Signals(sig).name, self.log_tail()))
        if rc != 0:
            raise BrokerError("rivvend exited with status %d on %s\n%s"
                              % (rc, signal.Signals(sig).name, self.log_tail()))

    def kill9(self):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            note = "---- killed with SIGKILL\n"
        else:
            note = "---- had exited with status %d (%s)\n" % (
                proc.returncode, describe_status(proc.returncode))
        with open(self.log_path, "ab") as log:
            log.write(note.encode())

    def restart(self):
        self.stop()
        return self.start()

    def close(self, keep=False):
        """Kill it and remove the temporary directory (kept when keep or
        $RIVVEN_TEST_KEEP is set: its path is printed)."""
        self.kill9()
        if keep or os.environ.get("RIVVEN_TEST_KEEP"):
            sys.stderr.write("rivvend %s: kept %s\n" % (self.name, self.tmp))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- diagnostics ------------------------------------------------------

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=40):
        text = self.log().splitlines()[-lines:]
        return "---- rivvend stderr (%s, last %d lines) ----\n%s\n----" % (
            self.log_path, len(text), "\n".join(text))

    def rss_kib(self):
        """Resident memory of the broker in KiB (None if unknown)."""
        if not self.alive():
            return None
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None


class BrokerTestCase(unittest.TestCase):
    """A test case whose failures are followed by the broker's stderr (the
    class attribute `broker`, set by setUpClass or the test)."""

    broker = None

    def tearDown(self):
        # A broker that died during the test fails it, whatever the test saw;
        # it is restarted on the same data directory for the class's next tests.
        b = self.broker
        if b is not None and b.proc is not None and b.proc.poll() is not None:
            try:
                b.check_alive("this test")
            finally:
                b.kill9()  # notes how it ended in its log
                b.start()

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            if self.broker is not None:
                sys.stderr.write("\n%s\n" % self.broker.log_tail(60))
        return out


# ---- a minimal Kafka codec for raw requests --------------------------------

class Writer:
    def __init__(self, flexible=False):
        self.b = bytearray()
        self.flexible = flexible

    def i8(self, v):
        self.b += struct.pack(">b", v); return self

    def i16(self, v):
        self.b += struct.pack(">h", v); return self

    def i32(self, v):
        self.b += struct.pack(">i", v); return self

    def i64(self, v):
        self.b += struct.pack(">q", v); return self

    def bool(self, v):
        return self.i8(1 if v else 0)

    def uvarint(self, v):
        while True:
            if v < 0x80:
                self.b.append(v)
                return self
            self.b.append((v & 0x7F) | 0x80)
            v >>= 7

    def string(self, s):
        """string / compact_string (by the writer's flexibility); None = null."""
        if s is None:
            return self.uvarint(0) if self.flexible else self.i16(-1)
        data = s.encode() if isinstance(s, str) else bytes(s)
        if self.flexible:
            self.uvarint(len(data) + 1)
        else:
            self.i16(len(data))
        self.b += data
        return self

    def array(self, items, each):
        """array / compact array; None = null; each(writer, item) writes one."""
        if items is None:
            return self.uvarint(0) if self.flexible else self.i32(-1)
        if self.flexible:
            self.uvarint(len(items) + 1)
        else:
            self.i32(len(items))
        for it in items:
            each(self, it)
        return self

    def bytes_(self, data):
        """bytes / compact_bytes (records fields too); None = null."""
        if data is None:
            return self.uvarint(0) if self.flexible else self.i32(-1)
        if self.flexible:
            self.uvarint(len(data) + 1)
        else:
            self.i32(len(data))
        self.b += data
        return self

    def tags(self):
        """An empty tagged-field section (flexible versions only)."""
        if self.flexible:
            self.uvarint(0)
        return self


class Reader:
    def __init__(self, data, flexible=False):
        self.d = bytes(data)
        self.p = 0
        self.flexible = flexible

    def _take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("response truncated at %d (+%d of %d)" % (self.p, n, len(self.d)))
        v = self.d[self.p:self.p + n]
        self.p += n
        return v

    def i8(self):
        return struct.unpack(">b", self._take(1))[0]

    def i16(self):
        return struct.unpack(">h", self._take(2))[0]

    def i32(self):
        return struct.unpack(">i", self._take(4))[0]

    def i64(self):
        return struct.unpack(">q", self._take(8))[0]

    def bool(self):
        return self.i8() != 0

    def uvarint(self):
        v = shift = 0
        while True:
            b = self._take(1)[0]
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v
            shift += 7

    def string(self):
        n = self.uvarint() - 1 if self.flexible else self.i16()
        if n < 0:
            return None
        return self._take(n).decode("utf-8", "replace")

    def array(self, each):
        n = self.uvarint() - 1 if self.flexible else self.i32()
        if n < 0:
            return None
        return [each(self) for _ in range(n)]

    def bytes_(self):
        n = self.uvarint() - 1 if self.flexible else self.i32()
        if n < 0:
            return None
        return self._take(n)

    def tags(self):
        if self.flexible:
            for _ in range(self.uvarint()):
                self.uvarint()
                self._take(self.uvarint())

    def rest(self):
        return len(self.d) - self.p


# ---- record batches (magic 2) ------------------------------------------------

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(v):
    """A zigzag varint (record fields)."""
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append((z & 0x7F) | 0x80)
        z >>= 7


def record(key, value, offset_delta, timestamp_delta=0):
    body = b"\x00" + varint(timestamp_delta) + varint(offset_delta)
    for x in (key, value):
        body += varint(-1) if x is None else varint(len(x)) + x
    body += varint(0)  # headers
    return varint(len(body)) + body


def record_batch(records, count=None, attributes=0, magic=2, crc=None, length_delta=0,
                 last_offset_delta=None, timestamp=None, compressed=None):
    """A RecordBatch v2 over `records` ([(key, value)]), or with `compressed`
    as the records section as is (attributes say the codec). The other
    arguments break one field on purpose."""
    if compressed is None:
        section = b"".join(record(k, v, i) for i, (k, v) in enumerate(records))
    else:
        section = compressed
    n = len(records) if count is None else count
    lod = (len(records) - 1 if records else 0) if last_offset_delta is None else last_offset_delta
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    after_crc = struct.pack(">hiqqqhii", attributes, lod, ts, ts, -1, -1, -1, n) + section
    if crc is None:
        crc = crc32c(after_crc)
    length = 4 + 1 + 4 + len(after_crc) + length_delta
    return struct.pack(">qiibI", 0, length, -1, magic, crc) + after_crc


def request_frame(api_key, version, correlation_id, body=b"", flexible=False, client_id="rivven-test"):
    """A request frame: size, header v1 (v2 when flexible), body bytes."""
    h = Writer()
    h.i16(api_key).i16(version).i32(correlation_id).string(client_id)
    if flexible:
        h.uvarint(0)
    payload = bytes(h.b) + bytes(body)
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


class RawClient:
    """One connection; request() sends one request and returns the response body
    (after the correlation id and, for flexible responses, the header's tags)."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.corr = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, api_key, version, body=b"", flexible=False):
        self.corr += 1
        self.sock.sendall(request_frame(api_key, version, self.corr, body, flexible))
        return self.corr

    def receive(self, corr, flexible_header=False):
        size = struct.unpack(">i", recv_exact(self.sock, 4))[0]
        data = recv_exact(self.sock, size)
        got = struct.unpack(">i", data[:4])[0]
        if got != corr:
            raise AssertionError("response correlation id %d, want %d" % (got, corr))
        r = Reader(data[4:], flexible_header)
        r.tags()  # the response header's tags (v1)
        return r.d[r.p:]

    def request(self, api_key, version, body=b"", flexible=False):
        # ApiVersions answers with header v0 whatever the version.
        corr = self.send(api_key, version, body, flexible)
        return self.receive(corr, flexible_header=flexible and api_key != 18)

    def api_versions(self):
        """{api_key: (min, max)} from ApiVersions v0; raises on an error code."""
        r = Reader(self.request(18, 0))
        err = r.i16()
        apis = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
        if err != 0:
            raise AssertionError("ApiVersions error %d" % err)
        return {k: (lo, hi) for k, lo, hi in apis}


def pick_version(apis, api_key, wanted, name):
    """The highest of the versions `wanted` (that this test can encode) that the
    broker advertises; AssertionError naming the API otherwise."""
    if api_key not in apis:
        raise AssertionError("rivvend does not advertise %s (API key %d) in ApiVersions; it "
                             "advertises %s" % (name, api_key, sorted(apis)))
    lo, hi = apis[api_key]
    usable = [v for v in wanted if lo <= v <= hi]
    if not usable:
        raise AssertionError("%s: rivvend offers versions %d-%d, this test speaks %s"
                             % (name, lo, hi, wanted))
    return max(usable)


def have_clients():
    """None when confluent_kafka imports and kcat is on PATH, else why not."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as e:
        return "confluent_kafka does not import in %s: %s" % (sys.executable, e)
    if shutil.which("kcat") is None:
        return "kcat is not installed"
    return None
