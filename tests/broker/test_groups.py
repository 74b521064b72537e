#!/usr/bin/python3
"""tests/broker/test_groups.py - consumer groups against rivvend.

    RIVVEND=build/tools/rivvend /usr/bin/python3 tests/broker/test_groups.py [-v] [Class[.test]]

Clients: python3-confluent-kafka 1.7.0 (librdkafka) and raw requests for what
its AdminClient does not offer (DescribeGroups, DeleteGroups, OffsetDelete,
OffsetFetch, FindCoordinator). The broker runs 2 shards with a short
group.initial.rebalance.delay.ms; each class runs with rivven.advertise.shards
on (coordinators are shards advertised as brokers) and off (one broker, group
requests forwarded to the coordinator shard).

- test_rebalance_eager / test_rebalance_cooperative: 3 consumers over 6
  partitions (range, then cooperative-sticky), each committing every message
  before counting it (and rewinding when the commit is refused): every
  partition is assigned to exactly one member, never to two at once; one member
  leaves, one joins, more messages arrive; in the end every message was
  consumed exactly once.
- test_static_members_restart_without_rebalance: 3 members with
  group.instance.id; one restarts within its session timeout: it gets its old
  partitions back and the other members see no rebalance.
- test_commit_survives_restart (SIGTERM) / test_commit_survives_kill9: commit,
  restart the broker, the group resumes from the committed offsets.
- test_list_describe_delete: AdminClient.list_groups, raw DescribeGroups,
  DeleteGroups (non-empty, unknown, deleted), OffsetDelete, OffsetFetch.
- test_find_coordinator: every version, batched keys, key type transaction.
- OffsetExpiry: offsets.retention.minutes (in ms here): an empty group's and a
  standalone committer's offsets expire, an active group's stay, across a restart.
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
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
except ImportError:  # the runner skips (77) before we get here
    pass

PARTITIONS = 6
WAIT = 60  # seconds for a group to settle or a topic to be consumed


class ClientLog:
    def __init__(self):
        self.items = []

    def __call__(self, err):
        self.items.append(str(err))

    def tail(self, n=8):
        return "; ".join(self.items[-n:]) or "none"


def produce(bs, topic, values, log):
    """Produce the values (keyed by themselves) at acks=all; all must be delivered."""
    p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": False, "error_cb": log})
    failed = []
    for v in values:
        while True:
            try:
                p.produce(topic, key=v, value=v,
                          on_delivery=lambda err, msg: err and failed.append(err))
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(WAIT)
    if failed or left:
        raise AssertionError("producing to %s: %d failed (%s), %d not delivered (client errors: %s)"
                             % (topic, len(failed), failed[:1], left, log.tail()))


def wait_for(what, cond, timeout=WAIT, step=0.05, info=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError("%s: not within %d s %s" % (what, timeout, info()))


class Member(threading.Thread):
    """One consumer of a group in a thread. Counts a message only once its commit
    succeeded; when a commit is refused it seeks back, so whoever owns the
    partition next reads it again. Its assignment is kept up to date from the
    rebalance callbacks (revocation before the group moves on, assignment after)."""

    def __init__(self, name, bs, group, topic, board, log, **conf):
        super().__init__(daemon=True, name=name)
        self.mname = name
        self.topic = topic
        self.board = board  # shared: {name: set(partitions)}, with board_lock
        self.log = log
        self.stop_event = threading.Event()
        self.consumed = []  # (partition, offset, value)
        self.commit_refusals = 0
        self.assigns = 0
        self.revokes = 0
        self.errors = []
        self.conf = {"bootstrap.servers": bs, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 300,
                     "fetch.wait.max.ms": 50, "error_cb": log}
        self.conf.update(conf)
        self.cooperative = self.conf.get("partition.assignment.strategy") == "cooperative-sticky"
        self.closed = threading.Event()

    def _set(self, fn):
        with self.board.lock:
            cur = self.board.get(self.mname, set())
            self.board[self.mname] = fn(cur)

    def on_assign(self, consumer, partitions):
        self.assigns += 1
        ps = {tp.partition for tp in partitions}
        self._set(lambda cur: cur | ps if self.cooperative else ps)

    def on_revoke(self, consumer, partitions):
        self.revokes += 1
        ps = {tp.partition for tp in partitions}
        self._set(lambda cur: cur - ps if self.cooperative else set())

    def run(self):
        c = Consumer(self.conf)
        try:
            c.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
            while not self.stop_event.is_set():
                m = c.poll(0.05)
                if m is None:
                    continue
                if m.error():
                    self.errors.append(str(m.error()))
                    continue
                try:
                    res = c.commit(message=m, asynchronous=False)
                    ok = all(tp.error is None for tp in (res or []))
                except KafkaException:
                    ok = False
                if ok:
                    self.consumed.append((m.partition(), m.offset(), m.value()))
                else:
                    self.commit_refusals += 1
                    try:
                        c.seek(TopicPartition(self.topic, m.partition(), m.offset()))
                    except KafkaException:
                        pass  # no longer ours: its next owner reads it
        finally:
            c.close()
            self._set(lambda cur: set())
            self.closed.set()

    def stop(self, timeout=30):
        self.stop_event.set()
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("member %s did not close within %d s" % (self.mname, timeout))


class Board(dict):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def snapshot(self):
        with self.lock:
            return {k: set(v) for k, v in self.items()}


class Overlaps(threading.Thread):
    """Samples the board: a partition never belongs to two members at once."""

    def __init__(self, board):
        super().__init__(daemon=True)
        self.board = board
        self.bad = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            snap = self.board.snapshot()
            seen = {}
            for name, ps in snap.items():
                for p in ps:
                    if p in seen:
                        self.bad.append((p, seen[p], name, snap))
                    seen[p] = name
            time.sleep(0.005)


def settled(board, names):
    """Every partition with exactly one of the named members, the others empty."""
    snap = board.snapshot()
    owners = {}
    for name, ps in snap.items():
        if ps and name not in names:
            return False
        for p in ps:
            if p in owners:
                return False
            owners[p] = name
    return sorted(owners) == list(range(PARTITIONS)) and all(snap.get(n) for n in names)


def values(prefix, lo, hi):
    return [("%s-%06d" % (prefix, i)).encode() for i in range(lo, hi)]


# ---- raw requests -------------------------------------------------------------

def read_bytes(r):
    n = r.i32()
    return None if n < 0 else r._take(n)


def find_coordinator(c, version, keys, key_type=0):
    """[(key, error, node_id, host, port)]."""
    flexible = version >= 3
    w = B.Writer(flexible)
    if version <= 3:
        w.string(keys[0])
        if version >= 1:
            w.i8(key_type)
    else:
        w.i8(key_type)
        w.array(keys, lambda w, k: w.string(k))
    w.tags()
    r = B.Reader(c.request(10, version, bytes(w.b), flexible), flexible)
    if version >= 1:
        r.i32()
    if version <= 3:
        err = r.i16()
        if version >= 1:
            r.string()
        out = [(keys[0], err, r.i32(), r.string(), r.i32())]
        r.tags()
        return out

    def coord(r):
        key, node, host, port, err = r.string(), r.i32(), r.string(), r.i32(), r.i16()
        r.string()
        r.tags()
        return (key, err, node, host, port)
    return r.array(coord)


def describe_groups(c, groups):
    """v4: {group: (error, state, protocol_type, protocol, [(member, instance, client)])}."""
    w = B.Writer()
    w.array(groups, lambda w, g: w.string(g)).bool(False)
    r = B.Reader(c.request(15, 4, bytes(w.b)))
    r.i32()

    def member(r):
        m = (r.string(), r.string(), r.string())
        r.string()
        read_bytes(r)
        read_bytes(r)
        return m

    def group(r):
        err, gid, state, ptype, pdata = r.i16(), r.string(), r.string(), r.string(), r.string()
        members = r.array(member)
        r.i32()
        return gid, (err, state, ptype, pdata, members)
    return dict(r.array(group))


def delete_groups(c, groups):
    w = B.Writer()
    w.array(groups, lambda w, g: w.string(g))
    r = B.Reader(c.request(42, 1, bytes(w.b)))
    r.i32()
    return dict(r.array(lambda r: (r.string(), r.i16())))


def offset_delete(c, group, topic, partitions):
    w = B.Writer()
    w.string(group).array([topic], lambda w, t: w.string(t).array(
        partitions, lambda w, p: w.i32(p)))
    r = B.Reader(c.request(47, 0, bytes(w.b)))
    err = r.i16()
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return err, {p: e for _, ps in topics for p, e in ps}


def offset_fetch(c, group, topic=None, partitions=None):
    """v5: (error, {(topic, partition): offset}); topic None: every committed offset."""
    w = B.Writer()
    w.string(group)
    if topic is None:
        w.i32(-1)
    else:
        w.array([topic], lambda w, t: w.string(t).array(partitions, lambda w, p: w.i32(p)))
    r = B.Reader(c.request(9, 5, bytes(w.b)))
    r.i32()
    out = {}

    def part(r, t):
        p, off = r.i32(), r.i64()
        r.i32()
        r.string()
        r.i16()
        out[(t, p)] = off

    def topic_(r):
        t = r.string()
        r.array(lambda r: part(r, t))
    r.array(topic_)
    return r.i16(), out


# ---- the tests ------------------------------------------------------------------

class Groups(B.BrokerTestCase):
    advertise = True

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(shards=2, advertise_shards=cls.advertise,
                              name="groups-%s" % ("shards" if cls.advertise else "single"),
                              extra=["--group.initial.rebalance.delay.ms=300",
                                     "--num.partitions=%d" % PARTITIONS])
        cls.broker.start()

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def setUp(self):
        self.log = ClientLog()
        self.members = []

    def tearDown(self):
        for m in self.members:
            m.stop_event.set()
        for m in self.members:
            m.join(30)

    def member(self, name, group, topic, board, **conf):
        m = Member(name, self.broker.bootstrap, group, topic, board, self.log, **conf)
        self.members.append(m)
        m.start()
        return m

    def topic(self, name):
        return "%s-%s" % (name, "s" if self.advertise else "f")

    def info(self, board, members):
        return lambda: ("board %s, consumed %s, refusals %s, errors %s, client errors %s"
                        % (board.snapshot(), {m.mname: len(m.consumed) for m in members},
                           {m.mname: m.commit_refusals for m in members},
                           {m.mname: m.errors[-2:] for m in members}, self.log.tail()))

    # ---- rebalancing --------------------------------------------------------

    def run_rebalances(self, strategy):
        topic = self.topic("rebal-" + strategy)
        group = "g-" + topic
        produced = values("a", 0, 1500)
        produce(self.broker.bootstrap, topic, produced, self.log)
        board = Board()
        watch = Overlaps(board)
        watch.start()
        conf = {"partition.assignment.strategy": strategy}
        ms = [self.member("m%d" % i, group, topic, board, **conf) for i in range(3)]
        info = self.info(board, self.members)
        wait_for("3 members share the 6 partitions", lambda: settled(board, {"m0", "m1", "m2"}),
                 info=info)
        for name, ps in board.snapshot().items():
            self.assertEqual(len(ps), 2, "%s got %s of 6 partitions over 3 members" % (name, ps))
        total = lambda: sum(len(m.consumed) for m in self.members)  # noqa: E731
        wait_for("the first 1500 messages consumed", lambda: total() >= 1000, info=info)

        ms[0].stop()  # leaves the group
        wait_for("2 members take over", lambda: settled(board, {"m1", "m2"}), info=info)
        more = values("b", 0, 1500)
        produce(self.broker.bootstrap, topic, more, self.log)
        produced += more
        self.member("m3", group, topic, board, **conf)
        wait_for("a new member joins", lambda: settled(board, {"m1", "m2", "m3"}), info=info)
        more = values("c", 0, 1000)
        produce(self.broker.bootstrap, topic, more, self.log)
        produced += more
        wait_for("every message consumed", lambda: total() >= len(produced), info=info)
        time.sleep(0.5)  # anything consumed twice shows up now
        watch.stop_event.set()
        watch.join()

        consumed = [c for m in self.members for c in m.consumed]
        by_pos = {}
        for p, off, v in consumed:
            by_pos.setdefault((p, off), []).append(v)
        twice = {k: v for k, v in by_pos.items() if len(v) > 1}
        self.assertFalse(twice, "consumed twice: %s" % list(twice.items())[:5])
        got = sorted(v for _, _, v in consumed)
        self.assertEqual(len(got), len(produced), info())
        self.assertEqual(got, sorted(produced), "lost or unexpected messages")
        self.assertFalse(watch.bad, "a partition with two members at once: %s" % watch.bad[:3])
        for m in self.members:
            self.assertFalse([e for e in m.errors if "Broker: " in e], "%s: %s" % (m.mname, m.errors))
        sys.stderr.write("\n  %s: %s\n" % (strategy, ", ".join(
            "%s consumed %d (commits refused %d, %d assigns, %d revokes)"
            % (m.mname, len(m.consumed), m.commit_refusals, m.assigns, m.revokes)
            for m in self.members)))

    def test_rebalance_eager(self):
        self.run_rebalances("range")

    def test_rebalance_cooperative(self):
        self.run_rebalances("cooperative-sticky")

    # ---- static membership ---------------------------------------------------

    def test_static_members_restart_without_rebalance(self):
        topic = self.topic("static")
        group = "g-" + topic
        produce(self.broker.bootstrap, topic, values("s", 0, 300), self.log)
        board = Board()
        conf = {"session.timeout.ms": 10000}
        ms = [self.member("m%d" % i, group, topic, board, **dict(conf, **{
            "group.instance.id": "instance-%d" % i})) for i in range(3)]
        info = self.info(board, self.members)
        wait_for("3 static members share the 6 partitions",
                 lambda: settled(board, {"m0", "m1", "m2"}), info=info)
        time.sleep(1.0)  # nothing more is going on
        before = board.snapshot()
        counts = [(m.assigns, m.revokes) for m in ms[1:]]
        with B.RawClient(self.broker.port) as c:
            old = describe_groups(c, [group])[group]
        self.assertEqual(old[1], "Stable", old)
        self.assertEqual(sorted(m[1] for m in old[4]), ["instance-0", "instance-1",
                                                         "instance-2"], old)

        ms[0].stop()  # a static member sends no LeaveGroup: its session goes on
        again = self.member("m0-again", group, topic, board,
                            **dict(conf, **{"group.instance.id": "instance-0"}))
        wait_for("the restarted member gets its partitions back",
                 lambda: board.snapshot().get("m0-again") == before["m0"], info=info,
                 timeout=20)
        time.sleep(2.0)  # a rebalance, if one started, would show by now
        self.assertEqual([(m.assigns, m.revokes) for m in ms[1:]], counts,
                         "the other members saw a rebalance")
        snap = board.snapshot()
        self.assertEqual(snap["m1"], before["m1"])
        self.assertEqual(snap["m2"], before["m2"])
        with B.RawClient(self.broker.port) as c:
            new = describe_groups(c, [group])[group]
        self.assertEqual(new[1], "Stable", new)
        self.assertEqual(len(new[4]), 3, new)
        ids_old = {m[1]: m[0] for m in old[4]}
        ids_new = {m[1]: m[0] for m in new[4]}
        self.assertNotEqual(ids_old["instance-0"], ids_new["instance-0"], "a new member id")
        self.assertEqual(ids_old["instance-1"], ids_new["instance-1"])
        self.assertEqual(again.assigns, 1)

    # ---- restarts ---------------------------------------------------------------

    def commit_restart_resume(self, how):
        topic = self.topic("restart-" + how)
        group = "g-" + topic
        produced = values("r", 0, 600)
        produce(self.broker.bootstrap, topic, produced, self.log)
        c = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "error_cb": self.log})
        c.subscribe([topic])
        first = []
        deadline = time.monotonic() + WAIT
        while len(first) < 250 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                first.append((m.partition(), m.offset(), m.value()))
        self.assertGreaterEqual(len(first), 250, "consumed %d (client errors %s)"
                                % (len(first), self.log.tail()))
        c.commit(asynchronous=False)
        committed = {tp.partition: tp.offset for tp in
                     c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)}
        c.close()
        # What was consumed up to the committed offsets (a partition may be read further).
        done = [x for x in first if committed.get(x[0], -1001) > x[1]]

        if how == "kill9":
            self.broker.kill9()
        else:
            self.broker.stop()
        self.broker.start()

        c = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "error_cb": self.log})
        try:
            after = {tp.partition: tp.offset for tp in
                     c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                 timeout=30)}
            self.assertEqual(after, committed, "committed offsets after the restart")
            c.subscribe([topic])
            rest = []
            deadline = time.monotonic() + WAIT
            while len(done) + len(rest) < len(produced) and time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is not None and not m.error():
                    rest.append((m.partition(), m.offset(), m.value()))
            for p in range(PARTITIONS):
                offs = [off for q, off, _ in rest if q == p]
                if offs:
                    self.assertEqual(min(offs), max(committed.get(p, 0), 0),
                                     "partition %d resumed at %d, committed %d"
                                     % (p, min(offs), committed.get(p)))
            got = sorted([v for _, _, v in done] + [v for _, _, v in rest])
            self.assertEqual(got, sorted(produced), "every message once across the restart")
        finally:
            c.close()

    def test_commit_survives_restart(self):
        self.commit_restart_resume("sigterm")

    def test_commit_survives_kill9(self):
        self.commit_restart_resume("kill9")

    # ---- administration -----------------------------------------------------

    def test_list_describe_delete(self):
        topic = self.topic("admin")
        group = "g-" + topic
        produce(self.broker.bootstrap, topic, values("d", 0, 60), self.log)
        board = Board()
        ms = [self.member("m%d" % i, group, topic, board) for i in range(2)]
        info = self.info(board, self.members)
        wait_for("2 members", lambda: settled(board, {"m0", "m1"}), info=info)
        wait_for("every message consumed",
                 lambda: sum(len(m.consumed) for m in ms) >= 60, info=info)

        admin = AdminClient({"bootstrap.servers": self.broker.bootstrap, "error_cb": self.log})
        listed = [g for g in admin.list_groups(timeout=10) if g.id == group]
        # Each broker lists the groups it coordinates: the group once.
        self.assertEqual(len(listed), 1,
                         "list_groups: %s" % admin.list_groups(timeout=10))
        g = listed[0]
        self.assertEqual(g.state, "Stable")
        self.assertEqual(g.protocol_type, "consumer")
        self.assertEqual(g.protocol, "range")
        self.assertEqual(len(g.members), 2)
        self.assertTrue(all(m.assignment for m in g.members), "assignments are described")

        with B.RawClient(self.broker.port) as c:
            d = describe_groups(c, [group, "no-such-group"])
            self.assertEqual(d[group][0], 0)
            self.assertEqual(d[group][1], "Stable")
            self.assertEqual(len(d[group][4]), 2)
            self.assertEqual(d["no-such-group"][:2], (0, "Dead"))
            self.assertEqual(delete_groups(c, [group]), {group: 68}, "NON_EMPTY_GROUP")
            self.assertEqual(delete_groups(c, ["no-such-group"]), {"no-such-group": 69})
            err, offs = offset_fetch(c, group)
            self.assertEqual(err, 0)
            self.assertEqual(sorted(p for _, p in offs), list(range(PARTITIONS)), offs)
            err, perr = offset_delete(c, group, topic, [0])
            self.assertEqual((err, perr), (0, {0: 86}), "GROUP_SUBSCRIBED_TO_TOPIC")

        for m in ms:
            m.stop()
        with B.RawClient(self.broker.port) as c:
            wait_for("the group is empty",
                     lambda: describe_groups(c, [group])[group][1] == "Empty")
            err, perr = offset_delete(c, group, topic, [0, 1])
            self.assertEqual((err, perr), (0, {0: 0, 1: 0}))
            err, offs = offset_fetch(c, group, topic, [0, 1, 2])
            self.assertEqual((err, offs[(topic, 0)], offs[(topic, 1)]), (0, -1, -1))
            self.assertGreaterEqual(offs[(topic, 2)], 0)
            self.assertEqual(delete_groups(c, [group]), {group: 0})
            self.assertEqual(delete_groups(c, [group]), {group: 69})
            err, offs = offset_fetch(c, group)
            self.assertEqual((err, offs), (0, {}))
            self.assertEqual(describe_groups(c, [group])[group][1], "Dead")
        self.assertEqual([g for g in admin.list_groups(timeout=10) if g.id == group], [])

    def test_find_coordinator(self):
        with B.RawClient(self.broker.port) as c:
            ports = set(self.broker.ports())
            for v in range(0, 4):
                (key, err, node, host, port), = find_coordinator(c, v, ["some-group"])
                self.assertEqual(err, 0, "FindCoordinator v%d" % v)
                self.assertIn(port, ports)
                if not self.advertise:
                    self.assertEqual((node, port), (0, self.broker.port))
            keys = ["g%d" % i for i in range(20)]
            for v in (4, 5, 6):
                out = find_coordinator(c, v, keys)
                self.assertEqual([k for k, *_ in out], keys)
                self.assertTrue(all(e == 0 for _, e, *_ in out), out)
                nodes = {n for _, _, n, _, _ in out}
                self.assertEqual(len(nodes), 2 if self.advertise else 1, out)
                for _, _, n, _, p in out:
                    self.assertEqual(p, self.broker.port + n if self.advertise else self.broker.port)
            (key, err, *_), = find_coordinator(c, 1, ["txn"], key_type=1)
            self.assertEqual(err, 15, "COORDINATOR_NOT_AVAILABLE: no transactions")


class GroupsForwarding(Groups):
    advertise = False


class OffsetExpiry(B.BrokerTestCase):
    """offsets.retention.minutes (here rivven.offsets.retention.ms=2000, checked
    every 200 ms): an empty consumer group and a standalone committer lose their
    offsets (and the group) after the retention; a group with a member keeps
    those of the topics it subscribes to and loses the others; the deletion
    survives a restart."""

    RETENTION_S = 2.0

    @classmethod
    def setUpClass(cls):
        cls.broker = B.Broker(shards=2, name="offset-expiry",
                              extra=["--group.initial.rebalance.delay.ms=0",
                                     "--num.partitions=2",
                                     "--rivven.offsets.retention.ms=%d" % (cls.RETENTION_S * 1000),
                                     "--offsets.retention.check.interval.ms=200"])
        cls.broker.start()

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def consumer(self, group, log):
        return Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 30000, "error_cb": log})

    def consume_and_commit(self, c, want):
        got = 0
        deadline = time.monotonic() + WAIT
        while got < want and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got += 1
        self.assertEqual(got, want)
        c.commit(asynchronous=False)

    def test_empty_and_standalone_groups_expire_active_ones_stay(self):
        log = ClientLog()
        topic = "expiry"
        produce(self.broker.bootstrap, topic, values("x", 0, 20), log)
        produce(self.broker.bootstrap, "expiry-left", values("o", 0, 1), log)
        gone, alone, keeper = "g-expires", "g-standalone", "g-keeper"
        c = self.consumer(gone, log)
        c.subscribe([topic])
        self.consume_and_commit(c, 20)
        c.close()  # leaves: the group is empty from now on
        s = self.consumer(alone, log)  # commits without ever joining
        s.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)],
                 asynchronous=False)
        s.close()
        k = self.consumer(keeper, log)
        k.subscribe([topic])
        self.consume_and_commit(k, 20)  # and stays a member
        # ... with an offset of a topic it does not subscribe to (expires).
        k.commit(offsets=[TopicPartition("expiry-left", 0, 1)], asynchronous=False)
        try:
            with B.RawClient(self.broker.port) as rc:
                for g, n in ((gone, 2), (alone, 2), (keeper, 3)):
                    err, offs = offset_fetch(rc, g)
                    self.assertEqual(err, 0)
                    self.assertEqual(len(offs), n, "%s: %s" % (g, offs))
                t0 = time.monotonic()
                wait_for("the empty group's and the standalone offsets expire",
                         lambda: offset_fetch(rc, gone)[1] == {} and offset_fetch(rc, alone)[1] == {},
                         timeout=15, step=0.1,
                         info=lambda: "%s %s" % (offset_fetch(rc, gone), offset_fetch(rc, alone)))
                self.assertGreaterEqual(time.monotonic() - t0, self.RETENTION_S - 0.5,
                                        "not before the retention")
                self.assertEqual(describe_groups(rc, [gone])[gone][1], "Dead", "the group is gone")
                wait_for("the member's offset of a topic it left expires",
                         lambda: len(offset_fetch(rc, keeper)[1]) == 2, timeout=15, step=0.1,
                         info=lambda: "%s" % (offset_fetch(rc, keeper),))
                err, offs = offset_fetch(rc, keeper)
                self.assertEqual(sorted(offs), [(topic, 0), (topic, 1)],
                                 "a group with a member keeps its subscribed topics' offsets")
        finally:
            k.close()
        self.broker.restart()
        with B.RawClient(self.broker.port) as rc:
            self.assertEqual(offset_fetch(rc, gone)[1], {}, "still deleted after a restart")
            self.assertEqual(offset_fetch(rc, alone)[1], {})
            self.assertEqual(describe_groups(rc, [gone])[gone][1], "Dead")


if __name__ == "__main__":
    why = B.have_clients()
    if why:
        print("skip: " + why)
        sys.exit(77)
    unittest.main()
